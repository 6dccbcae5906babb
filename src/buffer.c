#include <stdlib.h>
#include <string.h>

#include "buffer.h"

int lm_buffer_append(lm_buffer *b, const char *p, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        char *grown;
        while (cap - b->len < n) {
            if (cap > ((size_t)-1) / 2)
                return -1;
            cap *= 2;
        }
        grown = realloc(b->data, cap);
        if (grown == NULL)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void lm_buffer_reset(lm_buffer *b, size_t keep)
{
    if (b->cap > keep)
        lm_buffer_free(b);
    b->len = 0;
}

void lm_buffer_free(lm_buffer *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
