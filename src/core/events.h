/* events: what the core does with the event log (store.h "event log"):
 * the one JSON form of an event (API, stream and webhooks), type lists,
 * the node health edges and the log's retention (a keeper thread), and
 * webhook delivery (webhook.c).
 *
 * Event types. Those the store logs by itself from the changes it writes:
 * vm.created, vm.creation_failed, vm.started, vm.stopped, vm.paused,
 * vm.updated, vm.resized, vm.moved, vm.deleted, vm.lost, vm.drift,
 * job.failed, node.up, node.down. Others are logged by the code that makes
 * the change inside the change's own store transaction:
 * EV_NODE_CORDONED, EV_NODE_UNCORDONED (store_kv_write_logged),
 * EV_VM_REINSTALLED (store_vm_update_logged, with the record's new OS);
 * EV_VM_GUEST_READY and EV_VM_GUEST_SILENT (store_guest_close, with the
 * guest check's outcome: guestwatch.h);
 * STORE_EV_WEBHOOK_MOVED and STORE_EV_WEBHOOK_FORGOTTEN by the store's seek
 * and forget of a webhook cursor;
 * vm.moved for a move a job makes is logged by the record write that
 * changes its node.
 *
 * Webhooks. Each [webhook NAME] gets a thread that, while it holds the
 * webhook's lease in the store (one proxd instance at a time), posts every
 * event of the types it wants, one at a time, in log order (so in order per
 * VM), through the transport the API layer installs (the core makes no
 * HTTP itself). A failed post is tried again with a growing pause until it
 * succeeds or the event is older than max_age (dropped, counted, warned).
 * The cursor moves only after a 2xx, so delivery is at least once: a post
 * whose answer was lost, or whose instance died before moving the cursor,
 * is made again with the same Proxd-Delivery id.
 *
 * Threads: everything here is thread-safe. */
#ifndef CORE_EVENTS_H
#define CORE_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct core;

#define EV_NODE_CORDONED "node.cordoned"
#define EV_NODE_UNCORDONED "node.uncordoned"
#define EV_VM_REINSTALLED "vm.reinstalled"
#define EV_VM_MOVED "vm.moved"
#define EV_VM_GUEST_READY "vm.guest_ready"   /* guestwatch.h */
#define EV_VM_GUEST_SILENT "vm.guest_silent" /* guestwatch.h */

/* {"id", "type", "time" (RFC 3339 UTC, ms), "owner", "vmid", "node", "job",
 * "data"}: a new reference. */
json_t *event_to_json(const struct store_event *e);
/* Does `type` match the list "vm.created, vm.*, *"? */
bool event_type_match(const char *list, const char *type);
/* Is s a valid type or prefix ("vm.started", "vm.*", "*") for a filter? */
bool event_type_valid(const char *s);

/* The HTTP post the API layer supplies. headers: "Name: value" lines.
 * Returns 0 with *status the HTTP status, or -1 with why filled (no
 * answer: refused, timed out, given up...). Called from webhook threads.
 * give_up (may be NULL) is asked with ud while the post is under way, at
 * least about once a second: nonzero ends it at once (proxd stops; the
 * event stays undelivered and is posted again by the next holder). */
struct webhook_post {
    const char *url;
    const char *const *headers;
    size_t nheaders;
    const char *body;
    size_t len;
    long timeout_ms;
    int (*give_up)(void *ud);
    void *ud;
};
struct webhook_transport {
    int (*post)(void *ctx, const struct webhook_post *p, long *status, char *why, size_t whylen);
    void *ctx;
};
/* Install before core_start (without one, webhooks are not delivered and
 * a warning says so). t is copied. */
void core_set_webhook_transport(struct core *k, const struct webhook_transport *t);

/* "t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>" into out. */
void webhook_signature(const char *secret, int64_t t, const char *body, size_t len, char out[96]);

/* Per webhook, since start, in this instance. */
struct webhook_stat {
    char name[32];
    uint64_t delivered, retried, dropped;
    int64_t queue_age_ms; /* age of the oldest event waiting (0: none, or not the holder) */
    bool holder;          /* this instance holds the webhook's lease */
};
/* Fills up to max entries; returns how many webhooks there are. */
size_t core_webhook_stats(struct core *k, struct webhook_stat *out, size_t max);

#endif
