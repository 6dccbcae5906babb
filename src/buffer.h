/* A growable byte buffer in C memory, filled from libcurl callbacks (which must never touch Lua). */
#ifndef LIMITRY_BUFFER_H
#define LIMITRY_BUFFER_H

#include <stddef.h>

#include "core.h"

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} lm_buffer;

/* Appends n bytes; returns 0 on success, -1 when memory runs out (the buffer is unchanged). */
LM_HIDDEN int lm_buffer_append(lm_buffer *b, const char *p, size_t n);
/* Empties the buffer, giving its memory back when it grew past keep bytes. */
LM_HIDDEN void lm_buffer_reset(lm_buffer *b, size_t keep);
LM_HIDDEN void lm_buffer_free(lm_buffer *b);

#endif
