/* limitry.core: the primitives under the Lua facade (lua/limitry/init.lua).
 *   core.new()                 -> handle (one libcurl easy handle, reused for keep-alive)
 *   handle:request(opts)       -> status, headers, body, connections_opened
 *                              |  nil, kind, message, curl_code
 *   handle:call(cfg, url [, method [, body [, flags]]])
 *                              the same transfer with the options split: cfg (never changed once
 *                              used) is applied to libcurl only when it is not the table applied
 *                              last; flags: true or 1 (decode): a 2xx JSON answer comes back
 *                              decoded: status, false, nil, connections_opened, value; + 2: the
 *                              answer is small (a 1 KiB receive buffer); + 4: send it on a new
 *                              connection (a call that must not be sent twice). A failure is
 *                              nil, kind, message, curl_code, sent (false: nothing was sent).
 *                              cfg.secret (the API key) is redacted from decoded strings.
 *   handle:headers()           -> the last response's headers (after call returned `false`)
 *   handle:stats()             -> { configs_applied = n }
 *   handle:close()             frees everything; also __gc and (5.4) __close
 *   core.decode(json [, secret]) -> value | nil, message; the secret, where a string of the
 *                              value holds it, is replaced by "[REDACTED]" (keys included)
 *   core.numbers(t, key...)    -> whether t is a table whose raw fields key... are all numbers
 *   core.sleep(seconds), core.now() (monotonic seconds), core.null, core.curl_version
 *   core.sockets()             -> sockets libcurl opened through the core and still open, and the
 *                              entries of the registry behind the stale-connection and fork checks */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compat.h"
#include "encode.h"
#include "json.h"
#include "multi.h"
#include "process.h"
#include "request.h"

#define HANDLE_MT "limitry.handle"
#define LIMITRY_CORE_VERSION "0.1.0"
#define LM_MAX_SLEEP 1e7

static lm_request *check_handle(lua_State *L)
{
    lm_request *r = (lm_request *)lm_check_udata(L, 1, 1, HANDLE_MT);
    if (r->closed)
        luaL_error(L, "attempt to use a closed limitry handle");
    return r;
}

static int handle_new(lua_State *L)
{
    /* The userdata exists before the easy handle, so an allocation error cannot leak it. */
    lm_request *r = (lm_request *)lua_newuserdata(L, sizeof(lm_request));
    memset(r, 0, sizeof(*r));
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    if (lm_request_init(r) != 0)
        return luaL_error(L, "curl_easy_init failed");
    return 1;
}

static int handle_request(lua_State *L)
{
    lm_request *r = check_handle(L);
    CURLcode code;
    if (r->owner != NULL)
        return luaL_error(L, "this handle is in flight on a multi handle");
    /* After fork the inherited easy handle is swapped for a new one: the child's first call
     * opens its own connection. */
    if (lm_request_init(r) != 0)
        return luaL_error(L, "curl_easy_init failed");
    lm_request_setup(L, r, 2, r);
    /* Never take an answer that was on the wire before the request was sent. */
    lm_sockets_drop_stale(r, NULL, NULL);
    code = curl_easy_perform(r->easy);
    return lm_request_push_result(L, r, code);
}

/* Keeps the configuration table at cfg alive while it is the one applied to r's easy handle
 * (C compares its address), as the user value of the handle userdata at index ud. */
void lm_anchor_config(lua_State *L, int ud, int cfg)
{
    lua_pushvalue(L, cfg);
    lm_setuservalue(L, ud);
}

static int handle_call(lua_State *L)
{
    lm_request *r = check_handle(L);
    CURLcode code;
    if (r->owner != NULL)
        return luaL_error(L, "this handle is in flight on a multi handle");
    lua_settop(L, 6);
    if (lm_request_init(r) != 0)
        return luaL_error(L, "curl_easy_init failed");
    lm_request_setup_config(L, r, 2, r);
    lm_anchor_config(L, 1, 2);
    lm_sockets_drop_stale(r, NULL, NULL);
    code = curl_easy_perform(r->easy);
    return lm_request_push_result(L, r, code);
}

static int handle_headers(lua_State *L)
{
    lm_request_push_headers(L, check_handle(L));
    return 1;
}

/* How often a full set of options went to libcurl: once per configuration in steady state. */
static int handle_stats(lua_State *L)
{
    lm_request *r = check_handle(L);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, r->applies);
    lua_setfield(L, -2, "configs_applied");
    return 1;
}

static int handle_close(lua_State *L)
{
    lm_request *r = (lm_request *)luaL_checkudata(L, 1, HANDLE_MT);
    lm_multi_detach(r);
    lm_request_free(r);
    r->closed = 1;
    return 0;
}

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
    if (s > LM_MAX_SLEEP) /* also keeps the conversion to time_t defined */
        s = LM_MAX_SLEEP;
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

static const luaL_Reg handle_methods[] = {
    {"request", handle_request},
    {"call", handle_call},
    {"headers", handle_headers},
    {"stats", handle_stats},
    {"close", handle_close},
    {NULL, NULL},
};

static const luaL_Reg core_functions[] = {
    {"new", handle_new},
    {"decode", core_decode},
    {"numbers", core_numbers},
    {"sleep", core_sleep},
    {"now", core_now},
    {"sockets", core_sockets},
    {NULL, NULL},
};

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

int luaopen_limitry_core(lua_State *L)
{
    /* Once per process however many Lua states load the module, from whatever threads.
     * Hosts that own libcurl set LIMITRY_NO_CURL_INIT. */
    if (lm_global_init() != 0)
        return luaL_error(L, "curl_global_init failed");
    lm_register_class(L, HANDLE_MT, handle_methods, handle_close, NULL);

    luaL_newlib(L, core_functions);
    lm_multi_register(L);
    lm_encode_register(L); /* encode, random_id, array_mt */
    lm_json_pushnull(L);
    lua_setfield(L, -2, "null");
    lua_pushliteral(L, LIMITRY_CORE_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl_version");
    return 1;
}
