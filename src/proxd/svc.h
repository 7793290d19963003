/* svc: what proxd tells its service manager (systemd), and the listening
 * socket systemd may hand it (socket activation).
 *
 * Under a Type=notify unit, systemd learns that proxd is ready (its API
 * serves) rather than merely started, sees what a start is waiting for
 * (`systemctl status` shows STATUS=), lets a database wait outlast the
 * start timeout (each failed try extends it) and knows when a stop began.
 * Under proxd.socket, systemd holds the port: connections that come while
 * proxd restarts (an upgrade) wait in the socket's backlog instead of
 * being refused, and are served by the new process.
 *
 * Every call is a no-op outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS):
 * tests, a shell, another service manager. Errors are never fatal but
 * for a passed socket proxd cannot use. Threads: call from the main
 * thread. */
#ifndef PROXD_SVC_H
#define PROXD_SVC_H

#include <stddef.h>
#include <stdint.h>

/* The listening socket systemd passed (LISTEN_FDS, for this process):
 * its fd (>= 0, owned by the caller), SVC_NO_SOCKET when none was passed,
 * or SVC_BAD_SOCKET with err said (several sockets, or not a listening
 * TCP stream socket). The environment's LISTEN_* variables are removed. */
#define SVC_NO_SOCKET (-1)
#define SVC_BAD_SOCKET (-2)
int svc_listen_fd(char *err, size_t errlen);

/* The API serves: READY=1, with STATUS= text. */
void svc_ready(const char *status);
/* Still starting (a database that does not answer): STATUS= text and a
 * start timeout extended by extend_ms from now (0: not extended). */
void svc_starting(const char *status, int64_t extend_ms);
/* The stop began: STOPPING=1, with STATUS= text. */
void svc_stopping(const char *status);

#endif
