/* What the bare libcurl loops of bench/ share: a growing body buffer for the write callback, and a
 * monotonic clock. Included by curl_loop.c and multi_loop.c. */
#ifndef BENCH_LOOP_COMMON_H
#define BENCH_LOOP_COMMON_H

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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif
