/* A minimal `lua5.4` built with AddressSanitizer and UBSan, so the client specs run sanitized
 * without LD_PRELOAD: the nginx servers and other programs the specs start stay ordinary
 * processes (a preloaded libasan hung nginx's children). tools/asan.sh puts it first on PATH
 * as `lua5.4`, so the child Lua processes the specs start are sanitized too.
 * Supports what the specs use: `lua5.4 [-e CHUNK]... [SCRIPT [ARGS...]]`. */
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

/* lua_close unloads C modules; once limitry/core.so and the libcurl/GnuTLS it pulled in are
 * unmapped, LeakSanitizer takes their still-referenced global state for leaks and cannot name
 * a frame. This definition overrides libc's for liblua, so modules stay loaded until exit and
 * only memory that nothing references any more is reported. */
int dlclose(void *handle);
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static int report(lua_State *L, const char *progname, int status)
{
    if (status != LUA_OK) {
        fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return status;
}

static int run(lua_State *L, int nargs)
{
    int base = lua_gettop(L) - nargs;
    int status;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
    return status;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    int i = 1, j, status = LUA_OK;
    luaL_openlibs(L);
    while (i + 1 < argc && strcmp(argv[i], "-e") == 0)
        i += 2;
    /* arg as the stock interpreter builds it: the script at 0, options below, arguments above. */
    lua_createtable(L, argc, 0);
    for (j = 0; j < argc; j++) {
        lua_pushstring(L, argv[j]);
        lua_rawseti(L, -2, j - i);
    }
    lua_setglobal(L, "arg");
    for (j = 1; j < i && status == LUA_OK; j += 2) {
        status = luaL_loadbuffer(L, argv[j + 1], strlen(argv[j + 1]), "=(command line)");
        if (status == LUA_OK)
            status = run(L, 0);
        report(L, argv[0], status);
    }
    if (status == LUA_OK && i < argc) {
        status = luaL_loadfile(L, argv[i]);
        if (status == LUA_OK) {
            luaL_checkstack(L, argc - i, "too many arguments");
            for (j = i + 1; j < argc; j++)
                lua_pushstring(L, argv[j]);
            status = run(L, argc - i - 1);
        }
        report(L, argv[0], status);
    }
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
