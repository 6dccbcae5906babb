/* The JSON decoder (json.c). */
#ifndef LIMITRY_JSON_H
#define LIMITRY_JSON_H

#include "lua.h"

#include "core.h"

/* Decodes s[0..len) and pushes the value. On malformed input pushes nothing, returns 0 and writes a
 * message (with the byte offset) into msg. Raises only on out-of-memory. With a secret (secret_len
 * > 0), every occurrence of it in a decoded string, object keys included, becomes "[REDACTED]". */
LM_HIDDEN int lm_json_decode(lua_State *L, const char *s, size_t len, char *msg, size_t msgsize, const char *secret,
                   size_t secret_len);

/* What lm_json_decode puts in place of the secret. */
#define LM_REDACTED "[REDACTED]"

/* The value JSON null decodes to where it must be kept (arrays, the top level). */
#define lm_json_pushnull(L) lua_pushlightuserdata((L), NULL)

#endif
