/* The Lua class limitry.handle (handle.c): core.new() and the handle's methods. */
#ifndef LIMITRY_HANDLE_H
#define LIMITRY_HANDLE_H

#include "lua.h"

#include "core.h"

/* Registers the class and sets core.new on the module table at the top of the stack. */
LM_HIDDEN void lm_handle_register(lua_State *L);

#endif
