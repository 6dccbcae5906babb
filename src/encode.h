/* core.encode, core.utf8_error and core.array_mt (encode.c). */
#ifndef LIMITRY_ENCODE_H
#define LIMITRY_ENCODE_H

#include "lua.h"

#include "core.h"

/* Sets encode, utf8_error and array_mt on the module table at the top of the stack. */
LM_HIDDEN void lm_encode_register(lua_State *L);

#endif
