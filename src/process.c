#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "process.h"

/* A socket libcurl opened through us. libcurl does not always close through the close callback
 * (a connect that timed out, libcurl 7.88), so an entry may outlive its socket and its number be
 * handed out again, to anything: the device and inode say whether the descriptor is still the
 * socket the entry was made for, before anything is done to it. */
typedef struct {
    curl_socket_t fd;
    pid_t pid;
    const void *tag;
    int dead; /* replaced by a socket at EOF (see lm_sockets_drop_stale) */
    dev_t dev;
    ino_t ino;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *entries;
static size_t count, cap;

/* Lua unloads the module with the last state that loaded it: the list must not outlive its use. */
static void release_if_empty(void)
{
    if (count == 0) {
        free(entries);
        entries = NULL;
        cap = 0;
    }
}

/* Whether descriptor fd is (still) the file whose identity is dev/ino. */
static int same_file(curl_socket_t fd, dev_t dev, ino_t ino)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

static void identify(entry *e)
{
    struct stat st;
    if (fstat(e->fd, &st) == 0) {
        e->dev = st.st_dev;
        e->ino = st.st_ino;
    } else {
        e->dev = 0;
        e->ino = 0;
    }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int init_failed;

/* getpid(2) is a system call in glibc >= 2.25 and the fork checks ask several times per async
 * call; the pid is kept here, and a child's after fork(). 0: not known (no handler yet). */
static volatile pid_t my_pid;

pid_t lm_pid(void)
{
    pid_t p = my_pid;
    return p != 0 ? p : getpid();
}

/* A fork from a thread while another held the lock leaves it locked forever in the child. */
static void child_after_fork(void)
{
    pthread_mutex_init(&lock, NULL);
    my_pid = getpid();
}

static void global_init(void)
{
    const char *skip = getenv("LIMITRY_NO_CURL_INIT");
    if (skip == NULL || skip[0] == '\0')
        init_failed = curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK;
    if (pthread_atfork(NULL, NULL, child_after_fork) == 0)
        my_pid = getpid();
}

int lm_global_init(void)
{
    pthread_once(&once, global_init);
    return init_failed ? -1 : 0;
}

/* libcurl callbacks: C only. */
static curl_socket_t on_open(void *tag, curlsocktype purpose, struct curl_sockaddr *a)
{
    curl_socket_t fd;
    size_t i;
    pid_t me = lm_pid();
    (void)purpose;
    fd = socket(a->family, a->socktype, a->protocol);
    if (fd == CURL_SOCKET_BAD)
        return fd;
    pthread_mutex_lock(&lock);
    /* An entry of this process for this number is one whose socket was closed without telling
     * us (the number was free to be given again): it is this socket's now. */
    for (i = 0; i < count; i++) {
        if (entries[i].fd == fd && entries[i].pid == me) {
            entries[i].tag = tag;
            entries[i].dead = 0;
            identify(&entries[i]);
            pthread_mutex_unlock(&lock);
            return fd;
        }
    }
    if (count == cap) {
        size_t grown = cap ? cap * 2 : 16;
        entry *e = (entry *)realloc(entries, grown * sizeof(entry));
        if (e == NULL) {
            pthread_mutex_unlock(&lock);
            close(fd);
            return CURL_SOCKET_BAD;
        }
        entries = e;
        cap = grown;
    }
    entries[count].fd = fd;
    entries[count].pid = me;
    entries[count].tag = tag;
    entries[count].dead = 0;
    identify(&entries[count]);
    count++;
    pthread_mutex_unlock(&lock);
    return fd;
}

static int on_close(void *tag, curl_socket_t fd)
{
    size_t i;
    pid_t me = lm_pid();
    (void)tag;
    pthread_mutex_lock(&lock);
    for (i = 0; i < count; i++) {
        if (entries[i].fd == fd && entries[i].pid == me) {
            entries[i] = entries[--count];
            break;
        }
    }
    release_if_empty();
    pthread_mutex_unlock(&lock);
    return close(fd);
}

CURLcode lm_sockets_track(CURL *h, const void *tag)
{
    CURLcode rc = curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, (void *)tag);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_close);
    return rc;
}

void lm_sockets_drop_inherited(void)
{
    size_t i = 0;
    pid_t me = lm_pid();
    pthread_mutex_lock(&lock);
    while (i < count) {
        if (entries[i].pid != me) {
            /* Only if the number is still the parent's socket: it may name anything by now. */
            if (same_file(entries[i].fd, entries[i].dev, entries[i].ino))
                close(entries[i].fd);
            entries[i] = entries[--count];
        } else {
            i++;
        }
    }
    release_if_empty();
    pthread_mutex_unlock(&lock);
}

/* Puts, under the same descriptor number, one end of a socket pair whose other end is closed:
 * the TCP connection is closed now, and libcurl, which still holds the number, finds a
 * connection at EOF, so its own liveness check discards it instead of reading what waited. */
static int make_dead(curl_socket_t fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return -1;
    close(sv[1]);
    if (dup2(sv[0], fd) < 0) {
        close(sv[0]);
        return -1;
    }
    close(sv[0]);
    return 0;
}

int lm_sockets_drop_stale(const void *tag, int (*busy)(void *ud, curl_socket_t fd), void *ud)
{
    /* One poll(2) for a batch of idle sockets, not one per socket: with many connections in a
     * pool this check runs on every turn that started a transfer. */
    enum { BATCH = 64 };
    struct pollfd p[BATCH];
    size_t i = 0, j;
    int dropped = 0;
    pid_t me = lm_pid();
    pthread_mutex_lock(&lock);
    while (i < count) {
        nfds_t n = 0;
        for (; i < count && n < BATCH; i++) {
            if (entries[i].tag != tag || entries[i].pid != me || entries[i].dead)
                continue;
            if (busy && busy(ud, entries[i].fd))
                continue;
            p[n].fd = entries[i].fd;
            p[n].events = POLLIN;
            p[n].revents = 0;
            n++;
        }
        if (n == 0 || poll(p, n, 0) <= 0)
            continue;
        for (j = 0; j < n; j++) {
            size_t k;
            if (!(p[j].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
                continue;
            for (k = 0; k < count; k++) {
                if (entries[k].fd == p[j].fd && entries[k].pid == me && entries[k].tag == tag)
                    break;
            }
            if (k == count)
                continue;
            if (!same_file(entries[k].fd, entries[k].dev, entries[k].ino)) {
                /* Closed behind our back: the number is not ours to touch any more. */
                entries[k] = entries[--count];
                continue;
            }
            if (make_dead(p[j].fd) != 0)
                continue;
            /* make_dead keeps the descriptor number: the entry now names the socket pair's end */
            entries[k].dead = 1;
            identify(&entries[k]);
            dropped++;
        }
    }
    pthread_mutex_unlock(&lock);
    return dropped;
}

/* The registry of a process whose libcurl skipped the close callback is still allocated when the
 * module is unloaded (Lua unloads it with the last state that loaded it): freed then. */
#if defined(__GNUC__)
__attribute__((destructor)) static void release_at_unload(void)
{
    free(entries);
    entries = NULL;
    count = cap = 0;
}
#endif

void lm_sockets_forget(const void *tag)
{
    size_t i = 0;
    pid_t me = lm_pid();
    pthread_mutex_lock(&lock);
    while (i < count) {
        if (entries[i].tag == tag && entries[i].pid == me)
            entries[i] = entries[--count];
        else
            i++;
    }
    release_if_empty();
    pthread_mutex_unlock(&lock);
}

size_t lm_sockets_tracked(size_t *entries_kept)
{
    size_t i, n = 0;
    pid_t me = lm_pid();
    pthread_mutex_lock(&lock);
    for (i = 0; i < count; i++)
        if (entries[i].pid == me && same_file(entries[i].fd, entries[i].dev, entries[i].ino))
            n++;
    *entries_kept = count;
    pthread_mutex_unlock(&lock);
    return n;
}
