/* core.random_id() -> 32 lowercase hex digits: 128 bits from the OS's random source, for
 * idempotency keys. Nothing is kept in the process, so a forked child never repeats its parent's
 * ids. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

#include "compat.h"
#include "random.h"

/* Fills buf from the kernel, never from userspace state, so forked children cannot repeat their
 * parent's ids. Returns 0, or -1 with a reason in why. */
static int os_random(unsigned char *buf, size_t n, char *why, size_t whysize)
{
    size_t got = 0;
    int fd;
    struct stat st;
#if defined(__linux__)
    while (got < n) {
        /* GRND_NONBLOCK: before the pool is seeded (early boot) this fails with EAGAIN instead of
         * blocking the host; /dev/urandom below never blocks. */
        ssize_t r = getrandom(buf + got, n - got, GRND_NONBLOCK);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    if (got == n)
        return 0;
    snprintf(why, whysize, "getrandom: %s; ", strerror(errno));
#else
    why[0] = '\0';
#endif
    got = 0;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        size_t used = strlen(why);
        snprintf(why + used, whysize - used, "/dev/urandom: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
        size_t used = strlen(why);
        snprintf(why + used, whysize - used, "/dev/urandom: not a character device");
        close(fd);
        return -1;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r > 0)
            got += (size_t)r;
        else if (r < 0 && errno == EINTR)
            continue;
        else {
            size_t used = strlen(why);
            snprintf(why + used, whysize - used, "/dev/urandom: %s", r == 0 ? "end of file" : strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    return 0;
}

static int core_random_id(lua_State *L)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char bytes[16];
    char text[32], why[256];
    int i;
    if (os_random(bytes, sizeof bytes, why, sizeof why) != 0)
        return luaL_error(L, "core.random_id: no OS random source works (%s)", why);
    for (i = 0; i < 16; i++) {
        text[2 * i] = hex[bytes[i] >> 4];
        text[2 * i + 1] = hex[bytes[i] & 15];
    }
    lua_pushlstring(L, text, sizeof text);
    return 1;
}

void lm_random_register(lua_State *L)
{
    lua_pushcfunction(L, core_random_id);
    lua_setfield(L, -2, "random_id");
}
