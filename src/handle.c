/* The Lua class limitry.handle: one libcurl easy handle, reused for keep-alive (transfer.c does
 * the transfers).
 *   core.new()                 -> handle
 *   handle:request(opts)       -> status, headers, body, connections_opened
 *                              |  nil, kind, message, curl_code, sent
 *                              opts: url, method, body, headers, timeout_ms, connect_timeout_ms,
 *                              max_body, verify (all but url, method, body and headers required),
 *                              ca_file, ca_path, proxy, no_proxy, secret
 *   handle:call(cfg, url [, method [, body [, flags]]])
 *                              the same transfer with the options split: cfg (never changed once
 *                              used) is applied to libcurl only when it is not the table applied
 *                              last; flags: true or 1 (decode): a 2xx JSON answer comes back
 *                              decoded: status, false, nil, connections_opened, value; + 2: the
 *                              answer is small (a 1 KiB receive buffer); + 4: send it on a new
 *                              connection (a call that must not be sent twice). A failure is
 *                              nil, kind, message, curl_code, sent (false: nothing was sent).
 *                              cfg.secret (the API key) is redacted from decoded strings.
 *   handle:headers()           -> the last answer's headers (after call returned `false`)
 *   handle:stats()             -> { configs_applied = n }
 *   handle:close()             frees everything; also __gc and (5.4) __close */
#include <string.h>

#include "compat.h"
#include "class.h"
#include "handle.h"
#include "process.h"
#include "transfer.h"

static lm_handle *check_open(lua_State *L)
{
    lm_handle *h = (lm_handle *)lm_check_udata(L, 1, 1, LM_HANDLE_CLASS);
    if (h->closed)
        luaL_error(L, "attempt to use a closed limitry handle");
    return h;
}

/* A handle that may start a transfer: open, and not in flight on a multi handle. */
static lm_handle *check_idle(lua_State *L)
{
    lm_handle *h = check_open(L);
    if (h->owner != NULL)
        luaL_error(L, "this handle is in flight on a multi handle");
    return h;
}

static int handle_new(lua_State *L)
{
    /* The userdata exists before the easy handle, so an allocation error cannot leak it. */
    lm_handle *h = (lm_handle *)lua_newuserdata(L, sizeof(lm_handle));
    memset(h, 0, sizeof(*h));
    luaL_getmetatable(L, LM_HANDLE_CLASS);
    lua_setmetatable(L, -2);
    if (lm_handle_init(h) != 0)
        return luaL_error(L, "curl_easy_init failed");
    return 1;
}

/* After lm_transfer_setup*: the transfer, blocking; never an answer that was on the wire before
 * the request was sent (lm_sockets_drop_stale). */
static int perform(lua_State *L, lm_handle *h)
{
    CURLcode code;
    lm_sockets_drop_stale(h, NULL, NULL);
    code = curl_easy_perform(h->easy);
    return lm_transfer_push_result(L, h, code);
}

static int handle_request(lua_State *L)
{
    lm_handle *h = check_idle(L);
    /* After fork the inherited easy handle is swapped for a new one: the child's first call
     * opens its own connection. */
    if (lm_handle_init(h) != 0)
        return luaL_error(L, "curl_easy_init failed");
    lm_transfer_setup(L, h, 2, h);
    return perform(L, h);
}

static int handle_call(lua_State *L)
{
    lm_handle *h = check_idle(L);
    lua_settop(L, 6);
    if (lm_handle_init(h) != 0)
        return luaL_error(L, "curl_easy_init failed");
    lm_transfer_setup_config(L, h, 2, h);
    lm_anchor(L, 1, 2);
    return perform(L, h);
}

static int handle_headers(lua_State *L)
{
    lm_transfer_push_headers(L, check_open(L));
    return 1;
}

/* How often a full set of options went to libcurl: once per configuration in steady state. */
static int handle_stats(lua_State *L)
{
    lm_handle *h = check_open(L);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, h->applies);
    lua_setfield(L, -2, "configs_applied");
    return 1;
}

static int handle_close(lua_State *L)
{
    lm_handle *h = (lm_handle *)luaL_checkudata(L, 1, LM_HANDLE_CLASS);
    if (h->detach != NULL)
        h->detach(h);
    lm_handle_free(h);
    h->closed = 1;
    return 0;
}

static const luaL_Reg handle_methods[] = {
    {"request", handle_request},
    {"call", handle_call},
    {"headers", handle_headers},
    {"stats", handle_stats},
    {"close", handle_close},
    {NULL, NULL},
};

void lm_handle_register(lua_State *L)
{
    lm_register_class(L, LM_HANDLE_CLASS, handle_methods, handle_close, NULL);
    lua_pushcfunction(L, handle_new);
    lua_setfield(L, -2, "new");
}
