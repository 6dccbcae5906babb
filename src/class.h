/* The Lua classes of limitry.core (luasocket's auxiliar.c is the model): their metatable names,
 * defined once, and the helpers every class uses. */
#ifndef LIMITRY_CLASS_H
#define LIMITRY_CLASS_H

#include "lua.h"
#include "lauxlib.h"

#include "core.h"

#define LM_HANDLE_CLASS "limitry.handle"
#define LM_MULTI_CLASS "limitry.multi"

/* Creates (once per state: a module required again finds it) the metatable `name` with methods as
 * __index and release as __gc and, on 5.4, __close: the one path that frees a userdata. Each
 * method gets the metatable as upvalue 1 and the metatable of the class named other (registered
 * before; or nil) as upvalue 2. */
LM_HIDDEN void lm_register_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction release,
                                 const char *other);
/* luaL_checkudata for a method installed by lm_register_class, comparing the metatable with its
 * upvalue up instead of looking `name` up in the registry (which hashes the name every call). */
LM_HIDDEN void *lm_check_udata(lua_State *L, int idx, int up, const char *name);
/* Keeps the value at index value alive as the user value of the userdata at ud, so that C may keep
 * its address (a handle's configuration table, compared by address). */
LM_HIDDEN void lm_anchor(lua_State *L, int ud, int value);

#endif
