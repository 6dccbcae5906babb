/* limitry.core multi handles: many transfers in flight, driven without blocking.
 *   core.multi()                -> multi
 *   multi:add(handle, opts)     configures handle (as handle:request would) and starts it
 *   multi:perform()             -> number of transfers still running (never blocks)
 *   multi:wait(ms)              waits at most ms for activity (curl_multi_wait)
 *   multi:next_done()           -> handle, then the handle's result values, or nothing
 *   multi:timeout()             -> ms until libcurl wants perform() again (-1: no timer)
 *   multi:fds()                 -> { {fd=, read=, write=}, ... } to watch from a host loop
 *   multi:remove(handle)        cancels a transfer
 *   multi:close()               detaches every transfer and frees the multi handle */
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include "compat.h"
#include "multi.h"
#include "process.h"

#define MULTI_MT "limitry.multi"
#define LM_MULTI_MAX_IDLE 32
#define HANDLE_MT "limitry.handle"

static CURLM *open_multi(void)
{
    CURLM *multi = curl_multi_init();
    /* libcurl's default keeps 4 idle connections per attached handle, so as finished transfers
     * are detached it closes connections the next burst would have reused. */
    if (multi != NULL)
        curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)LM_MULTI_MAX_IDLE);
    return multi;
}

/* In a forked child: forgets the parent's multi handle and the easy handles in flight on it
 * without a libcurl call (their connections are the parent's), and closes the inherited sockets.
 * The transfers stay attached, marked lost, so next_done reports each as failed. */
static void abandon(lm_multi *m)
{
    lm_request *r;
    if (m->multi == NULL || m->pid == getpid())
        return;
    m->multi = NULL;
    for (r = m->attached; r != NULL; r = r->next) {
        lm_request_abandon(r);
        r->fork_lost = 1;
    }
    lm_sockets_drop_inherited();
}

static lm_multi *check_multi(lua_State *L)
{
    lm_multi *m = (lm_multi *)luaL_checkudata(L, 1, MULTI_MT);
    if (m->multi != NULL && m->pid != getpid()) {
        abandon(m);
        m->multi = open_multi();
        m->pid = getpid();
        if (m->multi == NULL)
            luaL_error(L, "curl_multi_init failed");
    }
    if (m->multi == NULL)
        luaL_error(L, "attempt to use a closed limitry multi handle");
    return m;
}

void lm_multi_detach(lm_request *r)
{
    lm_multi *m = r->owner;
    pid_t me = getpid();
    if (m == NULL)
        return;
    if (m->multi != NULL && m->pid == me && r->easy != NULL && r->pid == me && !r->fork_lost)
        curl_multi_remove_handle(m->multi, r->easy);
    r->fork_lost = 0;
    if (r->prev)
        r->prev->next = r->next;
    else
        m->attached = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->owner = NULL;
}

static int multi_new(lua_State *L)
{
    lm_multi *m = (lm_multi *)lua_newuserdata(L, sizeof(lm_multi));
    memset(m, 0, sizeof(*m));
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);
    m->multi = open_multi();
    m->pid = getpid();
    if (m->multi == NULL)
        return luaL_error(L, "curl_multi_init failed");
    return 1;
}

/* Drops the idle connections of m's pool that have bytes waiting (see lm_sockets_drop_stale).
 * The sockets of transfers in flight are those curl_multi_fdset reports; one it cannot report
 * (a descriptor >= FD_SETSIZE) is treated as busy while any transfer runs. */
static void drop_stale(lm_multi *m)
{
    curl_socket_t busy[FD_SETSIZE];
    fd_set r, w, e;
    int maxfd = -1, fd, n = 0;
    if (m->attached == NULL) {
        lm_sockets_drop_stale(m, NULL, 0, -1);
        return;
    }
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    if (curl_multi_fdset(m->multi, &r, &w, &e, &maxfd) != CURLM_OK)
        return;
    for (fd = 0; fd <= maxfd && fd < FD_SETSIZE; fd++)
        if (FD_ISSET(fd, &r) || FD_ISSET(fd, &w) || FD_ISSET(fd, &e))
            busy[n++] = fd;
    lm_sockets_drop_stale(m, busy, n, FD_SETSIZE);
}

static int multi_add(lua_State *L)
{
    lm_multi *m = check_multi(L);
    lm_request *r = (lm_request *)luaL_checkudata(L, 2, HANDLE_MT);
    if (r->closed)
        return luaL_error(L, "attempt to use a closed limitry handle");
    if (r->owner != NULL)
        return luaL_error(L, "this handle is already in flight");
    if (lm_request_init(r) != 0)
        return luaL_error(L, "curl_easy_init failed");
    lm_request_setup(L, r, 3, m);
    drop_stale(m);
    if (curl_multi_add_handle(m->multi, r->easy) != CURLM_OK) {
        lm_request_finish(r);
        return luaL_error(L, "curl_multi_add_handle failed");
    }
    r->owner = m;
    r->next = m->attached;
    if (m->attached)
        m->attached->prev = r;
    m->attached = r;
    return 0;
}

static int multi_perform(lua_State *L)
{
    lm_multi *m = check_multi(L);
    int running = 0;
    CURLMcode rc = curl_multi_perform(m->multi, &running);
    if (rc != CURLM_OK)
        return luaL_error(L, "curl_multi_perform failed: %s", curl_multi_strerror(rc));
    lua_pushinteger(L, running);
    return 1;
}

static int multi_wait(lua_State *L)
{
    lm_multi *m = check_multi(L);
    lua_Number ms = luaL_optnumber(L, 2, 0);
    int numfds = 0;
    if (!(ms >= 0)) /* also NaN */
        ms = 0;
    if (ms > 1e6) /* a wait longer than that is a loop of waits; keeps (int) defined */
        ms = 1e6;
    if (ms >= 1 && m->attached != NULL)
        curl_multi_wait(m->multi, NULL, 0, (int)ms, &numfds);
    lua_pushinteger(L, numfds);
    return 1;
}

/* Finds the handle userdata of r among the attached ones: the caller passes the in-flight
 * table (id -> handle) so C keeps no Lua references of its own. */
static int multi_next_done(lua_State *L)
{
    lm_multi *m = check_multi(L);
    int left;
    CURLMsg *msg;
    lm_request *lost;
    luaL_checktype(L, 2, LUA_TTABLE);
    for (lost = m->attached; lost != NULL; lost = lost->next) {
        if (!lost->fork_lost)
            continue;
        lm_multi_detach(lost);
        lua_pushinteger(L, lm_request_id(lost));
        lua_rawget(L, 2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lm_request_finish(lost);
            return multi_next_done(L); /* the list changed: start again */
        }
        return 1 + lm_request_push_fork_lost(L, lost);
    }
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        lm_request *r = NULL;
        CURLcode code;
        if (msg->msg != CURLMSG_DONE)
            continue;
        code = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r == NULL)
            continue;
        lm_multi_detach(r);
        lua_pushinteger(L, lm_request_id(r));
        lua_rawget(L, 2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lm_request_finish(r);
            continue;
        }
        return 1 + lm_request_push_result(L, r, code);
    }
    return 0;
}

static int multi_timeout(lua_State *L)
{
    lm_multi *m = check_multi(L);
    long ms = -1;
    curl_multi_timeout(m->multi, &ms);
    lua_pushinteger(L, ms);
    return 1;
}

static int multi_fds(lua_State *L)
{
    lm_multi *m = check_multi(L);
    fd_set r, w, e;
    int maxfd = -1, fd, n = 0;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    curl_multi_fdset(m->multi, &r, &w, &e, &maxfd);
    lua_newtable(L);
    for (fd = 0; fd <= maxfd; fd++) {
        int rd = FD_ISSET(fd, &r), wr = FD_ISSET(fd, &w);
        if (!rd && !wr)
            continue;
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, fd);
        lua_setfield(L, -2, "fd");
        lua_pushboolean(L, rd);
        lua_setfield(L, -2, "read");
        lua_pushboolean(L, wr);
        lua_setfield(L, -2, "write");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int multi_remove(lua_State *L)
{
    lm_multi *m = check_multi(L);
    lm_request *r = (lm_request *)luaL_checkudata(L, 2, HANDLE_MT);
    if (r->owner == m) {
        lm_multi_detach(r);
        lm_request_finish(r);
    }
    return 0;
}

static int multi_close(lua_State *L)
{
    lm_multi *m = (lm_multi *)luaL_checkudata(L, 1, MULTI_MT);
    abandon(m); /* in a forked child, nothing of the parent's is cleaned up by libcurl */
    while (m->attached != NULL) {
        lm_request *r = m->attached;
        lm_multi_detach(r);
        lm_request_finish(r);
    }
    if (m->multi != NULL) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    return 0;
}

static const luaL_Reg multi_methods[] = {
    {"add", multi_add},
    {"perform", multi_perform},
    {"wait", multi_wait},
    {"next_done", multi_next_done},
    {"timeout", multi_timeout},
    {"fds", multi_fds},
    {"remove", multi_remove},
    {"close", multi_close},
    {NULL, NULL},
};

void lm_multi_register(lua_State *L)
{
    lm_register_class(L, MULTI_MT, multi_methods, multi_close);
    lua_pushcfunction(L, multi_new);
    lua_setfield(L, -2, "multi");
}
