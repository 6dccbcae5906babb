/* One HTTP exchange over a libcurl easy handle. The same struct backs the blocking client
 * handle (curl_easy_perform, handle reused for keep-alive) and requests driven by a multi handle. */
#ifndef LIMITRY_REQUEST_H
#define LIMITRY_REQUEST_H

#include <curl/curl.h>

#include "buffer.h"
#include <stdint.h>

#include "lua.h"

struct lm_multi;

typedef struct lm_request {
    CURL *easy;
    struct lm_multi *owner; /* the multi handle driving this request, if any */
    struct lm_request *prev, *next; /* the owner's list of attached requests */
    struct curl_slist *headers;
    lm_buffer body;
    lm_buffer head;
    size_t max_body;
    int too_large;
    int out_of_memory;
    long timeout_ms;
    char errbuf[CURL_ERROR_SIZE];
} lm_request;


/* Creates the easy handle if needed; returns 0 or -1 (out of memory). */
int lm_request_init(lm_request *r);
/* Reads the options table at index idx (raising on a wrong type before anything is allocated),
 * then configures the easy handle. Raises only for argument errors. */
void lm_request_setup(lua_State *L, lm_request *r, int idx);
/* After the transfer ended with code: pushes status, headers, body, connections_opened, or
 * nil, kind, message, curl_code, then frees the per-transfer memory. Should a push raise (out of
 * memory), that memory stays owned by r and is freed by the next setup or by lm_request_free.
 * Returns values pushed. */
int lm_request_push_result(lua_State *L, lm_request *r, CURLcode code);
/* Frees per-transfer state (headers list, buffers beyond a small reserve). */
void lm_request_finish(lm_request *r);
/* A number naming r while it lives (its address), used to find it again after a multi transfer. */
#define lm_request_id(r) ((lua_Integer)(intptr_t)(r))

/* Frees everything, including the easy handle; safe to call twice. */
void lm_request_free(lm_request *r);

#endif
