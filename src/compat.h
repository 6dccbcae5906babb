/* The one place that papers over Lua 5.1/LuaJIT vs 5.2+ differences. */
#ifndef LIMITRY_COMPAT_H
#define LIMITRY_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#ifndef luaL_newlib /* LuaJIT 2.1 already has these 5.2 helpers */
#define luaL_newlib(L, l) (lua_newtable(L), luaL_setfuncs((L), (l), 0))

static inline void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#endif
#endif

/* Sets the value at the top of the stack (a table) as the user value of the userdata at idx, and
 * pops it: what a handle anchors so that C may keep the value's address. */
#if LUA_VERSION_NUM >= 504
#define lm_setuservalue(L, idx) lua_setiuservalue((L), (idx), 1)
#define lm_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#elif LUA_VERSION_NUM >= 502
#define lm_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define lm_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define lm_setuservalue(L, idx) lua_setfenv((L), (idx))
#define lm_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif

/* JSON integers become Lua integers where the VM has them (5.3+), doubles elsewhere. */
#if LUA_VERSION_NUM >= 503
#define LM_HAS_INTEGERS 1
#else
#define LM_HAS_INTEGERS 0
#endif

#endif
