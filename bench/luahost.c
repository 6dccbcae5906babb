/* A minimal lua5.4 for profiling: the standard interpreter's job (run a script with arguments),
 * linked against Debian's static liblua5.4.a, which keeps its symbols, so that callgrind names
 * Lua's own functions (luaV_execute, luaH_newkey, luaC_step, ...) instead of the stripped
 * addresses of /usr/bin/lua5.4. Built by bench/profile.sh; C modules resolve the Lua API from
 * this executable (-Wl,-E).
 *   luahost SCRIPT [ARG...]       arg[0] = SCRIPT, arg[1..] = ARG..., as lua5.4 sets them */
#include <stdio.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

int main(int argc, char **argv)
{
    lua_State *L;
    int i, status;
    if (argc < 2) {
        fprintf(stderr, "usage: luahost SCRIPT [ARG...]\n");
        return 2;
    }
    L = luaL_newstate();
    if (L == NULL)
        return 1;
    luaL_openlibs(L);
    lua_createtable(L, argc, 0);
    for (i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        for (i = 2; i < argc; i++)
            lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 0);
    }
    if (status != LUA_OK)
        fprintf(stderr, "luahost: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
