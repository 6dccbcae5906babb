/* The helpers every Lua class of limitry.core uses (class.h). */
#include "compat.h"
#include "class.h"

void lm_register_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction release,
                       const char *other)
{
    /* luaL_newmetatable returns the existing table when re-required: no duplicate state. */
    luaL_newmetatable(L, name);
    lua_newtable(L);
    lua_pushvalue(L, -2); /* upvalue 1 of every method: this class's metatable (lm_check_udata) */
    if (other != NULL)
        luaL_getmetatable(L, other); /* upvalue 2: the other class's */
    else
        lua_pushnil(L);
    luaL_setfuncs(L, methods, 2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

void *lm_check_udata(lua_State *L, int idx, int up, const char *name)
{
    void *p = lua_touserdata(L, idx);
    if (p != NULL && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(up));
        lua_pop(L, 1);
        if (same)
            return p;
    }
    return luaL_checkudata(L, idx, name); /* raises with the usual message */
}

void lm_anchor(lua_State *L, int ud, int value)
{
    lua_pushvalue(L, value);
    lm_setuservalue(L, ud);
}
