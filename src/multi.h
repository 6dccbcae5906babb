/* Non-blocking transfers: a libcurl multi handle driving limitry handles (see core.c). */
#ifndef LIMITRY_MULTI_H
#define LIMITRY_MULTI_H

#include "lua.h"
#include "request.h"

typedef struct lm_multi {
    CURLM *multi;
    lm_request *attached;
} lm_multi;

/* Detaches r from its multi handle, if any. */
void lm_multi_detach(lm_request *r);
/* Sets core.multi and the multi metatable on the module table at the top of the stack. */
void lm_multi_register(lua_State *L);

#endif
