/* svc: sd_notify(3) and sd_listen_fds(3) for proxd (svc.h). */
#include "proxd/svc.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

int svc_listen_fd(char *err, size_t errlen)
{
    int n = sd_listen_fds(1);
    if (n == 0)
        return SVC_NO_SOCKET;
    if (n < 0) {
        snprintf(err, errlen, "the sockets systemd passed: %s", strerror(-n));
        return SVC_BAD_SOCKET;
    }
    if (n != 1) {
        snprintf(err, errlen,
                 "systemd passed %d sockets; proxd listens on one (its unit's socket needs one "
                 "ListenStream=)",
                 n);
        return SVC_BAD_SOCKET;
    }
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
        (sd_is_socket(fd, AF_INET, 0, -1) <= 0 && sd_is_socket(fd, AF_INET6, 0, -1) <= 0)) {
        snprintf(err, errlen,
                 "the socket systemd passed is not a listening TCP socket (its unit needs "
                 "ListenStream=ADDRESS:PORT)");
        return SVC_BAD_SOCKET;
    }
    /* the HTTP loop accepts until EAGAIN: on a blocking socket (systemd's
     * default) its last accept would wait for the next client */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "the socket systemd passed: cannot make it non-blocking: %s",
                 strerror(errno));
        return SVC_BAD_SOCKET;
    }
    return fd;
}

/* One message; a failure is logged once (a NOTIFY_SOCKET that went away
 * would otherwise be told at every status). */
static void notify(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void notify(const char *what, const char *fmt, ...)
{
    static int told;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int rc = sd_notify(0, msg);
    if (rc < 0 && !told++)
        log_warn("proxd", "cannot tell systemd %s: %s", what, strerror(-rc));
}

void svc_ready(const char *status)
{
    notify("proxd is ready", "READY=1\nSTATUS=%.400s", status);
}

void svc_starting(const char *status, int64_t extend_ms)
{
    if (extend_ms > 0)
        notify("the start goes on", "STATUS=%.400s\nEXTEND_TIMEOUT_USEC=%" PRId64, status,
               extend_ms * 1000);
    else
        notify("the start goes on", "STATUS=%.400s", status);
}

void svc_stopping(const char *status)
{
    notify("the stop", "STOPPING=1\nSTATUS=%.400s", status);
}
