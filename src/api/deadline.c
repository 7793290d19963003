/* deadline: hard time limits on the parts of a request libmicrohttpd only
 * bounds by inactivity.
 *
 * MHD's connection timeout is an idle timer: a client that sends one header
 * line every few seconds keeps its connection (and one of its address's
 * PER_IP_LIMIT slots) for ever. Here every connection carries a deadline:
 *   - waiting for a request line (just opened, or after an answer): the
 *     idle_timeout, counted from then, whatever trickles in;
 *   - request line seen (MHD's URI log callback): header_timeout to finish
 *     the headers;
 *   - headers complete: none here (the body is capped and MHD's idle timer
 *     still applies; event streams are long by design).
 * A timer thread shuts down the sockets whose deadline passed; MHD then
 * sees the end of the stream and closes the connection as usual. The entry
 * leaves the list on MHD's "closed" notification, which comes before MHD
 * closes the descriptor, so a shutdown() under the list's lock never hits a
 * descriptor that was reused. */
#include "api/api_int.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <stdint.h>
#include <sys/socket.h>

#define TICK_MS 200

struct dl_conn {
    int fd;
    int64_t until; /* mono ms; INT64_MAX: none */
    bool cut;
    struct dl_conn *prev, *next;
};

struct deadlines {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dl_conn *head;
    int64_t idle_ms, header_ms;
    bool stopping, running;
    pthread_t timer;
    uint64_t cut; /* connections cut, for the log */
};

static void *timer_main(void *arg)
{
    struct deadlines *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stopping) {
        int64_t now = mono_ms();
        int n = 0;
        for (struct dl_conn *c = d->head; c; c = c->next) {
            if (!c->cut && now > c->until) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
                n++;
            }
        }
        d->cut += (uint64_t)n;
        if (n)
            log_debug("api", "%d connections cut: request line or headers too slow", n);
        if (!d->head) { /* nothing to time: sleep until a connection opens */
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

struct deadlines *deadlines_new(int idle_s, int header_s)
{
    struct deadlines *d = xcalloc(1, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->idle_ms = (int64_t)idle_s * 1000;
    d->header_ms = (int64_t)header_s * 1000;
    d->running = mem_thread_start(&d->timer, timer_main, d) == 0;
    if (!d->running)
        log_error("api", "cannot start the request deadline timer");
    return d;
}

void deadlines_free(struct deadlines *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (d->running)
        pthread_join(d->timer, NULL);
    /* MHD_stop_daemon has closed every connection (and told us) by now */
    while (d->head) {
        struct dl_conn *c = d->head;
        d->head = c->next;
        free(c);
    }
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

void deadlines_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                             enum MHD_ConnectionNotificationCode toe)
{
    struct deadlines *d = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct dl_conn *c = xcalloc(1, sizeof *c);
        c->fd = ci ? ci->connect_fd : -1;
        c->cut = c->fd < 0;
        pthread_mutex_lock(&d->mu);
        c->until = mono_ms() + d->idle_ms;
        c->next = d->head;
        if (d->head)
            d->head->prev = c;
        else
            pthread_cond_signal(&d->cv); /* the timer sleeps while there is none */
        d->head = c;
        pthread_mutex_unlock(&d->mu);
        *socket_context = c;
        return;
    }
    struct dl_conn *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&d->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&d->mu);
    free(c);
    *socket_context = NULL;
}

/* The connection's entry: MHD keeps it as the socket context. */
static struct dl_conn *entry(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_until(struct deadlines *d, struct MHD_Connection *conn, int64_t delta)
{
    struct dl_conn *c = entry(conn);
    if (!c)
        return;
    pthread_mutex_lock(&d->mu);
    c->until = delta == INT64_MAX ? INT64_MAX : mono_ms() + delta;
    pthread_mutex_unlock(&d->mu);
}

void *deadlines_on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)uri;
    struct deadlines *d = cls;
    set_until(d, conn, d->header_ms);
    return NULL; /* the request's context starts empty (server.c) */
}

void deadlines_headers_done(struct deadlines *d, struct MHD_Connection *conn)
{
    set_until(d, conn, INT64_MAX);
}

void deadlines_answered(struct deadlines *d, struct MHD_Connection *conn)
{
    set_until(d, conn, d->idle_ms);
}
