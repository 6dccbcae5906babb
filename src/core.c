/* limitry.core: the primitives under the Lua facade (lua/limitry/init.lua). Each class and group
 * of functions lives in its own file; this one opens the module and holds the small functions:
 *   core.new() -> handle        handle.c (one libcurl easy handle; transfer.c does its transfers)
 *   core.multi() -> multi       multi.c (many transfers in flight, driven without blocking)
 *   core.encode(value), core.utf8_error(s), core.array_mt            encode.c
 *   core.percent_encode(s), core.has_control(s), core.expand(s, map) text.c
 *   core.random_id()                                                 random.c
 *   core.decode(json [, secret]) -> value | nil, message; the secret, where a string of the
 *                              value holds it, is replaced by "[REDACTED]" (keys included)
 *   core.numbers(t, key...)    -> whether t is a table whose raw fields key... are all numbers
 *   core.sleep(seconds), core.now() (monotonic seconds), core.null, core.curl_version
 *   core.sockets()             -> sockets libcurl opened through the core and still open, and the
 *                              entries of the registry behind the stale-connection and fork checks
 *   core.limits                the limits of core.h, which the Lua side reads instead of its own */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compat.h"
#include "encode.h"
#include "handle.h"
#include "json.h"
#include "multi.h"
#include "process.h"
#include "random.h"
#include "text.h"

#define LIMITRY_CORE_VERSION "0.1.0"

static int core_decode(lua_State *L)
{
    size_t len, secret_len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *secret = luaL_optlstring(L, 2, NULL, &secret_len);
    char msg[128];
    if (lm_json_decode(L, s, len, msg, sizeof msg, secret, secret_len))
        return 1;
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Whether the value at 1 is a table whose raw fields named by the other arguments are all numbers:
 * the common case of a shape check, in one call instead of a call of type() per field. */
static int core_numbers(lua_State *L)
{
    int i, n = lua_gettop(L);
    int ok = lua_type(L, 1) == LUA_TTABLE;
    for (i = 2; ok && i <= n; i++) {
        lua_pushvalue(L, i);
        lua_rawget(L, 1);
        ok = lua_type(L, -1) == LUA_TNUMBER;
        lua_pop(L, 1);
    }
    lua_pushboolean(L, ok);
    return 1;
}

static int core_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec ts, rem;
    if (!(s > 0))
        return 0;
    if (s > LM_MAX_TIMEOUT_MS / 1000) /* also keeps the conversion to time_t defined */
        s = LM_MAX_TIMEOUT_MS / 1000;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &rem) != 0 && errno == EINTR)
        ts = rem;
    return 0;
}

/* core.sockets() -> sockets libcurl opened through us and still open, entries in the registry. */
static int core_sockets(lua_State *L)
{
    size_t kept = 0;
    lua_pushinteger(L, (lua_Integer)lm_sockets_tracked(&kept));
    lua_pushinteger(L, (lua_Integer)kept);
    return 2;
}

static int core_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.limits: every limit of core.h, by name. */
static void push_limits(lua_State *L)
{
    static const struct {
        const char *name;
        double value;
    } LIMITS[] = {
        {"header_bytes", LM_MAX_HEADER_BYTES},
        {"all_header_bytes", LM_MAX_ALL_HEADER_BYTES},
        {"chunk_hex_digits", LM_MAX_CHUNK_HEX},
        {"timeout_ms", LM_MAX_TIMEOUT_MS},
        {"body_bytes", LM_MAX_BODY},
        {"decode_depth", LM_MAX_DECODE_DEPTH},
        {"encode_depth", LM_MAX_ENCODE_DEPTH},
    };
    size_t i;
    lua_createtable(L, 0, (int)(sizeof LIMITS / sizeof LIMITS[0]));
    for (i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++) {
#if LM_HAS_INTEGERS
        if (LIMITS[i].value <= (double)LUA_MAXINTEGER) /* whole numbers: integers where the VM has them */
            lua_pushinteger(L, (lua_Integer)LIMITS[i].value);
        else
#endif
            lua_pushnumber(L, LIMITS[i].value);
        lua_setfield(L, -2, LIMITS[i].name);
    }
}

static const luaL_Reg core_functions[] = {
    {"decode", core_decode},
    {"numbers", core_numbers},
    {"sleep", core_sleep},
    {"now", core_now},
    {"sockets", core_sockets},
    {NULL, NULL},
};

LM_EXPORT int luaopen_limitry_core(lua_State *L)
{
    /* Once per process however many Lua states load the module, from whatever threads.
     * Hosts that own libcurl set LIMITRY_NO_CURL_INIT. */
    if (lm_global_init() != 0)
        return luaL_error(L, "curl_global_init failed");
    luaL_newlib(L, core_functions);
    lm_handle_register(L);
    lm_multi_register(L); /* after the handle class: its methods take handles */
    lm_encode_register(L);
    lm_text_register(L);
    lm_random_register(L);
    lm_json_pushnull(L);
    lua_setfield(L, -2, "null");
    lua_pushliteral(L, LIMITRY_CORE_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl_version");
    push_limits(L);
    lua_setfield(L, -2, "limits");
    return 1;
}
