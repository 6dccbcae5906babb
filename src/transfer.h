/* A handle: one libcurl easy handle and the state of its transfers (transfer.c). The same struct
 * backs a handle used alone (handle:call, curl_easy_perform, the handle reused for keep-alive)
 * and one driven by a multi handle (multi.c). handle.c is its Lua class. */
#ifndef LIMITRY_TRANSFER_H
#define LIMITRY_TRANSFER_H

#include <curl/curl.h>
#include <sys/types.h>

#include "lua.h"

#include "buffer.h"
#include "core.h"

typedef struct lm_handle {
    CURL *easy;
    pid_t pid;      /* the process that created easy: no other may use or free it */
    int closed;     /* handle:close() ran */
    int fork_lost;  /* in flight on a multi handle when the process forked; easy abandoned */
    /* Set by the multi handle driving this handle's transfer (multi.c), and its list of them:
     * detach(h) takes the transfer off it (handle:close calls it). NULL when none drives it. */
    void *owner;
    void (*detach)(struct lm_handle *h);
    struct lm_handle *prev, *next;
    struct curl_slist *headers;
    lm_buffer body;
    lm_buffer head;
    size_t max_body;
    int too_large;
    int head_too_large;
    int out_of_memory;
    long timeout_ms;
    /* The configuration applied to easy by lm_transfer_setup_config (a Lua table, anchored as the
     * handle's user value so its address names it while applied), the pool tag it was applied
     * for, its two header lists, and the method/body state of the last transfer. */
    const void *applied;
    const void *applied_tag;
    struct curl_slist *plain_headers, *json_headers;
    char *url; /* the CURLOPT_URL set last by lm_transfer_setup_config (a copy), or NULL */
    void *parsed_url; /* a CURLU holding url, handed to libcurl with CURLOPT_CURLU (transfer.c) */
    int last_mode; /* 0: unknown, else method index * 2 + has_body + 1 */
    int decode;    /* decode a 2xx JSON body in C (see lm_transfer_push_result) */
    char *secret;  /* the API key of the applied configuration (a copy), replaced in decoded strings */
    size_t secret_len;
    lua_Integer applies; /* configurations applied to easy: handle:stats() */
    char errbuf[CURL_ERROR_SIZE];
} lm_handle;

/* Creates the easy handle if needed; returns 0 or -1 (out of memory). An easy handle inherited
 * from the parent process is abandoned first (see lm_handle_abandon) and replaced. */
LM_HIDDEN int lm_handle_init(lm_handle *h);
/* Forgets an easy handle created by another process without calling libcurl on it (a cleanup
 * would write on the parent's connection), closes the inherited sockets and frees the plain
 * memory h holds. Nothing happens when h's easy handle belongs to this process. */
LM_HIDDEN void lm_handle_abandon(lm_handle *h);
/* Forgets the applied configuration and frees its header lists. */
LM_HIDDEN void lm_handle_forget_config(lm_handle *h);
/* Frees everything, including the easy handle; safe to call twice. */
LM_HIDDEN void lm_handle_free(lm_handle *h);

/* Reads the options table at index idx (raw reads: the table's metamethods are not trusted;
 * raising on a wrong or missing value before anything is allocated), then configures the easy
 * handle. tag names the connection pool (the easy handle itself or a multi) for the socket
 * registry. Raises for argument errors and options libcurl refuses. */
LM_HIDDEN void lm_transfer_setup(lua_State *L, lm_handle *h, int idx, const void *tag);
/* The fast form: the configuration table at cfg (the options of lm_transfer_setup but url,
 * method and body; never changed once used) is applied only when it is not the one applied
 * last; url, method (or nil), body (or nil) and flags are at cfg+1 .. cfg+4. flags: true (=
 * LM_DECODE) or a number of LM_ bits, or nil. The caller anchors the table (lm_anchor) so that
 * its address keeps naming it. Raises like lm_transfer_setup. */
#define LM_DECODE 1 /* decode a 2xx JSON answer in C (see lm_transfer_push_result) */
#define LM_SMALL 2  /* the answer is small: read it with a small buffer (transfer.c) */
#define LM_FRESH 4  /* send on a new connection (CURLOPT_FRESH_CONNECT): a call that must not be
                     * sent twice, which libcurl would send again on a reused connection that died
                     * before any answer byte (Curl_retry_request) */
LM_HIDDEN void lm_transfer_setup_config(lua_State *L, lm_handle *h, int cfg, const void *tag);
/* Pushes a table of the last answer's headers (kept until the next transfer starts). */
LM_HIDDEN void lm_transfer_push_headers(lua_State *L, lm_handle *h);
/* Pushes nil, "fork", message, 0, true for a transfer lost to a fork, then frees per-transfer memory. */
LM_HIDDEN int lm_transfer_push_fork_lost(lua_State *L, lm_handle *h);
/* After the transfer ended with code: pushes status, headers, body, connections_opened, or
 * nil, kind, message, curl_code, sent (false only when no byte of the request was written to a
 * connection: the server cannot have seen it), then frees the per-transfer memory. With h->decode
 * set, a 2xx body that is JSON is decoded from C memory instead: status, false, nil,
 * connections_opened, value (the headers stay readable through lm_transfer_push_headers until the
 * next transfer). Should a push raise (out of memory), that memory stays owned by h and is freed
 * by the next setup or by lm_handle_free. Returns values pushed. */
LM_HIDDEN int lm_transfer_push_result(lua_State *L, lm_handle *h, CURLcode code);
/* Values lm_transfer_push_result pushes at most. */
#define LM_RESULT_MAX 5
/* Frees per-transfer state (headers list, buffers beyond a small reserve). */
LM_HIDDEN void lm_transfer_finish(lm_handle *h);

#endif
