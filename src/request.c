#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "request.h"

#define MAX_HEADER_BYTES (64 * 1024)
#define KEEP_BUFFER_BYTES (256 * 1024)

/* libcurl callbacks: C memory only, never a Lua call, so nothing can longjmp across libcurl. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    lm_request *r = (lm_request *)ud;
    size_t bytes = size * n;
    if (bytes > r->max_body - r->body.len) {
        r->too_large = 1;
        return 0;
    }
    if (lm_buffer_append(&r->body, p, bytes) != 0) {
        r->out_of_memory = 1;
        return 0;
    }
    return bytes;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    lm_request *r = (lm_request *)ud;
    size_t bytes = size * n;
    if (bytes >= 5 && memcmp(p, "HTTP/", 5) == 0)
        r->head.len = 0; /* a new response (after 1xx or a proxy CONNECT) replaces the old headers */
    if (bytes > MAX_HEADER_BYTES - r->head.len) {
        r->too_large = 1;
        return 0;
    }
    if (lm_buffer_append(&r->head, p, bytes) != 0) {
        r->out_of_memory = 1;
        return 0;
    }
    return bytes;
}

int lm_request_init(lm_request *r)
{
    if (r->easy == NULL)
        r->easy = curl_easy_init();
    return r->easy ? 0 : -1;
}

typedef struct {
    const char *url;
    const char *ca_file;
    const char *ca_path;
    const char *proxy;
    const char *no_proxy;
    long timeout_ms;
    long connect_timeout_ms;
    lua_Number max_body;
    int verify;
    int nheaders;
} options;

static const char *opt_string(lua_State *L, int idx, const char *name, int required)
{
    const char *s;
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1) && !required) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "request option '%s' must be a string", name);
    s = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the options table, so the pointer stays valid */
    return s;
}

static lua_Number opt_number(lua_State *L, int idx, const char *name, lua_Number dflt)
{
    lua_Number v = dflt;
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "request option '%s' must be a number", name);
        v = lua_tonumber(L, -1);
        if (!(v >= 0))
            luaL_error(L, "request option '%s' must not be negative", name);
    }
    lua_pop(L, 1);
    return v;
}

static void read_options(lua_State *L, int idx, options *o)
{
    int i;
    luaL_checktype(L, idx, LUA_TTABLE);
    o->url = opt_string(L, idx, "url", 1);
    o->ca_file = opt_string(L, idx, "ca_file", 0);
    o->ca_path = opt_string(L, idx, "ca_path", 0);
    o->proxy = opt_string(L, idx, "proxy", 0);
    o->no_proxy = opt_string(L, idx, "no_proxy", 0);
    o->timeout_ms = (long)opt_number(L, idx, "timeout_ms", 30000);
    o->connect_timeout_ms = (long)opt_number(L, idx, "connect_timeout_ms", 10000);
    o->max_body = opt_number(L, idx, "max_body", 8 * 1024 * 1024);
    lua_getfield(L, idx, "verify");
    o->verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "headers");
    o->nheaders = 0;
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        o->nheaders = (int)lua_rawlen(L, -1);
        for (i = 1; i <= o->nheaders; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING || strpbrk(lua_tostring(L, -1), "\r\n") != NULL)
                luaL_error(L, "request header %d must be a string without CR or LF", i);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

void lm_request_setup(lua_State *L, lm_request *r, int idx)
{
    options o;
    CURL *h = r->easy;
    int i;

    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    read_options(L, idx, &o);

    lm_request_finish(r);
    curl_easy_reset(h); /* keeps live connections and TLS sessions */
    r->max_body = (size_t)o.max_body;
    r->timeout_ms = o.timeout_ms;
    r->errbuf[0] = '\0';

    lua_getfield(L, idx, "headers");
    for (i = 1; i <= o.nheaders; i++) {
        struct curl_slist *grown;
        lua_rawgeti(L, -1, i);
        grown = curl_slist_append(r->headers, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (grown == NULL) {
            lm_request_finish(r);
            luaL_error(L, "out of memory");
        }
        r->headers = grown;
    }
    lua_pop(L, 1);

    curl_easy_setopt(h, CURLOPT_URL, o.url);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o.max_body);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, o.verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, o.verify ? 2L : 0L);
    if (o.ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, o.ca_file);
    if (o.ca_path)
        curl_easy_setopt(h, CURLOPT_CAPATH, o.ca_path);
    if (o.proxy)
        curl_easy_setopt(h, CURLOPT_PROXY, o.proxy); /* "" turns off proxies from the environment */
    if (o.no_proxy)
        curl_easy_setopt(h, CURLOPT_NOPROXY, o.no_proxy);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
}

/* Pushes a table of the last response's headers, names lower-cased, repeats joined by ", ". */
static void push_headers(lua_State *L, const lm_buffer *head)
{
    const char *p = head->data, *end = head->data + head->len;
    lua_newtable(L);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && colon > p && colon - p < 128) {
            char name[128];
            size_t i, nlen = (size_t)(colon - p);
            const char *v = colon + 1, *vend = line_end;
            for (i = 0; i < nlen; i++)
                name[i] = (char)tolower((unsigned char)p[i]);
            while (v < vend && (*v == ' ' || *v == '\t'))
                v++;
            while (vend > v && (vend[-1] == '\r' || vend[-1] == ' ' || vend[-1] == '\t'))
                vend--;
            lua_pushlstring(L, name, nlen);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(vend - v));
            } else {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(vend - v));
                lua_concat(L, 3);
            }
            lua_rawset(L, -3);
        }
        p = eol ? eol + 1 : end;
    }
}

/* Pushes nil, kind, message, curl_code for a failed transfer, in our words, never libcurl's. */
static void push_failure(lua_State *L, lm_request *r, CURLcode code)
{
    const char *kind = "network";
    const char *text;
    char buf[160];
    long os_errno = 0;
    curl_off_t connect_us = 0;

    if (r->too_large || code == CURLE_FILESIZE_EXCEEDED) {
        kind = "too_large";
        snprintf(buf, sizeof buf, "response larger than the limit of %lu bytes", (unsigned long)r->max_body);
        text = buf;
    } else if (r->out_of_memory) {
        kind = "memory";
        text = "out of memory while receiving the response";
    } else {
        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
            kind = "timeout";
            curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
            if (connect_us == 0) {
                text = "timed out while connecting";
            } else {
                snprintf(buf, sizeof buf, "no complete response within %ld ms", r->timeout_ms);
                text = buf;
            }
            break;
        case CURLE_COULDNT_RESOLVE_HOST:
            text = "could not resolve the host name";
            break;
        case CURLE_COULDNT_RESOLVE_PROXY:
            text = "could not resolve the proxy host name";
            break;
        case CURLE_COULDNT_CONNECT:
            curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
            if (os_errno != 0) {
                snprintf(buf, sizeof buf, "could not connect: %s", strerror((int)os_errno));
                text = buf;
            } else {
                text = "could not connect";
            }
            break;
        case CURLE_PEER_FAILED_VERIFICATION:
            kind = "tls";
            text = "TLS certificate verification failed (set ca_file or ca_path to trust its issuer)";
            break;
        case CURLE_SSL_CACERT_BADFILE:
            kind = "tls";
            text = "cannot read the CA certificates named by ca_file or ca_path";
            break;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
            kind = "tls";
            text = "TLS handshake failed";
            break;
        case CURLE_GOT_NOTHING:
            text = "server closed the connection without a response";
            break;
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
            text = "connection broken before the response was complete";
            break;
        case CURLE_BAD_CONTENT_ENCODING:
            kind = "decode";
            text = "response body could not be decompressed";
            break;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
            kind = "usage";
            text = "the URL is not a valid http:// or https:// URL";
            break;
        default:
            snprintf(buf, sizeof buf, "transfer failed (libcurl error %d)", (int)code);
            text = buf;
        }
    }
    lua_pushnil(L);
    lua_pushstring(L, kind);
    lua_pushstring(L, text);
    lua_pushinteger(L, code);
}

int lm_request_push_result(lua_State *L, lm_request *r, CURLcode code)
{
    long status = 0, connects = 0;
    if (code != CURLE_OK || r->too_large || r->out_of_memory) {
        push_failure(L, r, code);
        lm_request_finish(r);
        return 4;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &connects);
    lua_pushinteger(L, status);
    push_headers(L, &r->head);
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_pushinteger(L, connects);
    lm_request_finish(r);
    return 4;
}

void lm_request_finish(lm_request *r)
{
    if (r->headers) {
        curl_slist_free_all(r->headers);
        r->headers = NULL;
    }
    if (r->easy) /* the list is gone: libcurl must not keep a pointer to it */
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    lm_buffer_reset(&r->body, KEEP_BUFFER_BYTES);
    lm_buffer_reset(&r->head, KEEP_BUFFER_BYTES);
    r->too_large = 0;
    r->out_of_memory = 0;
}

void lm_request_free(lm_request *r)
{
    lm_request_finish(r);
    lm_buffer_free(&r->body);
    lm_buffer_free(&r->head);
    if (r->easy) {
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
}
