/* Non-blocking transfers: a libcurl multi handle driving limitry handles (see core.c). */
#ifndef LIMITRY_MULTI_H
#define LIMITRY_MULTI_H

#include "lua.h"
#include "lauxlib.h"
#include "request.h"

/* A socket libcurl asked to have watched (socket-callback style), with what it waits for. */
typedef struct {
    curl_socket_t fd;
    int what; /* CURL_POLL_IN, _OUT, _INOUT; CURL_POLL_REMOVE in a change record */
} lm_watch;

typedef struct lm_multi {
    CURLM *multi;
    pid_t pid; /* the process that created multi */
    lm_request *attached;
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

/* Detaches r from its multi handle, if any. */
void lm_multi_detach(lm_request *r);
/* Creates (once per state) the metatable `name` with methods as __index and release as __gc and,
 * on 5.4, __close: the one path that frees a userdata. Each method gets the metatable as upvalue 1
 * and the metatable of the class named other (registered before; or nil) as upvalue 2. Defined in
 * core.c. */
void lm_register_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction release,
                       const char *other);
/* luaL_checkudata for a method installed by lm_register_class, comparing the metatable with its
 * upvalue up instead of looking `name` up in the registry (which hashes the name every call). */
void *lm_check_udata(lua_State *L, int idx, int up, const char *name);
/* Sets core.multi and the multi metatable on the module table at the top of the stack. */
void lm_multi_register(lua_State *L);

#endif
