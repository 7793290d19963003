/* proxctl internals: the HTTP client of proxd's API, output helpers, and the
 * command handlers. Exit codes scripts can rely on (also in proxctl(1)):
 *   0 success, 1 the operation failed (a job ended failed), 2 usage or
 *   invalid input (400), 3 not found (404), 4 not authorised (401/403),
 *   5 server or network error, 6 conflict or quota (409). */
#ifndef CLI_CLI_H
#define CLI_CLI_H

#include "common/buf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_NOTFOUND = 3,
    EXIT_AUTH = 4,
    EXIT_SERVER = 5,
    EXIT_CONFLICT = 6,
};

struct cli {
    char server[512]; /* http://127.0.0.1:8080 */
    char token[512];
    bool json;            /* --json: print the API's JSON */
    bool tty;             /* stdout is a terminal: progress bars */
    bool quiet;           /* --no-wait: return after queuing */
    bool wait_guest;      /* --wait-guest: after the job, wait for its guest check */
    void *curl;           /* the one libcurl handle of every call: its connection is kept alive */
    const char *idem_key; /* when set: the Idempotency-Key header of the calls */
    bool hush_net;        /* a network error is not printed: said once, the call is repeated */
};

/* One API call. body may be NULL. *out receives the parsed JSON answer (or
 * NULL). Returns the HTTP status, or -1 on a network error (message printed). */
long cli_call(struct cli *c, const char *method, const char *path, json_t *body, json_t **out);
/* Map an HTTP status to an exit code, printing the API's error to stderr. */
int cli_fail(long status, json_t *answer);
/* The same mapping, printing nothing (answer: the API's error, or NULL;
 * 403 quota_exceeded is EXIT_CONFLICT). */
int cli_exit_code(long status, json_t *answer);
/* Free the connection (end of main). */
void cli_close(struct cli *c);
/* One call expecting status `want`: EXIT_OK with *out the answer (the caller
 * frees it), or the exit code with the API's error printed and *out NULL. */
int cli_request(struct cli *c, const char *method, const char *path, json_t *body, long want,
                json_t **out);
/* GET a listing page by page into `all`: first is the path of the first page
 * (with its query), items the member holding each page's array, and each
 * page's "next" (a number or a string; null on the last) is passed as
 * cursor_param to ask for the following one. Stops after `max` items (the
 * extra ones of the last page dropped). Returns an exit code. */
int cli_pages(struct cli *c, const char *first, const char *items, const char *cursor_param,
              size_t max, json_t *all);
/* After a call that queues a job (answer 200 or 202 with "job"): anything
 * else is reported as an error; with --no-wait the job id (or the JSON) is
 * printed; otherwise the job is followed and the VM's state printed (vmid
 * NULL: the answer's "vmid"). Takes ans. Returns an exit code. */
int cli_accepted(struct cli *c, long st, json_t *ans, const char *vmid);
/* Read the Server-Sent Events of path (/v1/jobs/<id>/events,
 * /v1/events/stream?...), calling fn(ev) with each event's data; returns 0
 * when the stream ended, -1 when it could not be had or broke (the caller
 * polls instead). */
int cli_sse(struct cli *c, const char *path, void (*fn)(void *ud, json_t *ev), void *ud);

/* Append "&key=value" to a query string, the value percent-encoded (a
 * filter value with '&', '=', '#' or a space is that value, not more
 * parameters). False, said naming --key, when the query would pass its
 * buffer's bound (the caller exits EXIT_USAGE). */
bool cli_query_add(struct buf *q, const char *key, const char *value);

/* A whole decimal number for opt (an option, "VMID") in [min, max] into
 * *out; else said, naming opt, and false (the caller exits EXIT_USAGE). */
bool cli_int(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out);

/* Sizes: "2G", "512M", "40G", "1T", bare numbers in the unit given. */
bool cli_size_mb(const char *s, int64_t *mb);
bool cli_size_gb(const char *s, int64_t *gb);

void cli_print_json(json_t *v);
/* With --json: print v and return true (the caller prints nothing else). */
bool cli_json_out(const struct cli *c, json_t *v);
/* A member for a table cell: "-" when absent, not a string or empty. */
const char *cli_str(json_t *o, const char *k);
/* A member as a number: 0 when absent or not a number. */
long long cli_num(json_t *o, const char *k);
/* Follow a job to its end with progress; returns an exit code. */
int cli_follow_job(struct cli *c, const char *job);

int cmd_vm(struct cli *c, int argc, char **argv);
/* vm create --from FILE|- (cmd_batch.c): one creation per JSON line. */
int cmd_create_from(struct cli *c, const char *path);
int cmd_job(struct cli *c, int argc, char **argv);
int cmd_node(struct cli *c, int argc, char **argv);
/* node cordon|uncordon|drain NODE (cmd_node.c) */
int cmd_node_maint(struct cli *c, int argc, char **argv);
int cmd_os(struct cli *c, int argc, char **argv);
int cmd_events(struct cli *c, int argc, char **argv); /* cmd_events.c */
/* vm snapshot ... (cmd_snap.c): argv[0] is list|create|delete|rollback. */
int cmd_snapshot(struct cli *c, int argc, char **argv);
/* status [--hours N] [--webhook-age S] (cmd_status.c): what needs
 * attention; exit 1 if anything. */
int cmd_status(struct cli *c, int argc, char **argv);
/* webhook list|seek|forget (cmd_webhook.c): argv[0] is the subcommand. */
int cmd_webhook(struct cli *c, int argc, char **argv);
/* ippool list|show|hold|unhold|add-range (cmd_ippool.c). */
int cmd_ippool(struct cli *c, int argc, char **argv);

#endif
