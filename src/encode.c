/* core.encode(value) -> JSON text; core.array_mt; core.utf8_error(s) (the encoder's UTF-8 check,
 * for the facade's argument checks).
 * Request bodies are encoded here rather than by lua-cjson: Debian's 2.1.0 prints 14 digits
 * (2^53 - 1 becomes 9.007199254741e+15) and its settings are shared with the host.
 *
 * What is written (decisions where JSON leaves a choice):
 * - Integers (5.3+ integer subtype) as integers; on 5.1/LuaJIT integral doubles up to 2^53 too.
 * - Floats: the first of %.15g, %.16g, %.17g that reads back to the same double (subnormals try
 *   from 1 digit: 5e-324). An integral float gets ".0" (3.0, not 3) so it reads back as a float on
 *   5.3+; -0.0 is written "-0.0" on every Lua, keeping its sign. NaN and +/-inf raise. The C
 *   locale's decimal point is never written: "0.5" under a decimal-comma locale too.
 * - Strings: \" \\ \b \f \n \r \t, other controls as \u00XX; "/" and DEL as they are; valid UTF-8
 *   passes through; invalid UTF-8 (overlongs, surrogates, past U+10FFFF, truncated) raises.
 * - Tables are read raw (no __index, __len, __pairs): keys exactly 1..n make an array, string keys
 *   an object with keys sorted bytewise; {} is an object unless its metatable is core.array_mt
 *   (then []). Mixed, sparse, or other keys, nesting past 100 tables and cycles raise.
 * - core.null (lightuserdata NULL) is null; nil, functions, threads and userdata raise.
 *
 * Errors raise (the facade checks arguments first; this is the last line of defence) with the path
 * of the offending value: "core.encode: events[3].cost_cents is not a finite number (nan)". The
 * output buffer is C memory owned by a userdata with __gc, created before anything else, so a raise
 * or an out-of-memory longjmp from anywhere inside cannot leak it. */
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "encode.h"

#define MAX_DEPTH LM_MAX_ENCODE_DEPTH
#define INLINE_KEYS 32 /* objects up to this size keep their keys on the Lua stack */
#define ARRAY_MT "limitry.array"
#define ENCODER_MT "limitry.encoder"

typedef struct {
    const char *key; /* NULL: an array index */
    size_t klen;
    long long index;
} frame;

typedef struct {
    const char *s;
    size_t len;
    int slot; /* stack index (small objects) or index in the anchor table (large ones) */
} keyref;

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int depth;
    int npath;
    const void *open[MAX_DEPTH]; /* the tables being encoded, outermost first: cycles */
    frame path[MAX_DEPTH + 1];
    char point[8]; /* the C locale's decimal point, when it is not "." */
    size_t point_len;
} encoder;

static void encode_value(lua_State *L, encoder *e, int idx);

/* ---- errors ---------------------------------------------------------------------------------- */

static void append(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= size)
        return;
    if (len > size - 1 - *n)
        len = size - 1 - *n;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

static int is_identifier(const char *s, size_t len)
{
    size_t i;
    if (len == 0 || len > 64 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* A key as it would be written in Lua, bytes outside printable ASCII as \xHH, long keys cut. */
static void append_quoted(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    size_t i, shown = len > 40 ? 40 : len;
    append(out, size, n, "[\"", 2);
    for (i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            append(out, size, n, esc, 2);
        } else if (c >= 0x20 && c < 0x7f) {
            append(out, size, n, (const char *)&s[i], 1);
        } else {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            append(out, size, n, esc, 4);
        }
    }
    if (shown < len)
        append(out, size, n, "...", 3);
    append(out, size, n, "\"]", 2);
}

static void render_path(const encoder *e, int upto, char *out, size_t size)
{
    size_t n = 0;
    int i;
    out[0] = '\0';
    if (upto == 0) {
        append(out, size, &n, "value", 5);
        return;
    }
    for (i = 0; i < upto; i++) {
        const frame *f = &e->path[i];
        if (f->key == NULL) {
            char idx[32];
            int len = snprintf(idx, sizeof idx, "[%lld]", f->index);
            append(out, size, &n, idx, (size_t)len);
        } else if (is_identifier(f->key, f->klen)) {
            if (i > 0)
                append(out, size, &n, ".", 1);
            append(out, size, &n, f->key, f->klen);
        } else {
            append_quoted(out, size, &n, f->key, f->klen);
        }
        if (n + 8 >= size) {
            memcpy(out + size - 4, "...", 4);
            return;
        }
    }
}

static void release(encoder *e)
{
    free(e->data);
    e->data = NULL;
    e->len = e->cap = 0;
}

/* Raises "core.encode: <path> <what>". */
static int fail(lua_State *L, encoder *e, const char *fmt, ...)
{
    char path[512], what[256];
    va_list ap;
    render_path(e, e->npath, path, sizeof path);
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    release(e);
    return luaL_error(L, "core.encode: %s %s", path, what);
}

/* ---- output buffer --------------------------------------------------------------------------- */

static int encoder_gc(lua_State *L)
{
    release((encoder *)lua_touserdata(L, 1));
    return 0;
}

static char *reserve(lua_State *L, encoder *e, size_t n)
{
    if (n > e->cap - e->len) {
        size_t cap = e->cap ? e->cap : 256;
        char *grown;
        while (cap - e->len < n) {
            if (cap > ((size_t)-1) / 2) {
                release(e);
                luaL_error(L, "core.encode: not enough memory");
            }
            cap *= 2;
        }
        grown = (char *)realloc(e->data, cap);
        if (grown == NULL) {
            release(e);
            luaL_error(L, "core.encode: not enough memory");
        }
        e->data = grown;
        e->cap = cap;
    }
    return e->data + e->len;
}

static void put(lua_State *L, encoder *e, const char *s, size_t n)
{
    memcpy(reserve(L, e, n), s, n);
    e->len += n;
}

#define put_char(L, e, c) (*reserve((L), (e), 1) = (c), (e)->len++)

/* ---- numbers --------------------------------------------------------------------------------- */

static void put_integer(lua_State *L, encoder *e, long long v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    /* Through unsigned so that the most negative integer has a magnitude too. */
    unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + (int)(m % 10));
        m /= 10;
    } while (m != 0);
    if (v < 0)
        *--p = '-';
    put(L, e, p, (size_t)(tmp + sizeof tmp - p));
}

/* The first of %.15g, %.16g, %.17g that strtod reads back exactly (subnormals, which have fewer
 * digits of precision, try from 1 digit up). Formatting and reading back both use the C locale
 * in force, so they agree; its decimal point is then written as '.'. A text of bare digits gets
 * ".0", so an integral float (3.0, 2^53 on 5.3+) is still a float when read back. */
static void put_double(lua_State *L, encoder *e, double x)
{
    char text[40];
    char *out;
    int prec, len = 0, i, plain = 1;
    double mag = x < 0 ? -x : x;
    for (prec = (mag != 0 && mag < DBL_MIN) ? 1 : 15; prec <= 17; prec++) {
        len = snprintf(text, sizeof text, "%.*g", prec, x);
        if (strtod(text, NULL) == x)
            break;
    }
    out = reserve(L, e, (size_t)len + 2);
    for (i = 0; i < len; i++) {
        char c = text[i];
        if (e->point_len > 0 && c == e->point[0] && strncmp(text + i, e->point, e->point_len) == 0) {
            *out++ = '.';
            i += (int)e->point_len - 1;
            plain = 0;
            continue;
        }
        if (c == '.' || c == 'e')
            plain = 0;
        *out++ = c;
    }
    if (plain) {
        *out++ = '.';
        *out++ = '0';
    }
    e->len = (size_t)(out - e->data);
}

static void encode_number(lua_State *L, encoder *e, int idx)
{
    lua_Number x;
#if LM_HAS_INTEGERS
    if (lua_isinteger(L, idx)) {
        put_integer(L, e, (long long)lua_tointeger(L, idx));
        return;
    }
#endif
    x = lua_tonumber(L, idx);
    if (!isfinite(x))
        fail(L, e, "is not a finite number (%s)", isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
#if !LM_HAS_INTEGERS
    /* 5.1 and LuaJIT have only doubles: integral ones up to 2^53 print as integers. -0.0 keeps its
     * sign (put_double writes "-0.0"), as on 5.3+. */
    if (x >= -9007199254740992.0 && x <= 9007199254740992.0 && (lua_Number)(long long)x == x &&
        !(x == 0 && signbit(x))) {
        put_integer(L, e, (long long)x);
        return;
    }
#endif
    put_double(L, e, (double)x);
}

/* ---- strings --------------------------------------------------------------------------------- */

/* 1: copied as is; 0: escaped (", \\, controls) or the start of a multi-byte UTF-8 sequence.
 * A constant, so that VMs in several threads (nginx's thread pool) share it without a race. */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* The length of the well-formed UTF-8 sequence at p (Unicode table 3-7: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t n, i;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Writes s as a JSON string. On invalid UTF-8 returns the 1-based offset of the bad byte (nothing
 * counted as written), else 0. */
static size_t put_string(lua_State *L, encoder *e, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    char *out;
    if (len > (((size_t)-1) - 2) / 6) {
        release(e);
        luaL_error(L, "core.encode: not enough memory");
    }
    out = reserve(L, e, len * 6 + 2); /* the worst case: every byte a \u00XX */
    *out++ = '"';
    while (p < end) {
        const unsigned char *run = p;
        unsigned char c;
        while (p < end && plain_byte[*p])
            p++;
        memcpy(out, run, (size_t)(p - run));
        out += p - run;
        if (p == end)
            break;
        c = *p;
        if (c >= 0x80) {
            size_t n = utf8_length(p, end);
            if (n == 0)
                return (size_t)(p - (const unsigned char *)s) + 1;
            memcpy(out, p, n);
            out += n;
            p += n;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            memcpy(out, "u00", 3);
            out[3] = hex[c >> 4];
            out[4] = hex[c & 15];
            out += 5;
        }
        p++;
    }
    *out++ = '"';
    e->len = (size_t)(out - e->data);
    return 0;
}

/* ---- tables ---------------------------------------------------------------------------------- */

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = (const keyref *)a, *y = (const keyref *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static void sort_keys(keyref *k, int n)
{
    int i, j;
    if (n > INLINE_KEYS) {
        qsort(k, (size_t)n, sizeof *k, keyref_cmp);
        return;
    }
    for (i = 1; i < n; i++) {
        keyref v = k[i];
        for (j = i; j > 0 && keyref_cmp(&k[j - 1], &v) > 0; j--)
            k[j] = k[j - 1];
        k[j] = v;
    }
}

static const char *const KEY_RULE = "(object keys are strings, array keys 1..n)";

/* Checks the key at the top of the stack; returns 1 for a string, 0 for an array index (*index set). */
static int classify_key(lua_State *L, encoder *e, long long *index)
{
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING)
        return 1;
    if (t == LUA_TNUMBER) {
#if LM_HAS_INTEGERS
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k >= 1) {
                *index = (long long)k;
                return 0;
            }
            fail(L, e, "has the key %lld %s", (long long)k, KEY_RULE);
        }
#else
        lua_Number k = lua_tonumber(L, -1);
        if (k >= 1 && k <= 9007199254740992.0 && (lua_Number)(long long)k == k) {
            *index = (long long)k;
            return 0;
        }
#endif
        fail(L, e, "has the number key %.17g %s", (double)lua_tonumber(L, -1), KEY_RULE);
    }
    fail(L, e, "has a %s key %s", luaL_typename(L, -1), KEY_RULE);
    return 0;
}

static void mixed(lua_State *L, encoder *e)
{
    fail(L, e, "mixes string and integer keys (a JSON value is an array or an object)");
}

static void encode_array(lua_State *L, encoder *e, int t, long long n)
{
    long long i;
    frame *f = &e->path[e->npath++];
    f->key = NULL;
    put_char(L, e, '[');
    for (i = 1; i <= n; i++) {
        if (i > 1)
            put_char(L, e, ',');
        f->index = i;
        lua_rawgeti(L, t, (int)i);
        encode_value(L, e, lua_gettop(L));
        lua_pop(L, 1);
    }
    put_char(L, e, ']');
    e->npath--;
}

static void encode_members(lua_State *L, encoder *e, int t, keyref *k, int n, int anchor)
{
    int i;
    put_char(L, e, '{');
    for (i = 0; i < n; i++) {
        size_t bad;
        frame *f;
        if (i > 0)
            put_char(L, e, ',');
        bad = put_string(L, e, k[i].s, k[i].len);
        if (bad != 0) {
            char key[96];
            size_t len = 0;
            append_quoted(key, sizeof key, &len, k[i].s, k[i].len);
            fail(L, e, "has a key that is not valid UTF-8 (byte %d of %s)", (int)bad, key);
        }
        put_char(L, e, ':');
        f = &e->path[e->npath++];
        f->key = k[i].s;
        f->klen = k[i].len;
        if (anchor)
            lua_rawgeti(L, anchor, k[i].slot);
        else
            lua_pushvalue(L, k[i].slot);
        lua_rawget(L, t);
        encode_value(L, e, lua_gettop(L));
        lua_pop(L, 1);
        e->npath--;
    }
    put_char(L, e, '}');
}

/* More than INLINE_KEYS string keys: they go into an anchor table (so the pointers sorted below
 * stay valid whatever happens to t) and a userdata array, both freed by the GC. */
static void encode_large_object(lua_State *L, encoder *e, int t)
{
    int anchor, n = 0, i;
    keyref *k;
    long long index;
    lua_newtable(L);
    anchor = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!classify_key(L, e, &index))
            mixed(L, e);
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, ++n);
    }
    k = (keyref *)lua_newuserdata(L, sizeof(keyref) * (size_t)n);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, anchor, i + 1);
        k[i].s = lua_tolstring(L, -1, &k[i].len);
        k[i].slot = i + 1;
        lua_pop(L, 1);
    }
    sort_keys(k, n);
    encode_members(L, e, t, k, n, anchor);
}

static void encode_table(lua_State *L, encoder *e, int t)
{
    const void *self = lua_topointer(L, t);
    keyref keys[INLINE_KEYS];
    int i, top, nstr = 0, as_array = 0, large = 0;
    long long nint = 0, maxint = 0, index;

    if (e->depth >= MAX_DEPTH)
        fail(L, e, "is nested more than %d tables deep", MAX_DEPTH);
    for (i = 0; i < e->depth; i++)
        if (e->open[i] == self)
            fail(L, e, "is a table that contains itself (a cycle)");
    e->open[e->depth++] = self;
    luaL_checkstack(L, INLINE_KEYS + 8, "core.encode: nesting");
    if (lua_getmetatable(L, t)) {
        as_array = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
    }

    /* One pass classifies the keys; the first INLINE_KEYS string keys stay on the stack (one copy
     * each, below the one lua_next walks with), which keeps them alive while sorted by pointer. */
    top = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (classify_key(L, e, &index)) {
            if (nint > 0)
                mixed(L, e);
            if (nstr == INLINE_KEYS) {
                large = 1;
                lua_settop(L, top);
                break;
            }
            keys[nstr].s = lua_tolstring(L, -1, &keys[nstr].len);
            keys[nstr].slot = lua_gettop(L);
            nstr++;
            lua_pushvalue(L, -1);
        } else {
            if (nstr > 0)
                mixed(L, e);
            nint++;
            if (index > maxint)
                maxint = index;
        }
    }

    if (nstr > 0 && as_array)
        fail(L, e, "has core.array_mt but string keys");
    if (large) {
        encode_large_object(L, e, t);
    } else if (nstr > 0) {
        sort_keys(keys, nstr);
        encode_members(L, e, t, keys, nstr, 0);
    } else if (nint > 0) {
        if (maxint != nint)
            fail(L, e, "is a sparse array (%lld items, largest key %lld; arrays need keys 1..n)", nint, maxint);
        encode_array(L, e, t, nint);
    } else {
        put(L, e, as_array ? "[]" : "{}", 2);
    }
    lua_settop(L, top);
    e->depth--;
}

static void encode_value(lua_State *L, encoder *e, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len, bad;
        const char *s = lua_tolstring(L, idx, &len);
        bad = put_string(L, e, s, len);
        if (bad != 0)
            fail(L, e, "is not valid UTF-8 (byte %d)", (int)bad);
        return;
    }
    case LUA_TNUMBER:
        encode_number(L, e, idx);
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put(L, e, "true", 4);
        else
            put(L, e, "false", 5);
        return;
    case LUA_TTABLE:
        encode_table(L, e, idx);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* core.null */
            put(L, e, "null", 4);
            return;
        }
        break;
    case LUA_TNIL:
        fail(L, e, "is nil (core.null encodes as null)");
        return;
    default:
        break;
    }
    fail(L, e, "is a %s (only tables, strings, numbers, booleans and core.null can be encoded)",
         luaL_typename(L, idx));
}

static int core_encode(lua_State *L)
{
    encoder *e;
    const char *point;
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    e = (encoder *)lua_newuserdata(L, sizeof(encoder));
    memset(e, 0, sizeof *e);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    point = localeconv()->decimal_point;
    if (point != NULL && strcmp(point, ".") != 0 && strlen(point) < sizeof e->point) {
        e->point_len = strlen(point);
        memcpy(e->point, point, e->point_len + 1);
    }
    encode_value(L, e, 1);
    lua_pushlstring(L, e->data, e->len);
    release(e);
    return 1;
}

/* core.utf8_error(s): nil when s is well-formed UTF-8 (as the encoder requires), else the 1-based
 * offset of its first bad byte, so an argument check can name the argument instead of leaving it
 * to core.encode. */
static int core_utf8_error(lua_State *L)
{
    size_t len, i = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    while (i < len) {
        size_t n = s[i] < 0x80 ? 1 : utf8_length(s + i, s + len);
        if (n == 0) {
            lua_pushinteger(L, (lua_Integer)i + 1);
            return 1;
        }
        i += n;
    }
    lua_pushnil(L);
    return 1;
}

void lm_encode_register(lua_State *L)
{
    /* luaL_newmetatable returns the existing tables when the module is required again. */
    luaL_newmetatable(L, ARRAY_MT);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "array_mt");
    luaL_newmetatable(L, ENCODER_MT);
    lua_pushcfunction(L, encoder_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcclosure(L, core_encode, 2);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, core_utf8_error);
    lua_setfield(L, -2, "utf8_error");
}
