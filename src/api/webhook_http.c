/* webhook_http: the HTTP post behind core/events.h's webhook transport,
 * with libcurl (a handle per post: webhooks post one event at a time).
 * Only http and https, no redirects followed (a receiver that moved must
 * be reconfigured, not followed blindly), the answer's body read and
 * dropped past 64 KiB; a post is given up when the core asks (it stops).
 * Thread-safe (curl_global_init ran at start). */
#include "api/api.h"

#include "core/events.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#define ANSWER_MAX (64 * 1024)

static size_t sink(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    size_t *seen = arg;
    *seen += size * n;
    return *seen > ANSWER_MAX ? 0 : size * n; /* 0: curl stops reading */
}

/* curl asks this about once a second, and as data moves */
static int progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                    curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const struct webhook_post *p = arg;
    return p->give_up(p->ud) != 0; /* nonzero: CURLE_ABORTED_BY_CALLBACK */
}

static int http_post(void *ctx, const struct webhook_post *p, long *status, char *why,
                     size_t whylen)
{
    (void)ctx;
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(why, whylen, "cannot make a curl handle");
        return -1;
    }
    struct curl_slist *h = NULL;
    for (size_t i = 0; i < p->nheaders; i++)
        h = curl_slist_append(h, p->headers[i]);
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    char err[CURL_ERROR_SIZE] = "";
    size_t seen = 0;
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, p->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &seen);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "proxd-webhook");
    if (p->give_up) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)p);
    }
    CURLcode rc = curl_easy_perform(c);
    int out = 0;
    if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && seen > ANSWER_MAX)) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
        snprintf(why, whylen, "given up: proxd stops (posted again at the next start)");
        out = -1;
    } else {
        snprintf(why, whylen, "%s", err[0] ? err : curl_easy_strerror(rc));
        out = -1;
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return out;
}

void api_webhook_transport(struct webhook_transport *out)
{
    out->post = http_post;
    out->ctx = NULL;
}
