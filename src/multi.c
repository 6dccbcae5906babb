/* The Lua class limitry.multi: many transfers in flight, driven without blocking.
 *   core.multi()                -> multi
 *   multi:add(handle, opts)     configures handle (as handle:request would) and starts it
 *   multi:add(handle, cfg, url [, method [, body [, flags [, owner]]]])
 *                               the same, options split as for handle:call; owner (nil or false:
 *                               the handle) is what next_done hands back for this transfer
 *   multi:perform()             -> transfers still running, transfers finished and not yet read
 *                               by next_done (never blocks)
 *   multi:wait(ms)              waits at most ms for activity, and handles it in watch mode
 *   multi:next_done()           -> owner, then the transfer's result values, or nothing
 *   multi:timeout()             -> ms until libcurl wants perform() again (-1: no timer)
 *   multi:fds()                 -> { {fd=, read=, write=}, ... } to watch from a host loop
 *   multi:watch()               socket-callback style from now on (no transfer attached)
 *   multi:socket_action([fd, mask])  fd ready (mask: 1 read, 2 write, 4 error), or the timer
 *                               expired (no fd) -> number of transfers still running
 *   multi:changes()             -> { fd, what, fd, what, ... } sockets to watch since the last
 *                               call (what: 1 read, 2 write, 3 both, 4 stop), or nil
 *   multi:watched()             -> { fd, what, ... } every socket watched now
 *   multi:owners()              -> { owner, ... }: every owner not yet handed back by next_done
 *   multi:remove(handle)        cancels a transfer
 *   multi:close()               detaches every transfer and frees the multi handle */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include "compat.h"
#include "class.h"
#include "multi.h"
#include "process.h"
#include "transfer.h"

/* The fewest idle connections the multi's cache keeps (it grows with the transfers in flight). */
#define LM_MULTI_MIN_IDLE 32

/* A socket libcurl asked to have watched (socket-callback style), with what it waits for. */
typedef struct {
    curl_socket_t fd;
    int what; /* CURL_POLL_IN, _OUT, _INOUT; CURL_POLL_REMOVE in a change record */
} lm_watch;

typedef struct lm_multi {
    CURLM *multi;
    pid_t pid; /* the process that created multi */
    lm_handle *attached;
    int count;      /* transfers attached */
    int lost;       /* of those, lost to a fork */
    long max_conns; /* CURLMOPT_MAXCONNECTS set last */
    int check_stale; /* a transfer was added since the last stale-connection check */
    /* Socket-callback style (multi:watch): the sockets libcurl watches now, and the changes not yet
     * handed to Lua, both written by the libcurl callback in C memory only. */
    int watching;
    lm_watch *sockets, *changes;
    size_t nsockets, cap_sockets, nchanges, cap_changes;
    int oom; /* a change could not be recorded */
} lm_multi;

/* The socket callback: C memory only (never Lua). Keeps m->sockets equal to what libcurl wants
 * watched and appends the change for Lua to read after the libcurl call returns. */
static int record(lm_watch **list, size_t *n, size_t *cap, curl_socket_t fd, int what)
{
    if (*n == *cap) {
        size_t grown = *cap ? *cap * 2 : 16;
        lm_watch *l = (lm_watch *)realloc(*list, grown * sizeof(lm_watch));
        if (l == NULL)
            return -1;
        *list = l;
        *cap = grown;
    }
    (*list)[*n].fd = fd;
    (*list)[*n].what = what;
    (*n)++;
    return 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *socketp)
{
    lm_multi *m = (lm_multi *)ud;
    size_t i;
    (void)easy;
    (void)socketp;
    for (i = 0; i < m->nsockets && m->sockets[i].fd != fd; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        if (i < m->nsockets)
            m->sockets[i] = m->sockets[--m->nsockets];
    } else if (i < m->nsockets) {
        m->sockets[i].what = what;
    } else if (record(&m->sockets, &m->nsockets, &m->cap_sockets, fd, what) != 0) {
        m->oom = 1;
        return -1;
    }
    if (record(&m->changes, &m->nchanges, &m->cap_changes, fd, what) != 0) {
        m->oom = 1;
        return -1;
    }
    return 0;
}

static int open_multi(lm_multi *m)
{
    m->multi = curl_multi_init();
    m->pid = lm_pid();
    if (m->multi == NULL)
        return -1;
    /* libcurl's default keeps 4 idle connections per attached handle, so as finished transfers
     * are detached it closes connections the next burst would have reused. Raised with the
     * number in flight (multi_add): a cache smaller than that closes a connection per call. */
    m->max_conns = LM_MULTI_MIN_IDLE;
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, m->max_conns);
    if (m->watching) {
        curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    }
    return 0;
}

/* In a forked child: forgets the parent's multi handle and the easy handles in flight on it
 * without a libcurl call (their connections are the parent's), and closes the inherited sockets.
 * The transfers stay attached, marked lost, so next_done reports each as failed. */
static void abandon(lm_multi *m)
{
    lm_handle *h;
    if (m->multi == NULL || m->pid == lm_pid())
        return;
    m->multi = NULL;
    for (h = m->attached; h != NULL; h = h->next) {
        lm_handle_abandon(h);
        if (!h->fork_lost)
            m->lost++;
        h->fork_lost = 1;
    }
    m->nsockets = m->nchanges = 0; /* the parent's sockets */
    lm_sockets_drop_inherited();
}

static lm_multi *check_multi(lua_State *L)
{
    lm_multi *m = (lm_multi *)lm_check_udata(L, 1, 1, LM_MULTI_CLASS);
    if (m->multi != NULL && m->pid != lm_pid()) {
        abandon(m);
        if (open_multi(m) != 0)
            luaL_error(L, "curl_multi_init failed");
    }
    if (m->multi == NULL)
        luaL_error(L, "attempt to use a closed limitry multi handle");
    return m;
}

/* Takes h's transfer off its multi handle (also handle:close, through h->detach). */
static void detach(lm_handle *h)
{
    lm_multi *m = (lm_multi *)h->owner;
    pid_t me = lm_pid();
    if (m == NULL)
        return;
    if (m->multi != NULL && m->pid == me && h->easy != NULL && h->pid == me && !h->fork_lost)
        curl_multi_remove_handle(m->multi, h->easy);
    if (h->fork_lost)
        m->lost--;
    h->fork_lost = 0;
    m->count--;
    if (h->prev)
        h->prev->next = h->next;
    else
        m->attached = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    h->owner = NULL;
    h->detach = NULL;
}

static int multi_new(lua_State *L)
{
    lm_multi *m = (lm_multi *)lua_newuserdata(L, sizeof(lm_multi));
    memset(m, 0, sizeof(*m));
    luaL_getmetatable(L, LM_MULTI_CLASS);
    lua_setmetatable(L, -2);
    lua_newtable(L); /* the owners of transfers in flight, by handle address (see set_owner) */
    lm_setuservalue(L, -2);
    if (open_multi(m) != 0)
        return luaL_error(L, "curl_multi_init failed");
    return 1;
}

typedef struct {
    fd_set r, w, e;
} fdsets;

/* The sockets of transfers running are those curl_multi_fdset reports; one it cannot report (a
 * descriptor >= FD_SETSIZE) counts as busy. */
static int busy_fdset(void *ud, curl_socket_t fd)
{
    fdsets *f = (fdsets *)ud;
    if (fd < 0 || fd >= FD_SETSIZE)
        return 1;
    return FD_ISSET(fd, &f->r) || FD_ISSET(fd, &f->w) || FD_ISSET(fd, &f->e);
}

/* In watch mode, libcurl has told us exactly which sockets its transfers wait on. */
static int busy_watched(void *ud, curl_socket_t fd)
{
    lm_multi *m = (lm_multi *)ud;
    size_t i;
    for (i = 0; i < m->nsockets; i++)
        if (m->sockets[i].fd == fd)
            return 1;
    return 0;
}

/* Drops the idle connections of m's pool that have bytes waiting (see lm_sockets_drop_stale),
 * once before libcurl next sends: a request goes out only from perform or socket_action, so
 * one check there covers every transfer added since the last one. */
static void drop_stale(lm_multi *m)
{
    fdsets f;
    int maxfd = -1;
    if (!m->check_stale)
        return;
    m->check_stale = 0;
    if (m->attached == NULL) {
        lm_sockets_drop_stale(m, NULL, NULL);
    } else if (m->watching) {
        lm_sockets_drop_stale(m, busy_watched, m);
    } else {
        FD_ZERO(&f.r);
        FD_ZERO(&f.w);
        FD_ZERO(&f.e);
        if (curl_multi_fdset(m->multi, &f.r, &f.w, &f.e, &maxfd) == CURLM_OK)
            lm_sockets_drop_stale(m, busy_fdset, &f);
    }
}

/* The multi's user value maps each attached handle (its address) to its owner, the Lua value
 * next_done returns for it: C keeps no references of its own, and a Lua side that keeps no
 * table of its own finds its async call without a lookup. The value at idx, or nil, is set
 * for h; the multi userdata is at index 1. */
static void set_owner(lua_State *L, lm_handle *h, int idx)
{
    lm_getuservalue(L, 1);
    lua_pushlightuserdata(L, h);
    if (idx)
        lua_pushvalue(L, idx);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Pushes the multi's owner table (index 2 after lua_settop(L, 1)) and the owner of h above it;
 * returns 0, with both popped, when h has none (a transfer removed meanwhile). */
static int push_owner(lua_State *L, lm_handle *h)
{
    lm_getuservalue(L, 1);
    lua_pushlightuserdata(L, h);
    lua_rawget(L, 2);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 2);
        return 0;
    }
    return 1;
}

/* After push_owner and the n result values above it: forgets the owner (assigning nil to a key
 * that exists allocates nothing, so this cannot fail) and drops the owner table from under the
 * values. Only now, so that a raise while pushing the results (out of memory) leaves the owner
 * listed for multi:owners and close. */
static int forget_owner(lua_State *L, lm_handle *h, int n)
{
    lua_pushlightuserdata(L, h);
    lua_pushnil(L);
    lua_rawset(L, 2);
    lua_remove(L, 2);
    return 1 + n;
}

static int multi_add(lua_State *L)
{
    lm_multi *m = check_multi(L);
    lm_handle *h = (lm_handle *)lm_check_udata(L, 2, 2, LM_HANDLE_CLASS);
    int split = !lua_isnoneornil(L, 4);
    if (h->closed)
        return luaL_error(L, "attempt to use a closed limitry handle");
    if (h->owner != NULL)
        return luaL_error(L, "this handle is already in flight");
    if (lm_handle_init(h) != 0)
        return luaL_error(L, "curl_easy_init failed");
    if (split) {
        lua_settop(L, 8);
        lm_transfer_setup_config(L, h, 3, m);
        lm_anchor(L, 2, 3);
    } else {
        lua_settop(L, 3);
        lm_transfer_setup(L, h, 3, m);
    }
    set_owner(L, h, split && lua_toboolean(L, 8) ? 8 : 2); /* first: it may raise (memory) */
    if (curl_multi_add_handle(m->multi, h->easy) != CURLM_OK) {
        set_owner(L, h, 0);
        lm_transfer_finish(h);
        return luaL_error(L, "curl_multi_add_handle failed");
    }
    m->check_stale = 1;
    h->owner = m;
    h->detach = detach;
    h->next = m->attached;
    if (m->attached)
        m->attached->prev = h;
    m->attached = h;
    if (++m->count > m->max_conns) {
        m->max_conns = m->count;
        curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, m->max_conns);
    }
    return 0;
}

static int action_failed(lua_State *L, lm_multi *m, CURLMcode rc)
{
    if (m->oom) {
        m->oom = 0;
        return luaL_error(L, "out of memory while recording libcurl's sockets");
    }
    return luaL_error(L, "libcurl multi call failed: %s", curl_multi_strerror(rc));
}

static int multi_perform(lua_State *L)
{
    lm_multi *m = check_multi(L);
    int running = 0;
    CURLMcode rc;
    drop_stale(m);
    if (m->watching)
        rc = curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    else
        rc = curl_multi_perform(m->multi, &running);
    if (rc != CURLM_OK)
        return action_failed(L, m, rc);
    lua_pushinteger(L, running);
    /* Transfers attached but no longer running are finished (or lost to a fork): next_done has
     * something for the caller only then, which spares a call on most turns. */
    lua_pushinteger(L, m->count - running);
    return 2;
}

static int multi_socket_action(lua_State *L)
{
    lm_multi *m = check_multi(L);
    curl_socket_t fd = CURL_SOCKET_TIMEOUT;
    int mask = 0, running = 0;
    CURLMcode rc;
    if (!m->watching)
        return luaL_error(L, "socket_action needs watch mode (multi:watch())");
    if (!lua_isnoneornil(L, 2)) {
        lua_Number n = luaL_checknumber(L, 2);
        if (!(n >= 0 && n <= 2147483647.0) || n != (lua_Number)(int)n)
            return luaL_argerror(L, 2, "a socket descriptor (a whole number >= 0)");
        fd = (curl_socket_t)n;
        mask = (int)luaL_optinteger(L, 3, 0) & (CURL_CSELECT_IN | CURL_CSELECT_OUT | CURL_CSELECT_ERR);
    }
    drop_stale(m);
    rc = curl_multi_socket_action(m->multi, fd, mask, &running);
    if (rc != CURLM_OK)
        return action_failed(L, m, rc);
    lua_pushinteger(L, running);
    return 1;
}

/* Watch mode: poll(2) on exactly the sockets libcurl watches (any descriptor number), then tells
 * libcurl which are ready. */
static void wait_watched(lua_State *L, lm_multi *m, int ms)
{
    struct pollfd *p;
    size_t i, n = m->nsockets;
    int ready, running = 0;
    if (n == 0) {
        poll(NULL, 0, ms);
        return;
    }
    p = (struct pollfd *)malloc(n * sizeof(struct pollfd));
    if (p == NULL) {
        luaL_error(L, "out of memory");
        return;
    }
    for (i = 0; i < n; i++) {
        p[i].fd = m->sockets[i].fd;
        p[i].events = (short)(((m->sockets[i].what & CURL_POLL_IN) ? POLLIN : 0) |
                              ((m->sockets[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
        p[i].revents = 0;
    }
    ready = poll(p, (nfds_t)n, ms);
    for (i = 0; ready > 0 && i < n; i++) {
        int mask = 0;
        if (p[i].revents == 0)
            continue;
        if (p[i].revents & (POLLIN | POLLHUP))
            mask |= CURL_CSELECT_IN;
        if (p[i].revents & POLLOUT)
            mask |= CURL_CSELECT_OUT;
        if (p[i].revents & (POLLERR | POLLNVAL))
            mask |= CURL_CSELECT_ERR;
        /* The list in p is a copy: socket_action may change m->sockets meanwhile. */
        curl_multi_socket_action(m->multi, p[i].fd, mask, &running);
    }
    free(p);
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
    if (m->watching) {
        drop_stale(m);
        wait_watched(L, m, (int)ms);
    } else if (ms >= 1 && m->attached != NULL) {
        curl_multi_wait(m->multi, NULL, 0, (int)ms, &numfds);
    }
    lua_pushinteger(L, numfds);
    return 1;
}

static int multi_next_done(lua_State *L)
{
    lm_multi *m = check_multi(L);
    int left;
    CURLMsg *msg;
    lm_handle *lost;
    lua_settop(L, 1);
    luaL_checkstack(L, LM_RESULT_MAX + 4, "limitry result");
    for (lost = m->lost > 0 ? m->attached : NULL; lost != NULL; lost = lost->next) {
        if (!lost->fork_lost)
            continue;
        detach(lost);
        if (!push_owner(L, lost)) {
            lm_transfer_finish(lost);
            return multi_next_done(L); /* the list changed: start again */
        }
        return forget_owner(L, lost, lm_transfer_push_fork_lost(L, lost));
    }
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        lm_handle *h = NULL;
        CURLcode code;
        if (msg->msg != CURLMSG_DONE)
            continue;
        code = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        if (h == NULL)
            continue;
        detach(h);
        if (!push_owner(L, h)) {
            lm_transfer_finish(h);
            continue;
        }
        return forget_owner(L, h, lm_transfer_push_result(L, h, code));
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

static void push_fd(lua_State *L, curl_socket_t fd, int rd, int wr, int n)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, fd);
    lua_setfield(L, -2, "fd");
    lua_pushboolean(L, rd);
    lua_setfield(L, -2, "read");
    lua_pushboolean(L, wr);
    lua_setfield(L, -2, "write");
    lua_rawseti(L, -2, n);
}

/* curl_multi_fdset cannot name a descriptor >= FD_SETSIZE; watch mode has no such limit. */
static int multi_fds(lua_State *L)
{
    lm_multi *m = check_multi(L);
    fd_set r, w, e;
    int maxfd = -1, fd, n = 0;
    size_t i;
    lua_newtable(L);
    if (m->watching) {
        for (i = 0; i < m->nsockets; i++)
            push_fd(L, m->sockets[i].fd, (m->sockets[i].what & CURL_POLL_IN) != 0,
                    (m->sockets[i].what & CURL_POLL_OUT) != 0, ++n);
        return 1;
    }
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&e);
    curl_multi_fdset(m->multi, &r, &w, &e, &maxfd);
    for (fd = 0; fd <= maxfd; fd++) {
        int rd = FD_ISSET(fd, &r), wr = FD_ISSET(fd, &w);
        if (rd || wr)
            push_fd(L, fd, rd, wr, ++n);
    }
    return 1;
}

static int multi_watch(lua_State *L)
{
    lm_multi *m = check_multi(L);
    if (m->watching)
        return 0;
    if (m->attached != NULL)
        return luaL_error(L, "watch mode must start while no transfer is in flight");
    m->watching = 1;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    return 0;
}

static void push_pairs(lua_State *L, const lm_watch *list, size_t n)
{
    size_t i;
    lua_createtable(L, (int)(2 * n), 0);
    for (i = 0; i < n; i++) {
        lua_pushinteger(L, list[i].fd);
        lua_rawseti(L, -2, (int)(2 * i + 1));
        lua_pushinteger(L, list[i].what);
        lua_rawseti(L, -2, (int)(2 * i + 2));
    }
}

static int multi_changes(lua_State *L)
{
    lm_multi *m = check_multi(L);
    if (m->nchanges == 0)
        return 0;
    push_pairs(L, m->changes, m->nchanges);
    m->nchanges = 0;
    return 1;
}

static int multi_watched(lua_State *L)
{
    lm_multi *m = check_multi(L);
    push_pairs(L, m->sockets, m->nsockets);
    return 1;
}

/* Every owner the multi holds: those of the transfers attached, and any whose transfer ended
 * without being handed back (a raise while next_done pushed it, a handle closed in flight). */
static int multi_owners(lua_State *L)
{
    int n = 0;
    check_multi(L);
    lua_settop(L, 1);
    lua_newtable(L);
    lm_getuservalue(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 3) != 0)
        lua_rawseti(L, 2, ++n);
    lua_pop(L, 1);
    return 1;
}

static int multi_remove(lua_State *L)
{
    lm_multi *m = check_multi(L);
    lm_handle *h = (lm_handle *)lm_check_udata(L, 2, 2, LM_HANDLE_CLASS);
    if (h->owner == m) {
        detach(h);
        lm_transfer_finish(h);
    }
    set_owner(L, h, 0); /* also the owner of a transfer that ended but was not handed back */
    return 0;
}

static int multi_close(lua_State *L)
{
    lm_multi *m = (lm_multi *)luaL_checkudata(L, 1, LM_MULTI_CLASS);
    abandon(m); /* in a forked child, nothing of the parent's is cleaned up by libcurl */
    while (m->attached != NULL) {
        lm_handle *h = m->attached;
        detach(h);
        lm_transfer_finish(h);
    }
    if (m->multi != NULL) {
        curl_multi_cleanup(m->multi);
        lm_sockets_forget(m);
        m->multi = NULL;
    }
    lua_newtable(L); /* no owners left */
    lm_setuservalue(L, 1);
    free(m->sockets);
    free(m->changes);
    m->sockets = m->changes = NULL;
    m->nsockets = m->nchanges = m->cap_sockets = m->cap_changes = 0;
    return 0;
}

static const luaL_Reg multi_methods[] = {
    {"add", multi_add},
    {"perform", multi_perform},
    {"wait", multi_wait},
    {"next_done", multi_next_done},
    {"timeout", multi_timeout},
    {"fds", multi_fds},
    {"watch", multi_watch},
    {"socket_action", multi_socket_action},
    {"changes", multi_changes},
    {"watched", multi_watched},
    {"owners", multi_owners},
    {"remove", multi_remove},
    {"close", multi_close},
    {NULL, NULL},
};

void lm_multi_register(lua_State *L)
{
    lm_register_class(L, LM_MULTI_CLASS, multi_methods, multi_close, LM_HANDLE_CLASS);
    lua_pushcfunction(L, multi_new);
    lua_setfield(L, -2, "multi");
}
