/* Process-wide state: libcurl's global init (once), and the sockets libcurl opens through us,
 * recorded with the pid that opened them so that a forked child can tell inherited connections
 * (never to be used or closed by libcurl there) from its own. */
#ifndef LIMITRY_PROCESS_H
#define LIMITRY_PROCESS_H

#include <curl/curl.h>
#include <sys/types.h>

#include "core.h"

/* curl_global_init once per process, whatever the number of Lua states or threads; 0 or -1. */
LM_HIDDEN int lm_global_init(void);
/* getpid() without a system call once lm_global_init has run (kept right in a fork()ed child by
 * a pthread_atfork handler; a child made by a raw clone(2) is not seen, nor is the lock reset). */
LM_HIDDEN pid_t lm_pid(void);
/* Makes the sockets of h's next connections known to the registry, under tag (the connection
 * pool they belong to: the easy handle's own, or a multi handle's). */
LM_HIDDEN CURLcode lm_sockets_track(CURL *h, const void *tag);
/* In a forked child: closes (plain close(2): no FIN, no TLS close_notify, since the parent
 * still holds them) every socket opened by another process, and forgets them. */
LM_HIDDEN void lm_sockets_drop_inherited(void);
/* Idle sockets of pool tag with bytes or EOF waiting (an answer sent before any request, a 408,
 * a close) are closed and left at EOF for libcurl, so no request goes out on them and nothing
 * that waited there is read as an answer. Sockets for which busy(ud, fd) is true (transfers
 * running) are skipped; busy may be NULL when nothing runs. Returns how many were dropped. */
LM_HIDDEN int lm_sockets_drop_stale(const void *tag, int (*busy)(void *ud, curl_socket_t fd), void *ud);

/* After libcurl freed the pool tag (its handle), every socket it opened through it is closed:
 * entries still naming tag are ones it closed without the close callback, and are dropped. */
LM_HIDDEN void lm_sockets_forget(const void *tag);
/* Sockets of this process libcurl opened through us and still open, and (*entries_kept) the
 * registry's size, stale entries included (for checks and specs). */
LM_HIDDEN size_t lm_sockets_tracked(size_t *entries_kept);

#endif
