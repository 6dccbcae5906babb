/* core.random_id (random.c). */
#ifndef LIMITRY_RANDOM_H
#define LIMITRY_RANDOM_H

#include "lua.h"

#include "core.h"

/* Sets core.random_id on the module table at the top of the stack. */
LM_HIDDEN void lm_random_register(lua_State *L);

#endif
