/* A pthread host for ThreadSanitizer: 8 threads, each with its own lua_State, load limitry.core
 * at the same moment (libcurl's global init must run once, race-free) and make calls to the
 * local server, with both request forms (handle:request and handle:call), blocking and async.
 * Usage: tsan_host CPATH URL [calls]. Exits 0 when every call answered 200. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "lua.h"
#include "lualib.h"
#include "lauxlib.h"

#define THREADS 8

static const char *cpath, *url;
static int calls = 5;
static pthread_barrier_t start;

static const char *SCRIPT =
    "local cpath, url, calls = ...\n"
    "package.cpath = cpath\n"
    "local core = require 'limitry.core'\n"
    "local h = core.new()\n"
    "-- the C core has no defaults: these are the options it requires\n"
    "local function opts(t) t.timeout_ms, t.connect_timeout_ms, t.max_body, t.verify = 10000, 10000, 1e6, true return t end\n"
    "for _ = 1, calls do\n"
    "  local status, _, _, err = h:request(opts { url = url })\n"
    "  if status ~= 200 then error('call failed: ' .. tostring(status) .. ' ' .. tostring(err)) end\n"
    "end\n"
    "local m = core.multi()\n"
    "-- one async call: 200 within 10 s, or an error\n"
    "local function finish(what)\n"
    "  for _ = 1, 1000 do\n"
    "    m:perform()\n"
    "    local done, status = m:next_done()\n"
    "    if done then assert(status == 200, what .. ' failed: ' .. tostring(status)) return end\n"
    "    m:wait(10)\n"
    "  end\n"
    "  error(what .. ' did not finish')\n"
    "end\n"
    "local h2 = core.new()\n"
    "m:add(h2, opts { url = url })\n"
    "finish('async call')\n"
    "-- the fast form (a configuration table, the URL apart: parsed once, again when it changes)\n"
    "local cfg = opts {}\n"
    "for i = 1, calls do\n"
    "  local status = h:call(cfg, url .. '?call=' .. (i % 2))\n"
    "  if status ~= 200 then error('fast call failed: ' .. tostring(status)) end\n"
    "end\n"
    "local h3 = core.new()\n"
    "m:add(h3, cfg, url .. '?async=1')\n"
    "finish('fast async call')\n"
    "m:close(); h3:close(); h2:close(); h:close()\n";

static void *run(void *arg)
{
    lua_State *L = luaL_newstate();
    int *failed = (int *)arg;
    luaL_openlibs(L);
    pthread_barrier_wait(&start);
    if (luaL_loadstring(L, SCRIPT) != 0) {
        *failed = 1;
    } else {
        lua_pushstring(L, cpath);
        lua_pushstring(L, url);
        lua_pushinteger(L, calls);
        if (lua_pcall(L, 3, 0, 0) != 0) {
            fprintf(stderr, "thread: %s\n", lua_tostring(L, -1));
            *failed = 1;
        }
    }
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t[THREADS];
    int failed[THREADS] = {0}, i, bad = 0;
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPATH URL [calls]\n", argv[0]);
        return 2;
    }
    cpath = argv[1];
    url = argv[2];
    if (argc > 3)
        calls = atoi(argv[3]);
    pthread_barrier_init(&start, NULL, THREADS);
    for (i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, run, &failed[i]);
    for (i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        bad += failed[i];
    }
    printf("%d threads, 2 x %d calls each (blocking) + 2 async: %d failed\n", THREADS, calls, bad);
    return bad ? 1 : 0;
}
