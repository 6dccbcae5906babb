/* libFuzzer harness for the JSON decoder (src/json.c) in an embedded Lua 5.4.
 * Beyond "no crash, no sanitizer report" it checks, for every input:
 *   - the Lua stack is back where it was plus exactly one value on success, nothing on failure;
 *   - decoding is deterministic: a second decode gives an equal value, or the same message;
 *   - a decoded value survives a round trip: re-encoded by a tiny encoder below (integers as
 *     integers, floats with 17 significant digits) and decoded again, it is equal to itself.
 * A broken invariant aborts, which libFuzzer reports as a crash with the input saved. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "json.h"

static lua_State *L;

static void die(const char *why)
{
    fprintf(stderr, "json_fuzz: invariant broken: %s\n", why);
    abort();
}

/* Deep equality of two decoded values; floats compare by value, -0.0 and 0.0 by sign too. */
static int same(lua_State *S, int a, int b)
{
    int ta = lua_type(S, a), tb = lua_type(S, b);
    if (ta != tb)
        return 0;
    switch (ta) {
    case LUA_TNUMBER:
        if (lua_isinteger(S, a) != lua_isinteger(S, b))
            return 0;
        if (lua_isinteger(S, a))
            return lua_tointeger(S, a) == lua_tointeger(S, b);
        {
            double x = lua_tonumber(S, a), y = lua_tonumber(S, b);
            return x == y && signbit(x) == signbit(y);
        }
    case LUA_TTABLE: {
        int n = 0, m = 0;
        a = lua_absindex(S, a);
        b = lua_absindex(S, b);
        luaL_checkstack(S, 6, "compare");
        lua_pushnil(S);
        while (lua_next(S, a)) {
            n++;
            lua_pushvalue(S, -2);
            lua_rawget(S, b);
            if (!same(S, -1, -2)) {
                lua_pop(S, 3);
                return 0;
            }
            lua_pop(S, 2);
        }
        lua_pushnil(S);
        while (lua_next(S, b)) {
            m++;
            lua_pop(S, 1);
        }
        return n == m;
    }
    default:
        return lua_rawequal(S, a, b);
    }
}

/* The re-encoded text grows in a plain C buffer: a luaL_Buffer cannot share the stack with the
 * values being walked. */
typedef struct {
    char *p;
    size_t n, cap;
} cbuf;

static void add(cbuf *B, const char *s, size_t n)
{
    if (B->n + n > B->cap) {
        B->cap = (B->n + n) * 2 + 64;
        B->p = (char *)realloc(B->p, B->cap);
        if (B->p == NULL)
            die("out of memory");
    }
    memcpy(B->p + B->n, s, n);
    B->n += n;
}
#define addchar(B, c) do { char c_ = (c); add((B), &c_, 1); } while (0)
#define addstring(B, s) add((B), (s), strlen(s))

static void encode(lua_State *S, cbuf *B, int i);

static void encode_string(cbuf *B, const char *s, size_t n)
{
    size_t k;
    addchar(B, '"');
    for (k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"' || c == '\\') {
            addchar(B, '\\');
            addchar(B, (char)c);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            addstring(B, esc);
        } else {
            addchar(B, (char)c);
        }
    }
    addchar(B, '"');
}

/* Appends the value at absolute index i. */
static void encode(lua_State *S, cbuf *B, int i)
{
    char num[64];
    switch (lua_type(S, i)) {
    case LUA_TNUMBER:
        if (lua_isinteger(S, i)) {
            snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(S, i));
        } else {
            double d = lua_tonumber(S, i);
            if (isinf(d))
                snprintf(num, sizeof num, "%s1e999", d < 0 ? "-" : "");
            else
                snprintf(num, sizeof num, "%.17g%s", d, (d == floor(d) && fabs(d) < 1e17) ? ".0" : "");
        }
        addstring(B, num);
        break;
    case LUA_TBOOLEAN:
        addstring(B, lua_toboolean(S, i) ? "true" : "false");
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(S, i, &n);
        encode_string(B, s, n);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        addstring(B, "null");
        break;
    case LUA_TTABLE: {
        lua_Integer n = (lua_Integer)lua_rawlen(S, i), k;
        if (n > 0) {
            addchar(B, '[');
            for (k = 1; k <= n; k++) {
                if (k > 1)
                    addchar(B, ',');
                lua_rawgeti(S, i, k);
                encode(S, B, lua_gettop(S));
                lua_pop(S, 1);
            }
            addchar(B, ']');
        } else {
            int first = 1;
            addchar(B, '{');
            lua_pushnil(S);
            while (lua_next(S, i)) {
                size_t kn;
                const char *ks;
                if (lua_type(S, -2) != LUA_TSTRING)
                    die("an object key that is not a string");
                if (!first)
                    addchar(B, ',');
                first = 0;
                ks = lua_tolstring(S, -2, &kn);
                encode_string(B, ks, kn);
                addchar(B, ':');
                encode(S, B, lua_gettop(S));
                lua_pop(S, 1);
            }
            addchar(B, '}');
        }
        break;
    }
    default:
        die("a decoded value of an unexpected type");
    }
}

/* The secret redacted by the third decode: short, so that inputs hold it often. */
#define SECRET "ab"

/* Whether a string anywhere in the value at idx (keys included) holds SECRET. */
static int holds(lua_State *S, int idx)
{
    if (lua_type(S, idx) == LUA_TSTRING) {
        size_t n, i;
        const char *p = lua_tolstring(S, idx, &n);
        for (i = 0; i + 1 < n; i++)
            if (p[i] == 'a' && p[i + 1] == 'b')
                return 1;
        return 0;
    }
    if (lua_type(S, idx) == LUA_TTABLE) {
        int found = 0;
        luaL_checkstack(S, 4, "holds");
        lua_pushnil(S);
        while (!found && lua_next(S, idx)) {
            found = holds(S, lua_gettop(S) - 1) || holds(S, lua_gettop(S));
            lua_pop(S, 1);
        }
        if (found)
            lua_pop(S, 1); /* the key lua_next left */
        return found;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg1[128], msg2[128], msg3[128];
    int top, ok1, ok2;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
    }
    top = lua_gettop(L);
    ok1 = lm_json_decode(L, (const char *)data, size, msg1, sizeof msg1, NULL, 0);
    if (lua_gettop(L) != top + (ok1 ? 1 : 0))
        die("the stack does not hold exactly the result");
    ok2 = lm_json_decode(L, (const char *)data, size, msg2, sizeof msg2, NULL, 0);
    if (ok1 != ok2)
        die("two decodes of the same text disagree on accepting it");
    if (!ok1) {
        if (strcmp(msg1, msg2) != 0)
            die("two decodes of the same text give different messages");
        if (strstr(msg1, " at byte ") == NULL && strcmp(msg1, "invalid JSON") != 0)
            die("an error message without a byte offset");
        lua_settop(L, top);
        return 0;
    }
    if (!same(L, top + 1, top + 2))
        die("two decodes of the same text give different values");
    lua_pop(L, 1);
    /* With a secret: accepted alike, and no string of the value, key or element, holds it. */
    if (!lm_json_decode(L, (const char *)data, size, msg2, sizeof msg2, SECRET, sizeof SECRET - 1))
        die("a secret changes whether a text is accepted");
    if (holds(L, lua_gettop(L)))
        die("a decoded string still holds the secret");
    lua_pop(L, 1);
    {
        /* Round trip through the encoder. */
        cbuf B = { NULL, 0, 0 };
        int value = lua_gettop(L);
        encode(L, &B, value);
        if (!lm_json_decode(L, B.p, B.n, msg3, sizeof msg3, NULL, 0)) {
            fprintf(stderr, "re-encoded text: %.*s\nerror: %s\n", (int)(B.n > 400 ? 400 : B.n), B.p, msg3);
            die("the re-encoded value does not decode");
        }
        if (!same(L, value, -1)) {
            fprintf(stderr, "re-encoded text: %.*s\n", (int)(B.n > 400 ? 400 : B.n), B.p);
            die("the re-encoded value decodes to something else");
        }
        free(B.p);
    }
    lua_settop(L, top);
    return 0;
}
