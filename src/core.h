/* What every file of limitry.core shares: which symbols leave the library, and the limits.
 * Each limit is defined here once; core.c exports them to Lua as core.limits, where the facade
 * (option bounds) and the cosocket transport (the same caps on what it reads) take them. */
#ifndef LIMITRY_CORE_H
#define LIMITRY_CORE_H

/* Only luaopen_limitry_core is exported; every other function of the core is internal. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define LM_HIDDEN __attribute__((visibility("hidden")))
#define LM_EXPORT __attribute__((visibility("default")))
#else
#define LM_HIDDEN
#define LM_EXPORT
#endif

/* One answer's status line and headers, and a chunked body's trailers (libcurl's own cap on one
 * header line is 100 KiB, so this one is met first). */
#define LM_MAX_HEADER_BYTES (64 * 1024)
/* The heads of all answers to one request, interim 1xx answers included: libcurl's
 * MAX_HTTP_RESP_HEADER_SIZE (libcurl 8.3+, and Debian's 7.88.1). */
#define LM_MAX_ALL_HEADER_BYTES (300 * 1024)
/* Hex digits of a chunk size (libcurl's CHUNK_MAXNUM_LEN for a 64-bit curl_off_t). */
#define LM_MAX_CHUNK_HEX 16
/* The longest timeout C accepts, in ms (1e6 s, 11.6 days); retry delays and sleeps stop there too. */
#define LM_MAX_TIMEOUT_MS 1e9
/* The largest body size C accepts: 2^53, the largest byte count every Lua holds exactly. */
#define LM_MAX_BODY 9007199254740992.0
/* Nesting the decoder reads and the encoder writes. */
#define LM_MAX_DECODE_DEPTH 200
#define LM_MAX_ENCODE_DEPTH 100

#endif
