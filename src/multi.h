/* The Lua class limitry.multi (multi.c): a libcurl multi handle driving handles' transfers. */
#ifndef LIMITRY_MULTI_H
#define LIMITRY_MULTI_H

#include "lua.h"

#include "core.h"

/* Registers the class (after limitry.handle's, whose handles its methods take) and sets
 * core.multi on the module table at the top of the stack. */
LM_HIDDEN void lm_multi_register(lua_State *L);

#endif
