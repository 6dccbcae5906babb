/* The floor for async calls: one libcurl multi handle keeping DEPTH transfers of the same URL in
 * flight, re-adding an easy handle as soon as its transfer finishes, until N have completed.
 *   multi_loop URL DEPTH N MAX_SECONDS [HEADER...]      prints "calls seconds minor_page_faults"
 * Stops after N completed calls or MAX_SECONDS, whichever comes first.
 * LOOP_PREPARSED_URL=1 in the environment: the URL is set as limitry sets it (loop_common.h). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "loop_common.h"

struct slot { CURL *h; struct buf b; };

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: multi_loop URL DEPTH N MAX_SECONDS [HEADER...]\n");
        return 2;
    }
    int depth = atoi(argv[2]);
    long n = atol(argv[3]);
    double max_s = atof(argv[4]);
    if (depth < 1 || depth > 4096) return 2;
    struct curl_slist *headers = NULL;
    for (int i = 5; i < argc; i++) headers = curl_slist_append(headers, argv[i]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    /* Keep a connection per transfer in flight: the default cache (4x the handles) is already
     * enough, but say so rather than depend on it. */
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)depth);
    struct slot *slots = calloc((size_t)depth, sizeof *slots);
    long started = 0, done = 0;
    for (int i = 0; i < depth; i++) {
        CURL *h = curl_easy_init();
        slots[i].h = h;
        if (set_url(h, argv[1]) != 0) {
            fprintf(stderr, "%s: libcurl refused the URL\n", argv[0]);
            return 1;
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &slots[i].b);
        curl_easy_setopt(h, CURLOPT_PRIVATE, &slots[i]);
    }
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now();
    for (int i = 0; i < depth && started < n; i++, started++) curl_multi_add_handle(m, slots[i].h);
    int running = 1, failed = 0;
    while (done < started && !failed) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *h = msg->easy_handle;
            CURLcode rc = msg->data.result;
            struct slot *s;
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            curl_multi_remove_handle(m, h);
            if (rc != CURLE_OK || status != 200 || s->b.len == 0) {
                fprintf(stderr, "multi_loop: a call failed: %s, status %ld\n", curl_easy_strerror(rc), status);
                failed = 1;
                break;
            }
            done++;
            s->b.len = 0;
            if (started < n && now() - t0 <= max_s) {
                curl_multi_add_handle(m, h);
                started++;
            }
        }
        if (done < started && !failed) curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double elapsed = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    if (!failed) printf("%ld %.6f %ld\n", done, elapsed, ru1.ru_minflt - ru0.ru_minflt);
    for (int i = 0; i < depth; i++) {
        curl_multi_remove_handle(m, slots[i].h);
        curl_easy_cleanup(slots[i].h);
        free(slots[i].b.p);
    }
    free(slots);
    curl_multi_cleanup(m);
    curl_slist_free_all(headers);
    curl_global_cleanup();
    return failed;
}
