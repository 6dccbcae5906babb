/* Non-blocking transfers: a libcurl multi handle driving limitry handles (see core.c). */
#ifndef LIMITRY_MULTI_H
#define LIMITRY_MULTI_H

#include "lua.h"
#include "lauxlib.h"
#include "request.h"

typedef struct lm_multi {
    CURLM *multi;
    pid_t pid; /* the process that created multi */
    lm_request *attached;
} lm_multi;

/* Detaches r from its multi handle, if any. */
void lm_multi_detach(lm_request *r);
/* Creates (once per state) the metatable `name` with methods as __index and release as __gc and,
 * on 5.4, __close: the one path that frees a userdata. Defined in core.c. */
void lm_register_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction release);
/* Sets core.multi and the multi metatable on the module table at the top of the stack. */
void lm_multi_register(lua_State *L);

#endif
