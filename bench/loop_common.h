/* What the bare libcurl loops of bench/ share: a growing body buffer for the write callback, a
 * monotonic clock, and how the URL is set. Included by curl_loop.c and multi_loop.c. */
#ifndef BENCH_LOOP_COMMON_H
#define BENCH_LOOP_COMMON_H

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct buf { char *p; size_t len, cap; };

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t add = size * n;
    if (b->len + add > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + add) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, add);
    b->len += add;
    return add;
}

/* CURLOPT_URL, as a plain loop sets it: libcurl parses and re-prints the URL on every transfer.
 * With LOOP_PREPARSED_URL=1 in the environment, also a URL handle parsed once (CURLOPT_CURLU), as
 * limitry does, for the rows that compare with libcurl used that way. Returns 0 or -1. */
static int set_url(CURL *h, const char *url)
{
    if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK)
        return -1;
    if (getenv("LOOP_PREPARSED_URL") && strcmp(getenv("LOOP_PREPARSED_URL"), "1") == 0) {
        CURLU *u = curl_url(); /* lives as long as the process */
        if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK
            || curl_easy_setopt(h, CURLOPT_CURLU, u) != CURLE_OK)
            return -1;
    }
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
