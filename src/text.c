/* Byte-level string helpers for what the facade puts in URLs and header lines, in C because a
 * Lua pattern class costs ~150 instructions a byte and a query value is checked and encoded on
 * every call whose arguments changed:
 *   core.percent_encode(s)   every byte but RFC 3986's unreserved ones as %XX
 *   core.has_control(s)      whether s holds a byte 0-31 or 127
 *   core.expand(s, map)      each byte 1-31 that map names replaced by map's text for it */
#include "compat.h"
#include "text.h"

/* RFC 3986's unreserved bytes as a bitmap, 32 bytes to a word: - . 0-9 (word 1), A-Z _ (2), a-z ~ (3). */
static const unsigned long UNRESERVED[8] = {0, 0x03FF6000UL, 0x87FFFFFEUL, 0x47FFFFFEUL, 0, 0, 0, 0};

static int is_unreserved(unsigned char c)
{
    return (int)((UNRESERVED[c >> 5] >> (c & 31)) & 1);
}

/* core.percent_encode(s): every byte but RFC 3986's unreserved ones (ALPHA DIGIT - . _ ~) as %XX
 * (upper-case hex); s itself when nothing needs it. Lua's gsub with a class pays ~150
 * instructions a byte; a query value is encoded on every call whose arguments changed. */
static int core_percent_encode(lua_State *L)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len, i;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    for (i = 0; i < len && is_unreserved(s[i]); i++)
        ;
    if (i == len) {
        lua_settop(L, 1);
        return 1;
    }
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)s, i);
    for (; i < len; i++) {
        if (is_unreserved(s[i])) {
            luaL_addchar(&b, (char)s[i]);
        } else {
            luaL_addchar(&b, '%');
            luaL_addchar(&b, hex[s[i] >> 4]);
            luaL_addchar(&b, hex[s[i] & 15]);
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* core.has_control(s): whether s holds a byte 0-31 or 127. */
static int core_has_control(lua_State *L)
{
    size_t len, i;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    for (i = 0; i < len && s[i] >= 32 && s[i] != 127; i++)
        ;
    lua_pushboolean(L, i < len);
    return 1;
}

/* core.expand(s, map): s with each byte from 1 to 31 that map (a table of one-byte strings to
 * strings) names replaced by its text; s itself when it holds none. The recorder's shorthand:
 * Lua's gsub with a table costs ~3 ms on a batch of 1,000 events, in a worker that serves requests. */
static int core_expand(lua_State *L)
{
    const char *text[32] = {0};
    size_t text_len[32] = {0};
    size_t len, i, run;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    int c, any = 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    for (c = 1; c < 32; c++) {
        char key = (char)c;
        lua_pushlstring(L, &key, 1);
        lua_rawget(L, 2);
        if (lua_type(L, -1) == LUA_TSTRING) { /* held by the table, which the caller holds */
            text[c] = lua_tolstring(L, -1, &text_len[c]);
            any = 1;
        }
        lua_pop(L, 1);
    }
    for (i = 0; any && i < len && !(s[i] < 32 && text[s[i]]); i++)
        ;
    if (!any || i == len) {
        lua_settop(L, 1);
        return 1;
    }
    luaL_buffinit(L, &b);
    run = 0;
    for (; i < len; i++) {
        if (s[i] < 32 && text[s[i]]) {
            luaL_addlstring(&b, (const char *)s + run, i - run);
            luaL_addlstring(&b, text[s[i]], text_len[s[i]]);
            run = i + 1;
        }
    }
    luaL_addlstring(&b, (const char *)s + run, len - run);
    luaL_pushresult(&b);
    return 1;
}

void lm_text_register(lua_State *L)
{
    lua_pushcfunction(L, core_expand);
    lua_setfield(L, -2, "expand");
    lua_pushcfunction(L, core_percent_encode);
    lua_setfield(L, -2, "percent_encode");
    lua_pushcfunction(L, core_has_control);
    lua_setfield(L, -2, "has_control");
}
