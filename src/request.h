/* One HTTP exchange over a libcurl easy handle. The same struct backs the blocking client
 * handle (curl_easy_perform, handle reused for keep-alive) and requests driven by a multi handle. */
#ifndef LIMITRY_REQUEST_H
#define LIMITRY_REQUEST_H

#include <curl/curl.h>

#include "buffer.h"
#include <sys/types.h>

#include "lua.h"

struct lm_multi;

/* Bounds on what C accepts, whoever calls it: 1e9 ms (11.6 days) and 2^53 bytes. */
#define LM_MAX_TIMEOUT_MS 1e9
#define LM_MAX_BODY 9007199254740992.0
/* libcurl's cap on the headers of all answers to one request, interim 1xx answers included
 * (MAX_HTTP_RESP_HEADER_SIZE: libcurl 8.3+, and Debian's 7.88.1); the cosocket transport keeps the
 * same one (lua/limitry/cosocket.lua). */
#define LM_MAX_ALL_HEADER_BYTES (300 * 1024)

typedef struct lm_request {
    CURL *easy;
    pid_t pid;      /* the process that created easy: no other may use or free it */
    int closed;     /* handle:close() ran */
    int fork_lost;  /* in flight on a multi handle when the process forked; easy abandoned */
    struct lm_multi *owner; /* the multi handle driving this request, if any */
    struct lm_request *prev, *next; /* the owner's list of attached requests */
    struct curl_slist *headers;
    lm_buffer body;
    lm_buffer head;
    size_t max_body;
    int too_large;
    int head_too_large;
    int out_of_memory;
    long timeout_ms;
    /* The configuration applied to easy by lm_request_setup_config (a Lua table, anchored as the
     * handle's user value so its address names it while applied), the pool tag it was applied
     * for, its two header lists, and the method/body state of the last transfer. */
    const void *applied;
    const void *applied_tag;
    struct curl_slist *plain_headers, *json_headers;
    char *url; /* the CURLOPT_URL set last by lm_request_setup_config (a copy), or NULL */
    void *parsed_url; /* a CURLU holding url, handed to libcurl with CURLOPT_CURLU (request.c) */
    int last_mode; /* 0: unknown, else method index * 2 + has_body + 1 */
    int decode;    /* decode a 2xx JSON body in C (see lm_request_push_result) */
    char *secret;  /* the API key of the applied configuration (a copy), replaced in decoded strings */
    size_t secret_len;
    lua_Integer applies; /* configurations applied to easy: handle:stats() */
    char errbuf[CURL_ERROR_SIZE];
} lm_request;


/* Creates the easy handle if needed; returns 0 or -1 (out of memory). An easy handle inherited
 * from the parent process is abandoned first (see lm_request_abandon) and replaced. */
int lm_request_init(lm_request *r);
/* Forgets an easy handle created by another process without calling libcurl on it (a cleanup
 * would write on the parent's connection), closes the inherited sockets and frees the plain
 * memory r holds. Nothing happens when r's easy handle belongs to this process. */
void lm_request_abandon(lm_request *r);
/* Reads the options table at index idx (raw reads: the table's metamethods are not trusted;
 * raising on a wrong value before anything is allocated), then configures the easy handle.
 * tag names the connection pool (the easy handle itself or a multi) for the socket registry.
 * Raises for argument errors and options libcurl refuses. */
void lm_request_setup(lua_State *L, lm_request *r, int idx, const void *tag);
/* The fast form: the configuration table at cfg (the options of lm_request_setup but url,
 * method and body; never changed once used) is applied only when it is not the one applied
 * last; url, method (or nil), body (or nil) and flags are at cfg+1 .. cfg+4. flags: true (=
 * LM_DECODE) or a number of LM_ bits, or nil. The caller anchors the table (see core.c) so that
 * its address keeps naming it. Raises like lm_request_setup. */
#define LM_DECODE 1 /* decode a 2xx JSON answer in C (see lm_request_push_result) */
#define LM_SMALL 2  /* the answer is small: read it with a small buffer (request.c) */
#define LM_FRESH 4  /* send on a new connection (CURLOPT_FRESH_CONNECT): a call that must not be
                     * sent twice, which libcurl would send again on a reused connection that died
                     * before any answer byte (Curl_retry_request) */
void lm_request_setup_config(lua_State *L, lm_request *r, int cfg, const void *tag);
/* Anchors the table at cfg as the user value of the handle userdata at ud (core.c). */
void lm_anchor_config(lua_State *L, int ud, int cfg);
/* Forgets the applied configuration and frees its header lists. */
void lm_request_forget_config(lm_request *r);
/* Pushes a table of the last response's headers (kept until the next transfer starts). */
void lm_request_push_headers(lua_State *L, lm_request *r);
/* Pushes nil, "fork", message, 0, true for a transfer lost to a fork, then frees per-transfer memory. */
int lm_request_push_fork_lost(lua_State *L, lm_request *r);
/* After the transfer ended with code: pushes status, headers, body, connections_opened, or
 * nil, kind, message, curl_code, sent (false only when no byte of the request was written to a
 * connection: the server cannot have seen it), then frees the per-transfer memory. With r->decode set, a 2xx
 * body that is JSON is decoded from C memory instead: status, false, nil, connections_opened,
 * value (the headers stay readable through lm_request_push_headers until the next transfer). Should a push raise (out of
 * memory), that memory stays owned by r and is freed by the next setup or by lm_request_free.
 * Returns values pushed. */
int lm_request_push_result(lua_State *L, lm_request *r, CURLcode code);
/* Values lm_request_push_result pushes at most. */
#define LM_RESULT_MAX 5
/* Frees per-transfer state (headers list, buffers beyond a small reserve). */
void lm_request_finish(lm_request *r);
/* Frees everything, including the easy handle; safe to call twice. */
void lm_request_free(lm_request *r);

#endif
