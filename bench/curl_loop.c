/* The floor for a sequential call: one libcurl easy handle reused for N GETs of the same URL with
 * the same request headers limitry sends, the body appended to a buffer, nothing decoded.
 *   curl_loop URL N MAX_SECONDS [HEADER...]      prints "calls seconds"
 * Stops after N calls or MAX_SECONDS, whichever comes first (checked every 64 calls).
 * LOOP_PREPARSED_URL=1 in the environment: the URL is set as limitry sets it (loop_common.h). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop_common.h"

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: curl_loop URL N MAX_SECONDS [HEADER...]\n");
        return 2;
    }
    long n = atol(argv[2]);
    double max_s = atof(argv[3]);
    struct curl_slist *headers = NULL;
    for (int i = 4; i < argc; i++) headers = curl_slist_append(headers, argv[i]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *h = curl_easy_init();
    struct buf b = {0};
    if (set_url(h, argv[1]) != 0) {
        fprintf(stderr, "%s: libcurl refused the URL\n", argv[0]);
        return 1;
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    double t0 = now();
    long done = 0;
    while (done < n) {
        b.len = 0;
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 200 || b.len == 0) {
            fprintf(stderr, "curl_loop: call %ld failed: %s, status %ld\n", done + 1, curl_easy_strerror(rc), status);
            return 1;
        }
        done++;
        if ((done & 63) == 0 && now() - t0 > max_s) break;
    }
    printf("%ld %.6f\n", done, now() - t0);
    curl_easy_cleanup(h);
    curl_slist_free_all(headers);
    free(b.p);
    curl_global_cleanup();
    return 0;
}
