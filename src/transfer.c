/* One HTTP transfer on a handle's libcurl easy handle (transfer.h): the options read from Lua and
 * applied to libcurl, the callbacks that buffer the answer in C memory, and the answer (or the
 * failure, in our words) pushed back to Lua once libcurl has returned. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "json.h"
#include "process.h"
#include "transfer.h"
/* libcurl's receive buffer for answers the caller says are small: a request of at most 1032 bytes
 * stays in glibc's per-thread cache when libcurl frees it after each transfer, whereas its
 * default 16 KiB buffer, freed next to the top of the heap, lets glibc give the top back to the
 * system and fault it in again on the next transfer (measured: 0.35 page faults per async call
 * at 64 in flight, 0.01 with this size; docs/performance.md). 1024 is libcurl's minimum. */
#define SMALL_BUFFER_BYTES 1024L
#define KEEP_BUFFER_BYTES (256 * 1024)
/* CURLOPT_CURLU as set_url uses it: libcurl treats the handle as read-only from 7.65 on */
#define LM_HAVE_CURLU (LIBCURL_VERSION_NUM >= 0x074100)

/* libcurl callbacks: C memory only, never a Lua call, so nothing can longjmp across libcurl. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    lm_handle *h = (lm_handle *)ud;
    size_t bytes = size * n;
    if (bytes > h->max_body - h->body.len) {
        h->too_large = 1;
        return 0;
    }
    if (lm_buffer_append(&h->body, p, bytes) != 0) {
        h->out_of_memory = 1;
        return 0;
    }
    return bytes;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    lm_handle *h = (lm_handle *)ud;
    size_t bytes = size * n;
    if (bytes >= 5 && memcmp(p, "HTTP/", 5) == 0)
        h->head.len = 0; /* a new response (after 1xx or a proxy CONNECT) replaces the old headers */
    if (bytes > LM_MAX_HEADER_BYTES - h->head.len) {
        h->head_too_large = 1;
        return 0;
    }
    if (lm_buffer_append(&h->head, p, bytes) != 0) {
        h->out_of_memory = 1;
        return 0;
    }
    return bytes;
}

int lm_handle_init(lm_handle *h)
{
    lm_handle_abandon(h);
    if (h->easy == NULL) {
        h->easy = curl_easy_init();
        h->pid = lm_pid();
    }
    return h->easy ? 0 : -1;
}

static void free_parsed_url(lm_handle *h)
{
#if LM_HAVE_CURLU
    curl_url_cleanup((CURLU *)h->parsed_url); /* plain memory: no socket, no libcurl state */
#endif
    h->parsed_url = NULL;
}

void lm_handle_abandon(lm_handle *h)
{
    if (h->easy == NULL || h->pid == lm_pid())
        return;
    h->easy = NULL; /* leaked on purpose: its memory is a copy of the parent's, its sockets theirs */
    lm_sockets_drop_inherited();
    lm_transfer_finish(h);
    lm_handle_forget_config(h);
}

typedef struct {
    const char *url;
    const char *method; /* GET (default), POST, PUT or DELETE */
    const char *body;   /* JSON text, or NULL */
    size_t body_len;
    const char *ca_file;
    const char *ca_path;
    const char *proxy;
    const char *no_proxy;
    const char *secret; /* the API key, redacted from decoded answers */
    size_t secret_len;
    long timeout_ms;
    long connect_timeout_ms;
    lua_Number max_body;
    int verify;
    int headers; /* stack index of the headers list, or 0 */
} options;

/* Pushes t[name] without metamethods and leaves it on the stack, so a string read from it stays
 * alive (anchored) until lm_transfer_setup returns, whatever the table does meanwhile. */
static int raw_field(lua_State *L, int idx, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, idx);
    return lua_gettop(L);
}

static const char *opt_string(lua_State *L, int idx, const char *name, int required)
{
    size_t len;
    const char *s;
    int at = raw_field(L, idx, name);
    if (lua_isnil(L, at) && !required)
        return NULL;
    if (lua_type(L, at) != LUA_TSTRING)
        luaL_error(L, "request option '%s' must be a string", name);
    s = lua_tolstring(L, at, &len);
    if (strlen(s) != len)
        luaL_error(L, "request option '%s' must not contain NUL bytes", name);
    return s;
}

/* A required whole or fractional number within [lo, hi]; NaN and infinities are refused before
 * any conversion to an integer type can overflow. C has no defaults: the facade owns them. */
static lua_Number opt_number(lua_State *L, int idx, const char *name, lua_Number lo, lua_Number hi)
{
    lua_Number v;
    int at = raw_field(L, idx, name);
    if (lua_type(L, at) != LUA_TNUMBER)
        luaL_error(L, "request option '%s' must be a number", name);
    v = lua_tonumber(L, at);
    if (!(v >= lo && v <= hi))
        luaL_error(L, "request option '%s' must be a number from %f to %f", name, (double)lo, (double)hi);
    lua_pop(L, 1);
    return v;
}

/* Milliseconds: any positive value is at least 1, since 0 means "no timeout" to libcurl. */
static long opt_ms(lua_State *L, int idx, const char *name)
{
    lua_Number v = opt_number(L, idx, name, 0, LM_MAX_TIMEOUT_MS);
    long ms = (long)v;
    if ((lua_Number)ms < v)
        ms++;
    if (ms < 1)
        luaL_error(L, "request option '%s' must be a positive number of milliseconds", name);
    return ms;
}

static const char *const METHODS[] = {"GET", "POST", "PUT", "DELETE", NULL};

/* Index of the method (m, len bytes) in METHODS, compared with the length first (every call names
 * one); raises on anything else. */
static int check_method(lua_State *L, const char *m, size_t len)
{
    int i;
    for (i = 0; METHODS[i] != NULL; i++)
        if (len == strlen(METHODS[i]) && memcmp(m, METHODS[i], len) == 0)
            return i;
    return luaL_error(L, "request option 'method' must be GET, POST, PUT or DELETE");
}

/* Checks that t[name] (raw reads) is nil or an array of header lines; returns its stack index or 0. */
static int read_header_list(lua_State *L, int idx, const char *name)
{
    int i, n, at = raw_field(L, idx, name);
    if (lua_isnil(L, at))
        return 0;
    luaL_checktype(L, at, LUA_TTABLE);
    n = (int)lua_rawlen(L, at);
    for (i = 1; i <= n; i++) {
        size_t len;
        const char *h;
        lua_rawgeti(L, at, i);
        h = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (h == NULL || strlen(h) != len || strpbrk(h, "\r\n") != NULL)
            luaL_error(L, "request header %d must be a string without CR, LF or NUL", i);
        lua_pop(L, 1);
    }
    return at;
}

/* The options that stay the same from call to call (all but url, method and body). */
static void read_static(lua_State *L, int idx, options *o)
{
    o->ca_file = opt_string(L, idx, "ca_file", 0);
    o->ca_path = opt_string(L, idx, "ca_path", 0);
    o->proxy = opt_string(L, idx, "proxy", 0);
    o->no_proxy = opt_string(L, idx, "no_proxy", 0);
    o->secret = opt_string(L, idx, "secret", 0);
    o->secret_len = o->secret ? strlen(o->secret) : 0;
    o->timeout_ms = opt_ms(L, idx, "timeout_ms");
    o->connect_timeout_ms = opt_ms(L, idx, "connect_timeout_ms");
    o->max_body = opt_number(L, idx, "max_body", 1, LM_MAX_BODY);
    if (o->max_body != (lua_Number)(long long)o->max_body)
        luaL_error(L, "request option 'max_body' must be a whole number of bytes");
    raw_field(L, idx, "verify");
    if (lua_type(L, -1) != LUA_TBOOLEAN)
        luaL_error(L, "request option 'verify' must be a boolean");
    o->verify = lua_toboolean(L, -1);
    lua_pop(L, 1);
    o->headers = read_header_list(L, idx, "headers");
}

/* Reads the method (NULL: GET) and the body at the stack indexes given (0: none), checked. */
static int read_method_body(lua_State *L, options *o, int method_at, int body_at)
{
    int m = 0;
    o->method = "GET";
    if (method_at && !lua_isnil(L, method_at)) {
        if (lua_type(L, method_at) != LUA_TSTRING)
            luaL_error(L, "request option 'method' must be a string");
        size_t len;
        o->method = lua_tolstring(L, method_at, &len);
        m = check_method(L, o->method, len);
    }
    o->body = NULL;
    o->body_len = 0;
    if (body_at && !lua_isnil(L, body_at)) {
        if (lua_type(L, body_at) != LUA_TSTRING)
            luaL_error(L, "request option 'body' must be a string");
        o->body = lua_tolstring(L, body_at, &o->body_len);
    }
    return m;
}

static void read_options(lua_State *L, int idx, options *o)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    luaL_checkstack(L, 16, "limitry request options");
    o->url = opt_string(L, idx, "url", 1);
    raw_field(L, idx, "method");
    raw_field(L, idx, "body");
    read_method_body(L, o, lua_gettop(L) - 1, lua_gettop(L));
    read_static(L, idx, o);
}

#define SETOPT(opt, val)                                \
    do {                                                \
        CURLcode rc_ = curl_easy_setopt(easy, opt, val);   \
        if (rc_ != CURLE_OK) {                          \
            *refused = #opt;                            \
            return rc_;                                 \
        }                                               \
    } while (0)

/* Builds a header list from the array at stack index at (0: none) onto *list. */
static int append_lines(lua_State *L, int at, struct curl_slist **list)
{
    int i, n = at ? (int)lua_rawlen(L, at) : 0;
    for (i = 1; i <= n; i++) {
        struct curl_slist *grown;
        const char *line;
        lua_rawgeti(L, at, i);
        line = lua_tostring(L, -1);
        grown = line ? curl_slist_append(*list, line) : NULL;
        lua_pop(L, 1);
        if (grown == NULL)
            return line ? -1 : i;
        *list = grown;
    }
    return 0;
}

/* Sets what the options o ask for apart from url, method, body and the header list. */
static CURLcode apply_static(lm_handle *h, const options *o, const void *tag, const char **refused)
{
    CURL *easy = h->easy;
    CURLcode code;
    h->max_body = (size_t)o->max_body;
    h->timeout_ms = o->timeout_ms;
    free(h->secret);
    h->secret = NULL;
    h->secret_len = 0;
    if (o->secret_len > 0) {
        h->secret = (char *)malloc(o->secret_len);
        if (h->secret == NULL) {
            *refused = "secret";
            return CURLE_OUT_OF_MEMORY;
        }
        memcpy(h->secret, o->secret, o->secret_len);
        h->secret_len = o->secret_len;
    }
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SETOPT(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_body);
    SETOPT(CURLOPT_SSL_VERIFYPEER, o->verify ? 1L : 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, o->verify ? 2L : 0L);
    if (o->ca_file)
        SETOPT(CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path)
        SETOPT(CURLOPT_CAPATH, o->ca_path);
    if (o->proxy)
        SETOPT(CURLOPT_PROXY, o->proxy); /* "" turns off proxies from the environment */
    if (o->no_proxy)
        SETOPT(CURLOPT_NOPROXY, o->no_proxy);
    code = lm_sockets_track(easy, tag);
    if (code != CURLE_OK) {
        *refused = "CURLOPT_OPENSOCKETFUNCTION";
        return code;
    }
    SETOPT(CURLOPT_ERRORBUFFER, h->errbuf);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, h);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, h);
    SETOPT(CURLOPT_PRIVATE, h);
    return CURLE_OK;
}

/* Sets the method, body, receive buffer and connection choice of one transfer; mode is
 * ((method index * 2 + has_body) * 2 + small) * 2 + fresh + 1, or -1 (neither flag). Unchanged
 * settings from the last transfer of the same mode are left as they are. */
static CURLcode apply_method_body(lm_handle *h, const options *o, int mode, struct curl_slist *list,
                                  const char **refused)
{
    CURL *easy = h->easy;
    if (o->body) {
        /* Copied by libcurl: an async transfer outlives this call and the Lua string. */
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        SETOPT(CURLOPT_COPYPOSTFIELDS, o->body);
    }
    if (mode == h->last_mode)
        return CURLE_OK;
    h->last_mode = 0; /* until every setting below is in place */
    if (!o->body)
        SETOPT(CURLOPT_HTTPGET, 1L);
    SETOPT(CURLOPT_CUSTOMREQUEST, strcmp(o->method, o->body ? "POST" : "GET") != 0 ? o->method : (const char *)NULL);
    SETOPT(CURLOPT_HTTPHEADER, list);
    SETOPT(CURLOPT_BUFFERSIZE, mode > 0 && ((mode - 1) & 2) ? SMALL_BUFFER_BYTES : (long)CURL_MAX_WRITE_SIZE);
    /* A new connection, so that libcurl never sends this request twice (see LM_FRESH); the
     * connection then joins the pool like any other. */
    SETOPT(CURLOPT_FRESH_CONNECT, mode > 0 && ((mode - 1) & 1) ? 1L : 0L);
    h->last_mode = mode;
    return CURLE_OK;
}

#undef SETOPT

static void fail_setup(lua_State *L, lm_handle *h, const char *refused, CURLcode code)
{
    lm_transfer_finish(h);
    lm_handle_forget_config(h);
    luaL_error(L, "libcurl refused the request option %s (%s)", refused, curl_easy_strerror(code));
}

void lm_handle_forget_config(lm_handle *h)
{
    h->applied = NULL;
    h->applied_tag = NULL;
    h->last_mode = 0;
    if (h->easy && h->pid == lm_pid()) /* the lists go: libcurl must not keep a pointer to them */
        curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(h->plain_headers);
    curl_slist_free_all(h->json_headers);
    h->plain_headers = h->json_headers = NULL;
    free(h->url);
    h->url = NULL;
    free(h->secret);
    h->secret = NULL;
    h->secret_len = 0;
}

void lm_transfer_setup(lua_State *L, lm_handle *h, int idx, const void *tag)
{
    options o;
    int rc, base = lua_gettop(L);
    const char *refused = NULL;
    CURLcode code;

    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    read_options(L, idx, &o); /* leaves the values on the stack until the end */

    lm_transfer_finish(h);
    lm_handle_forget_config(h);
    curl_easy_reset(h->easy); /* keeps live connections and TLS sessions */
    h->errbuf[0] = '\0';
    h->decode = 0;

    rc = append_lines(L, o.headers, &h->headers);
    if (rc != 0) {
        lm_transfer_finish(h);
        luaL_error(L, rc < 0 ? "out of memory" : "request header %d is not a string", rc);
    }
    h->applies++;
    code = curl_easy_setopt(h->easy, CURLOPT_URL, o.url);
    if (code != CURLE_OK)
        fail_setup(L, h, "CURLOPT_URL", code);
    code = apply_method_body(h, &o, -1, h->headers, &refused);
    if (code == CURLE_OK)
        code = apply_static(h, &o, tag, &refused);
    h->last_mode = 0; /* the per-request list goes with the transfer */
    if (code != CURLE_OK)
        fail_setup(L, h, refused, code);
    lua_settop(L, base);
}

/* Sets the URL of the next transfers. Given a plain CURLOPT_URL, libcurl parses the URL again
 * and prints it back into a normalized copy at the start of every transfer, a byte at a time
 * (about 18,000 instructions a call on a 100-byte URL, 17% of a keep-alive call;
 * docs/performance.md); given a URL handle (CURLOPT_CURLU, which overrides CURLOPT_URL) parsed here once,
 * it copies the parts (also when it sends a request again on a new connection). CURLOPT_URL is
 * set too, to the same text: libcurl keeps that text as the transfer's URL
 * (CURLINFO_EFFECTIVE_URL, its own messages), which must not name an earlier one. Only an
 * absolute http(s) URL goes this way, parsed into a new handle (a handle that holds a URL would
 * resolve a relative one against it), and only from libcurl 7.65: 7.63 and 7.64.0 crash with it
 * behind a proxy, and before 7.65 libcurl wrote into the application's handle. Anything else is
 * parsed by libcurl as it always was. */
static CURLcode set_url(lm_handle *h, const char *url)
{
    CURLcode code = curl_easy_setopt(h->easy, CURLOPT_URL, url);
#if LM_HAVE_CURLU
    CURLU *parsed = NULL;
    if (code != CURLE_OK)
        return code;
    if (curl_strnequal(url, "http://", 7) || curl_strnequal(url, "https://", 8)) {
        parsed = curl_url();
        /* the flags libcurl itself parses CURLOPT_URL with */
        if (parsed != NULL && curl_url_set(parsed, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
            curl_url_cleanup(parsed);
            parsed = NULL;
        }
    }
    code = curl_easy_setopt(h->easy, CURLOPT_CURLU, parsed);
    if (code != CURLE_OK) {
        curl_url_cleanup(parsed);
        return code;
    }
    curl_url_cleanup((CURLU *)h->parsed_url); /* libcurl points to parsed now */
    h->parsed_url = parsed;
#endif
    return code;
}

void lm_transfer_setup_config(lua_State *L, lm_handle *h, int cfg, const void *tag)
{
    options o;
    int mode, flags, base = lua_gettop(L);
    const char *refused = NULL;
    CURLcode code;

    luaL_checktype(L, cfg, LUA_TTABLE);
    o.url = luaL_checkstring(L, cfg + 1);
    if (strlen(o.url) != lua_rawlen(L, cfg + 1))
        luaL_error(L, "request option 'url' must not contain NUL bytes");
    mode = read_method_body(L, &o, cfg + 2, cfg + 3) * 2 + (o.body != NULL);
    flags = lua_type(L, cfg + 4) == LUA_TNUMBER ? (int)lua_tointeger(L, cfg + 4) : (lua_toboolean(L, cfg + 4) ? LM_DECODE : 0);
    mode = (mode * 2 + ((flags & LM_SMALL) != 0)) * 2 + ((flags & LM_FRESH) != 0) + 1; /* 0 is "unknown" */

    lm_transfer_finish(h);
    h->errbuf[0] = '\0';
    if (h->applied != lua_topointer(L, cfg) || h->applied_tag != tag) {
        int rc;
        luaL_checkstack(L, 16, "limitry request options");
        read_static(L, cfg, &o);
        lm_handle_forget_config(h);
        curl_easy_reset(h->easy); /* keeps live connections and TLS sessions */
        rc = append_lines(L, o.headers, &h->plain_headers);
        if (rc == 0)
            rc = append_lines(L, read_header_list(L, cfg, "json_headers"), &h->json_headers);
        if (rc != 0) {
            lm_handle_forget_config(h);
            luaL_error(L, rc < 0 ? "out of memory" : "request header %d is not a string", rc);
        }
        code = apply_static(h, &o, tag, &refused);
        if (code != CURLE_OK)
            fail_setup(L, h, refused, code);
        h->applied = lua_topointer(L, cfg);
        h->applied_tag = tag;
        h->applies++;
    }
    if (h->url == NULL || strcmp(h->url, o.url) != 0) { /* a loop on one query sets it once */
        size_t len = strlen(o.url);
        free(h->url);
        h->url = NULL;
        code = set_url(h, o.url);
        if (code != CURLE_OK)
            fail_setup(L, h, "CURLOPT_URL", code);
        h->url = (char *)malloc(len + 1);
        if (h->url != NULL)
            memcpy(h->url, o.url, len + 1);
    }
    code = apply_method_body(h, &o, mode, o.body && h->json_headers ? h->json_headers : h->plain_headers, &refused);
    if (code != CURLE_OK)
        fail_setup(L, h, refused, code);
    h->decode = (flags & LM_DECODE) != 0;
    lua_settop(L, base);
}

/* Pushes a table of the last response's headers, names lower-cased, repeats joined by ", ". */
static void push_headers(lua_State *L, const lm_buffer *head)
{
    const char *p = head->data, *end = head->data + head->len;
    lua_newtable(L);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && colon > p && colon - p < 128) {
            char name[128];
            size_t i, nlen = (size_t)(colon - p);
            const char *v = colon + 1, *vend = line_end;
            for (i = 0; i < nlen; i++)
                name[i] = (char)tolower((unsigned char)p[i]);
            while (v < vend && (*v == ' ' || *v == '\t'))
                v++;
            while (vend > v && (vend[-1] == '\r' || vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            lua_pushlstring(L, name, nlen);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(vend - v));
            } else {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(vend - v));
                lua_concat(L, 3);
            }
            lua_rawset(L, -3);
        }
        p = eol ? eol + 1 : end;
    }
}

/* libcurl codes that need no more than a fixed kind and text. Anything else is "transfer
 * failed (libcurl error N)", a network error. */
static const struct {
    CURLcode code;
    const char *kind;
    const char *text;
} FAILURES[] = {
    {CURLE_COULDNT_RESOLVE_HOST, "network", "could not resolve the host name"},
    {CURLE_COULDNT_RESOLVE_PROXY, "network", "could not resolve the proxy host name"},
    {CURLE_PEER_FAILED_VERIFICATION, "tls", "TLS certificate verification failed (set ca_file or ca_path to trust its issuer)"},
    {CURLE_SSL_CACERT_BADFILE, "tls", "cannot read the CA certificates named by ca_file or ca_path"},
    {CURLE_SSL_CONNECT_ERROR, "tls", "TLS handshake failed"},
    {CURLE_SSL_CERTPROBLEM, "tls", "TLS handshake failed"},
    {CURLE_SSL_CIPHER, "tls", "TLS handshake failed"},
    {CURLE_GOT_NOTHING, "network", "server closed the connection without a response"},
    {CURLE_PARTIAL_FILE, "network", "connection broken before the response was complete"},
    {CURLE_RECV_ERROR, "network", "connection broken before the response was complete"},
    {CURLE_SEND_ERROR, "network", "connection broken before the response was complete"},
    {CURLE_BAD_CONTENT_ENCODING, "decode", "response body could not be decompressed"},
    {CURLE_WEIRD_SERVER_REPLY, "protocol", "the server's reply is not valid HTTP"},
    {CURLE_URL_MALFORMAT, "usage", "the URL is not a valid http:// or https:// URL"},
    {CURLE_OUT_OF_MEMORY, "memory", "out of memory"},
};

#define NOT_HTTP "the server's reply is not valid HTTP"

/* Whether libcurl's own message for the failed transfer starts with text (its wording of 7.88;
 * another wording falls back to the generic text of the code). */
static int said(const lm_handle *h, const char *text)
{
    return strncmp(h->errbuf, text, strlen(text)) == 0;
}

/* Whether the message ends with text. */
static int said_last(const lm_handle *h, const char *text)
{
    size_t n = strlen(h->errbuf), m = strlen(text);
    return n >= m && strcmp(h->errbuf + n - m, text) == 0;
}

/* Whether a connection to the server (or proxy) was made: then a refusal is about the reply. */
static int reached_server(lm_handle *h)
{
    char *ip = NULL;
    return curl_easy_getinfo(h->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL && ip[0] != '\0';
}

/* Whether any byte of the request was written to a connection during the transfer: libcurl
 * counts them (CURLINFO_REQUEST_SIZE) from the start of the transfer, across the new connection it
 * opens by itself when a reused one died before any answer byte (Curl_retry_request). */
static int request_sent(lm_handle *h)
{
    long bytes = 0;
    return curl_easy_getinfo(h->easy, CURLINFO_REQUEST_SIZE, &bytes) != CURLE_OK || bytes > 0;
}

/* A failed transfer in our words: its kind ("network", "timeout", "tls", ...) and its text, which
 * may point into the caller's buffer. */
typedef struct {
    const char *kind;
    const char *text;
    char buf[160];
} failure;

static int said_as(failure *f, const char *kind, const char *text)
{
    f->kind = kind;
    f->text = text;
    return 1;
}

/* Failures read from the transfer's own state or libcurl's message rather than the code alone:
 * too large, not HTTP, out of memory. Returns 1 when f is filled. */
static int read_failure(lm_handle *h, CURLcode code, failure *f)
{
    if (h->head_too_large || (code == CURLE_OUT_OF_MEMORY && !h->out_of_memory && reached_server(h))
        || (code == CURLE_RECV_ERROR && said(h, "Out of memory in chunked-encoding"))) {
        /* libcurl itself refuses a header line over its own limit (100 KiB), the status line
         * included, as "out of memory", and a trailer over 64 KiB as a chunked-encoding error. */
        snprintf(f->buf, sizeof f->buf, "response headers larger than the limit of %d bytes", LM_MAX_HEADER_BYTES);
        return said_as(f, "too_large", f->buf);
    }
    if (code == CURLE_RECV_ERROR && said(h, "Too large response headers")) {
        /* libcurl's cap on the headers of all answers to one request (LM_MAX_ALL_HEADER_BYTES). */
        snprintf(f->buf, sizeof f->buf, "response headers larger than the limit of %d bytes (interim answers included)",
                 LM_MAX_ALL_HEADER_BYTES);
        return said_as(f, "too_large", f->buf);
    }
    if ((code == CURLE_RECV_ERROR && said_last(h, "in chunked-encoding"))
        || (code == CURLE_BAD_FUNCTION_ARGUMENT && reached_server(h)))
        /* Chunk framing libcurl cannot read (a size that is not hex, or more than 16 digits), or
         * a trailer that is not a header line. */
        return said_as(f, "protocol", NOT_HTTP);
    if (h->too_large || code == CURLE_FILESIZE_EXCEEDED) {
        snprintf(f->buf, sizeof f->buf, "response larger than the limit of %lu bytes", (unsigned long)h->max_body);
        return said_as(f, "too_large", f->buf);
    }
    if (h->out_of_memory)
        return said_as(f, "memory", "out of memory while receiving the response");
    return 0;
}

/* Failures to reach the server, whose words depend on whether the request had been sent: it was
 * when it went out on a reused connection that died before any answer, and the new connection
 * libcurl opened to send it again failed (the server may have it). Returns 1 when f is filled. */
static int connect_failure(lm_handle *h, CURLcode code, int sent, failure *f)
{
    curl_off_t connect_us = 0;
    long os_errno = 0;
    if (code == CURLE_OPERATION_TIMEDOUT) {
        curl_easy_getinfo(h->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        if (connect_us == 0)
            return said_as(f, "timeout", sent ? "connection lost after the request was sent; reconnecting timed out"
                                              : "timed out while connecting");
        snprintf(f->buf, sizeof f->buf, "no complete response within %ld ms", h->timeout_ms);
        return said_as(f, "timeout", f->buf);
    }
    if (code == CURLE_COULDNT_CONNECT) {
        const char *what = sent ? "connection lost after the request was sent; reconnecting failed" : "could not connect";
        curl_easy_getinfo(h->easy, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno == 0)
            return said_as(f, "network", what);
        snprintf(f->buf, sizeof f->buf, "%s: %s", what, strerror((int)os_errno));
        return said_as(f, "network", f->buf);
    }
    if (code == CURLE_UNSUPPORTED_PROTOCOL) {
        /* The URL was checked before; after connecting, this is HTTP/0.9, garbage or a status
         * line libcurl cannot read. */
        if (reached_server(h))
            return said_as(f, "protocol", NOT_HTTP);
        return said_as(f, "usage", "the URL is not a valid http:// or https:// URL");
    }
    return 0;
}

/* Pushes nil, kind, message, curl_code, sent for a failed transfer, in our words, never libcurl's. */
static void push_failure(lua_State *L, lm_handle *h, CURLcode code)
{
    failure f;
    int sent = request_sent(h);
    size_t i;
    f.kind = "network";
    f.text = NULL;
    if (!read_failure(h, code, &f) && !connect_failure(h, code, sent, &f)) {
        for (i = 0; i < sizeof FAILURES / sizeof FAILURES[0] && f.text == NULL; i++)
            if (FAILURES[i].code == code)
                said_as(&f, FAILURES[i].kind, FAILURES[i].text);
        if (f.text == NULL) {
            snprintf(f.buf, sizeof f.buf, "transfer failed (libcurl error %d)", (int)code);
            f.text = f.buf;
        }
    }
    lua_pushnil(L);
    lua_pushstring(L, f.kind);
    lua_pushstring(L, f.text);
    lua_pushinteger(L, code);
    lua_pushboolean(L, sent);
}

int lm_transfer_push_fork_lost(lua_State *L, lm_handle *h)
{
    lm_transfer_finish(h);
    lua_pushnil(L);
    lua_pushliteral(L, "fork");
    lua_pushliteral(L, "the request was started before fork and cannot complete in the child process");
    lua_pushinteger(L, 0);
    lua_pushboolean(L, 1); /* the parent may have sent it, and completes it */
    return 5;
}

int lm_transfer_push_result(lua_State *L, lm_handle *h, CURLcode code)
{
    long status = 0, connects = 0;
    if (code != CURLE_OK || h->too_large || h->head_too_large || h->out_of_memory) {
        push_failure(L, h, code);
        lm_transfer_finish(h);
        return 5;
    }
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &connects);
    lua_pushinteger(L, status);
    if (h->decode && status >= 200 && status < 300) {
        char msg[128];
        lua_pushboolean(L, 0);
        lua_pushnil(L);
        lua_pushinteger(L, connects);
        if (lm_json_decode(L, h->body.data ? h->body.data : "", h->body.len, msg, sizeof msg, h->secret, h->secret_len)) {
            /* The headers stay in h->head for lm_transfer_push_headers until the next transfer. */
            lm_buffer_reset(&h->body, KEEP_BUFFER_BYTES);
            return 5;
        }
        lua_pop(L, 3); /* not JSON: the caller gets the body to say so */
    }
    push_headers(L, &h->head);
    lua_pushlstring(L, h->body.data ? h->body.data : "", h->body.len);
    lua_pushinteger(L, connects);
    lm_transfer_finish(h);
    return 4;
}

void lm_transfer_push_headers(lua_State *L, lm_handle *h)
{
    push_headers(L, &h->head);
}

void lm_transfer_finish(lm_handle *h)
{
    if (h->headers) {
        curl_slist_free_all(h->headers);
        h->headers = NULL;
        if (h->easy && h->pid == lm_pid()) /* the list is gone: libcurl must not keep a pointer to it */
            curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    }
    lm_buffer_reset(&h->body, KEEP_BUFFER_BYTES);
    lm_buffer_reset(&h->head, KEEP_BUFFER_BYTES);
    h->too_large = 0;
    h->head_too_large = 0;
    h->out_of_memory = 0;
}

void lm_handle_free(lm_handle *h)
{
    lm_handle_abandon(h);
    lm_transfer_finish(h);
    lm_handle_forget_config(h);
    lm_buffer_free(&h->body);
    lm_buffer_free(&h->head);
    if (h->easy) {
        curl_easy_cleanup(h->easy);
        lm_sockets_forget(h);
        h->easy = NULL;
    }
    free_parsed_url(h); /* after the easy handle that pointed to it */
}
