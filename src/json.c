/* A small strict JSON decoder (RFC 8259) producing plain Lua values:
 * integers stay integers on 5.3+ (lua-cjson 2.1.0 makes them floats), null object members are
 * left out, null array elements and a top-level null become lightuserdata(NULL) (== cjson.null).
 * It allocates no C memory, so an error raised inside (a longjmp) cannot leak: it runs under
 * lua_pcall and malformed input becomes a message, not an exception. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "json.h"

#define MAX_DEPTH LM_MAX_DECODE_DEPTH

/* Object keys repeat from answer to answer and from row to row ("totalTokens" 8,760 times in a
 * year of hourly buckets). The last key seen in each of KEY_SLOTS slots is kept with its Lua
 * string, so that a repeat is pushed from the cache instead of being hashed and interned again.
 * One cache per Lua state (a userdata in the registry, its strings in the userdata's user value):
 * states in different threads share nothing, and the cache holds no C memory of its own. */
#define KEY_SLOTS 64
#define KEY_MAX 32
typedef struct {
    unsigned char len[KEY_SLOTS]; /* 0: empty slot */
    char bytes[KEY_SLOTS][KEY_MAX];
} key_cache;
static const char KEY_CACHE_ID = 0; /* its address names the cache in the registry */

typedef struct {
    const char *s;
    const char *p;
    const char *end;
    int depth;
    key_cache *keys;
    int key_strings; /* stack index of the cache's strings, by slot + 1 */
    const char *secret; /* replaced in every decoded string (see lm_json_decode) */
    size_t secret_len;  /* 0: no secret */
} parser;

static void value(lua_State *L, parser *ps);

static int fail(lua_State *L, parser *ps, const char *what)
{
    return luaL_error(L, "%s at byte %d", what, (int)(ps->p - ps->s) + 1);
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(lua_State *L, parser *ps)
{
    int i, v = 0;
    if (ps->end - ps->p < 4)
        fail(L, ps, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else fail(L, ps, "invalid \\u escape");
    }
    return v;
}

static void add_utf8(luaL_Buffer *b, unsigned long cp)
{
    if (cp < 0x80) {
        luaL_addchar(b, (char)cp);
    } else if (cp < 0x800) {
        luaL_addchar(b, (char)(0xC0 | (cp >> 6)));
        luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        luaL_addchar(b, (char)(0xE0 | (cp >> 12)));
        luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
    } else {
        luaL_addchar(b, (char)(0xF0 | (cp >> 18)));
        luaL_addchar(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
        luaL_addchar(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        luaL_addchar(b, (char)(0x80 | (cp & 0x3F)));
    }
}

/* The first occurrence of needle[0..m) (m > 0) in s[0..n), or NULL. */
static const char *find(const char *s, size_t n, const char *needle, size_t m)
{
    const char *end = s + n;
    while ((size_t)(end - s) >= m) {
        const char *c = (const char *)memchr(s, needle[0], (size_t)(end - s) - m + 1);
        if (c == NULL)
            return NULL;
        if (memcmp(c, needle, m) == 0)
            return c;
        s = c + 1;
    }
    return NULL;
}

/* Whether s[0..len) holds the secret. Strings shorter than the key (nearly all of an answer's: keys,
 * dates, names) cost one comparison. */
static int holds_secret(const parser *ps, const char *s, size_t len)
{
    return ps->secret_len > 0 && len >= ps->secret_len && find(s, len, ps->secret, ps->secret_len) != NULL;
}

/* Replaces the string on top of the stack, whose bytes are s[0..len) and which holds the secret,
 * with a copy that has LM_REDACTED in place of every occurrence. */
static void redact_top(lua_State *L, const parser *ps, const char *s, size_t len)
{
    luaL_Buffer b;
    const char *hit = find(s, len, ps->secret, ps->secret_len);
    luaL_buffinit(L, &b);
    while (hit != NULL) {
        luaL_addlstring(&b, s, (size_t)(hit - s));
        luaL_addstring(&b, LM_REDACTED);
        len -= (size_t)(hit - s) + ps->secret_len;
        s = hit + ps->secret_len;
        hit = find(s, len, ps->secret, ps->secret_len);
    }
    luaL_addlstring(&b, s, len);
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

static void string_value(lua_State *L, parser *ps)
{
    luaL_Buffer b;
    const char *run, *q;
    ps->p++; /* opening quote */
    /* Most strings (keys, ISO dates, names) have no escapes: push them without a buffer. */
    for (q = ps->p; q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20; q++)
        ;
    if (q < ps->end && *q == '"') {
        lua_pushlstring(L, ps->p, (size_t)(q - ps->p));
        if (holds_secret(ps, ps->p, (size_t)(q - ps->p)))
            redact_top(L, ps, ps->p, (size_t)(q - ps->p));
        ps->p = q + 1;
        return;
    }
    luaL_buffinit(L, &b);
    run = ps->p;
    for (;;) {
        unsigned char c;
        if (ps->p >= ps->end)
            fail(L, ps, "unterminated string");
        c = (unsigned char)*ps->p;
        if (c == '"') {
            luaL_addlstring(&b, run, (size_t)(ps->p - run));
            ps->p++;
            break;
        }
        if (c < 0x20)
            fail(L, ps, "control character in string");
        if (c != '\\') {
            ps->p++;
            continue;
        }
        luaL_addlstring(&b, run, (size_t)(ps->p - run));
        ps->p++;
        if (ps->p >= ps->end)
            fail(L, ps, "unterminated string");
        switch (*ps->p++) {
        case '"': luaL_addchar(&b, '"'); break;
        case '\\': luaL_addchar(&b, '\\'); break;
        case '/': luaL_addchar(&b, '/'); break;
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u': {
            unsigned long cp = (unsigned long)hex4(L, ps);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned long lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u')
                    fail(L, ps, "unpaired surrogate in \\u escape");
                ps->p += 2;
                lo = (unsigned long)hex4(L, ps);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    fail(L, ps, "unpaired surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(L, ps, "unpaired surrogate in \\u escape");
            }
            add_utf8(&b, cp);
            break;
        }
        default:
            ps->p--;
            fail(L, ps, "invalid escape");
        }
        run = ps->p;
    }
    luaL_pushresult(&b);
    if (ps->secret_len > 0) { /* an escaped secret is a secret too: checked once unescaped */
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        if (holds_secret(ps, text, len))
            redact_top(L, ps, text, len);
    }
}

/* An object key: from the cache when it is short, has no escapes and was seen last in its slot. */
static void key_value(lua_State *L, parser *ps)
{
    const char *start = ps->p + 1, *q;
    key_cache *kc = ps->keys;
    unsigned h = 2166136261u; /* FNV-1a */
    size_t len;
    int slot;
    for (q = start; q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20; q++)
        h = (h ^ (unsigned char)*q) * 16777619u;
    len = (size_t)(q - start);
    if (q >= ps->end || *q != '"' || len == 0 || len > KEY_MAX || holds_secret(ps, start, len)) {
        string_value(L, ps); /* escapes, long keys, errors, the secret (never cached): the general path */
        return;
    }
    slot = (int)(h % KEY_SLOTS);
    if (kc->len[slot] == len && memcmp(kc->bytes[slot], start, len) == 0) {
        lua_rawgeti(L, ps->key_strings, slot + 1);
    } else {
        lua_pushlstring(L, start, len);
        lua_pushvalue(L, -1);
        lua_rawseti(L, ps->key_strings, slot + 1);
        memcpy(kc->bytes[slot], start, len); /* only once the string is in place (rawseti may raise) */
        kc->len[slot] = (unsigned char)len;
    }
    ps->p = q + 1;
}

static int is_digit(const parser *ps)
{
    return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* Moves past a number's text (RFC 8259's grammar), raising on a malformed one. Returns whether
 * it is integral (no fraction, no exponent). */
static int scan_number(lua_State *L, parser *ps)
{
    int integral = 1;
    if (*ps->p == '-')
        ps->p++;
    if (!is_digit(ps))
        fail(L, ps, "invalid number");
    if (*ps->p == '0') {
        ps->p++;
        if (is_digit(ps))
            fail(L, ps, "leading zero in number");
    } else {
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        integral = 0;
        ps->p++;
        if (!is_digit(ps))
            fail(L, ps, "invalid number");
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        integral = 0;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!is_digit(ps))
            fail(L, ps, "invalid number");
        while (is_digit(ps))
            ps->p++;
    }
    return integral;
}

/* Pushes the integer written in [start, end) when the VM holds it exactly; returns 0 otherwise
 * (then the caller pushes a double). */
static int push_integer(lua_State *L, const char *start, const char *end)
{
    size_t n = (size_t)(end - start);
    if (n - (*start == '-') <= 15) {
        /* Up to 15 digits fit exactly in a double and in a long long: no strtod needed. */
        long long v = 0;
        const char *q = start + (*start == '-');
        for (; q < end; q++)
            v = v * 10 + (*q - '0');
        if (*start == '-')
            v = -v;
#if LM_HAS_INTEGERS
        if (v >= LUA_MININTEGER && v <= LUA_MAXINTEGER) { /* false only for 32-bit lua_Integer */
            lua_pushinteger(L, (lua_Integer)v);
            return 1;
        }
#else
        lua_pushnumber(L, (lua_Number)v);
        return 1;
#endif
    }
#if LM_HAS_INTEGERS
    {
        /* Accumulate as a negative number so that the most negative integer fits too. */
        lua_Integer v = 0;
        const lua_Integer min = LUA_MININTEGER;
        const char *q = start + (*start == '-');
        for (; q < end; q++) {
            int digit = *q - '0';
            if (v < (min + digit) / 10)
                return 0; /* overflow */
            v = v * 10 - digit;
        }
        if (*start == '-' || v != min) {
            lua_pushinteger(L, *start == '-' ? v : -v);
            return 1;
        }
    }
#endif
    return 0;
}

/* Pushes the double written in [start, end). Every digit can matter (1 followed by 99 zeros,
 * 1.000...0001e5, a long -0.000...01): strtod sees the whole text, from a heap copy when it does
 * not fit the stack buffer. */
static void push_double(lua_State *L, const char *start, const char *end)
{
    char text[64];
    size_t n = (size_t)(end - start);
    char *buf = n < sizeof(text) ? text : (char *)malloc(n + 1);
    const char *point = localeconv()->decimal_point;
    double d;
    if (buf == NULL)
        luaL_error(L, "out of memory");
    memcpy(buf, start, n);
    buf[n] = '\0';
    /* strtod follows the C locale's decimal point, which a host may have changed. */
    if (point[0] != '.' && point[0] != '\0') {
        char *dot = strchr(buf, '.');
        if (dot != NULL)
            *dot = point[0];
    }
    d = strtod(buf, NULL);
    if (buf != text)
        free(buf);
    lua_pushnumber(L, d);
}

static void number_value(lua_State *L, parser *ps)
{
    const char *start = ps->p;
    if (scan_number(L, ps) && push_integer(L, start, ps->p))
        return;
    push_double(L, start, ps->p);
}

static int literal(parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

static void enter(lua_State *L, parser *ps)
{
    if (++ps->depth > MAX_DEPTH)
        fail(L, ps, "nesting too deep");
    luaL_checkstack(L, 4, "JSON nesting");
}

static void object_value(lua_State *L, parser *ps)
{
    enter(L, ps);
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        lua_newtable(L);
        ps->p++;
        ps->depth--;
        return;
    }
    /* Room for the usual API object (5-8 members) at once: growing 0, 1, 2, 4, 8 rehashes 4 times. */
    lua_createtable(L, 0, 8);
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            fail(L, ps, "expected a string key");
        key_value(L, ps);
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            fail(L, ps, "expected ':'");
        ps->p++;
        skip_ws(ps);
        value(L, ps);
        if (lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL)
            lua_pop(L, 2); /* a null member is simply absent */
        else
            lua_rawset(L, -3);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            break;
        }
        fail(L, ps, "expected ',' or '}'");
    }
    ps->depth--;
}

static void array_value(lua_State *L, parser *ps)
{
    int i = 0;
    enter(L, ps);
    ps->p++;
    lua_newtable(L);
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        ps->depth--;
        return;
    }
    for (;;) {
        skip_ws(ps);
        value(L, ps);
        lua_rawseti(L, -2, ++i);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            break;
        }
        fail(L, ps, "expected ',' or ']'");
    }
    ps->depth--;
}

static void value(lua_State *L, parser *ps)
{
    if (ps->p >= ps->end)
        fail(L, ps, "unexpected end of input");
    switch (*ps->p) {
    case '{': object_value(L, ps); return;
    case '[': array_value(L, ps); return;
    case '"': string_value(L, ps); return;
    case 't':
        if (literal(ps, "true", 4)) { lua_pushboolean(L, 1); return; }
        break;
    case 'f':
        if (literal(ps, "false", 5)) { lua_pushboolean(L, 0); return; }
        break;
    case 'n':
        if (literal(ps, "null", 4)) { lm_json_pushnull(L); return; }
        break;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
            number_value(L, ps);
            return;
        }
    }
    fail(L, ps, "unexpected character");
}

/* Pushes this state's key cache and its strings table, made on first use; sets ps->keys. */
static void open_key_cache(lua_State *L, parser *ps)
{
    lua_pushlightuserdata(L, (void *)&KEY_CACHE_ID);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_type(L, -1) != LUA_TUSERDATA) {
        lua_pop(L, 1);
        ps->keys = (key_cache *)lua_newuserdata(L, sizeof(key_cache));
        memset(ps->keys, 0, sizeof(key_cache));
        lua_createtable(L, KEY_SLOTS, 0);
        lm_setuservalue(L, -2);
        lua_pushlightuserdata(L, (void *)&KEY_CACHE_ID);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    ps->keys = (key_cache *)lua_touserdata(L, -1);
    lm_getuservalue(L, -1);
    ps->key_strings = lua_gettop(L);
}

static int decode_protected(lua_State *L)
{
    parser *ps = (parser *)lua_touserdata(L, 1);
    lua_settop(L, 0);
    open_key_cache(L, ps);
    skip_ws(ps);
    value(L, ps);
    skip_ws(ps);
    if (ps->p != ps->end)
        fail(L, ps, "trailing characters");
    return 1;
}

int lm_json_decode(lua_State *L, const char *s, size_t len, char *msg, size_t msgsize, const char *secret,
                   size_t secret_len)
{
    parser ps;
    int rc;
    ps.s = s;
    ps.p = s;
    ps.end = s + len;
    ps.depth = 0;
    ps.secret = secret;
    ps.secret_len = secret != NULL ? secret_len : 0;
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &ps);
    rc = lua_pcall(L, 1, 1, 0);
    if (rc == 0)
        return 1;
    if (rc == LUA_ERRMEM)
        lua_error(L); /* out of memory is not a property of the input */
    snprintf(msg, msgsize, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "invalid JSON");
    lua_pop(L, 1);
    return 0;
}
