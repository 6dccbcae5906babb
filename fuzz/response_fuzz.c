/* libFuzzer harness for the response path: limitry.call's outcome (lua/limitry/call.lua) with the
 * real core (src/, linked in) in an embedded Lua 5.4, on fuzzed shape, status, headers and body.
 * The promises are checked by fuzz/response_check.lua; a broken one aborts.
 * Input layout: byte 0 picks the shape (and, with bit 7, the transport-failure path: status nil),
 * bytes 1-2 the status (big-endian, modulo 1000), then header lines "name: value" up to an empty
 * line, then the body. On the transport path byte 1 picks the kind, the rest is the message and
 * the status is the libcurl code. The secret is SECRET below (fuzz/response.dict lets the fuzzer splice it in). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#ifndef LIMITRY_ROOT
#error "LIMITRY_ROOT must name the repository root"
#endif
#define SECRET "lm_fuzz_SECRET_key_42"

int luaopen_limitry_core(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int check_ref;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, LIMITRY_ROOT "/lua/?.lua;" LIMITRY_ROOT "/lua/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_limitry_core);
    lua_setfield(L, -2, "limitry.core");
    lua_pop(L, 2);
    if (luaL_dofile(L, LIMITRY_ROOT "/fuzz/response_check.lua") != 0) {
        fprintf(stderr, "response_fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static const char *const SHAPES[] = { "summary", "breakdown", "timeseries" };
static const char *const KINDS[] = { "timeout", "network", "tls", "decode", "too_large", "memory", "usage",
                                     "protocol", "" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    int transport, status;
    if (L == NULL)
        setup();
    if (size < 3)
        return 0;
    transport = (data[0] & 0x80) != 0;
    status = ((data[1] << 8) | data[2]) % 1000;
    p += 3;
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushstring(L, SHAPES[(data[0] & 0x7f) % 3]);
    lua_pushstring(L, SECRET);
    if (transport)
        lua_pushnil(L);
    else
        lua_pushinteger(L, status);
    if (transport) {
        /* handle:request's failure: kind (byte 1 picks one), message (the rest), curl code */
        lua_pushstring(L, KINDS[data[1] % (sizeof KINDS / sizeof KINDS[0])]);
    } else {
        lua_newtable(L); /* headers, with lower-cased names as the core gives them */
        while (p < end) {
            const char *eol = memchr(p, '\n', (size_t)(end - p));
            const char *line_end = eol ? eol : end, *colon;
            if (line_end == p) {
                p = line_end + 1;
                break;
            }
            if ((colon = memchr(p, ':', (size_t)(line_end - p))) != NULL) {
                const char *v = colon + 1;
                size_t i, n = (size_t)(colon - p);
                char name[256];
                if (n >= sizeof name)
                    n = sizeof name - 1;
                for (i = 0; i < n; i++)
                    name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
                while (v < line_end && *v == ' ')
                    v++;
                lua_pushlstring(L, name, n);
                lua_pushlstring(L, v, (size_t)(line_end - v));
                lua_rawset(L, -3);
            }
            p = eol ? eol + 1 : end;
        }
    }
    lua_pushlstring(L, p, (size_t)(end - p));
    if (transport)
        lua_pushinteger(L, status);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 6, 0, 0) != 0) {
        fprintf(stderr, "response_fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}
