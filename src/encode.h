#ifndef LIMITRY_ENCODE_H
#define LIMITRY_ENCODE_H

#include "lua.h"

/* Sets encode, random_id and array_mt on the module table at the top of the stack. */
void lm_encode_register(lua_State *L);

#endif
