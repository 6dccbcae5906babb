/* Test-only: fork, a non-blocking waitpid, kill and _exit for Lua versions Debian's lua-posix
 * does not ship for (5.4). The interface follows luaposix: fork() -> pid (0 in the child);
 * wait(pid) -> pid, "exited"|"killed", code  or  0, "running". Built by tools/build.sh. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"

static int l_fork(lua_State *L)
{
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork failed: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)pid);
    return 1;
}

static int l_wait(lua_State *L)
{
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r < 0)
        return luaL_error(L, "waitpid failed: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)r);
    if (r == 0) {
        lua_pushliteral(L, "running");
        return 2;
    }
    if (WIFEXITED(status)) {
        lua_pushliteral(L, "exited");
        lua_pushinteger(L, WEXITSTATUS(status));
    } else {
        lua_pushliteral(L, "killed");
        lua_pushinteger(L, WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    }
    return 3;
}

static int l_kill(lua_State *L)
{
    kill((pid_t)luaL_checkinteger(L, 1), SIGKILL);
    return 0;
}

static int l_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
    return 0;
}

int luaopen_limitry_test_fork(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_fork);
    lua_setfield(L, -2, "fork");
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, -2, "wait");
    lua_pushcfunction(L, l_kill);
    lua_setfield(L, -2, "kill");
    lua_pushcfunction(L, l_exit);
    lua_setfield(L, -2, "_exit");
    return 1;
}
