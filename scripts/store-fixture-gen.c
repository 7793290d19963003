/* store-fixture-gen: fills a store database with a known set of rows
 * through store.h, for the old-format fixtures of tests/store
 * (scripts/gen-store-fixtures.sh builds it against the previous release's
 * store, so the database has that release's schema; the test migrates it
 * and checks these rows survive). Usage: store-fixture-gen URL.
 * Exit status 0, or 1 with a message on the first failure. */
#include "store/store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct store_error e;

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != STORE_OK) {                                                                  \
            fprintf(stderr, "%s: %s\n", #call, e.message);                                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define T0 1700000000000LL /* every fixed time of the fixture */

static void vm(store *s, int vmid, const char *owner, const char *node, enum vm_state st,
               const char *pending)
{
    struct vm_rec r = {0};
    r.vmid = vmid;
    snprintf(r.os, sizeof r.os, "debian12");
    snprintf(r.name, sizeof r.name, "vm-%d", vmid);
    snprintf(r.owner, sizeof r.owner, "%s", owner);
    snprintf(r.node, sizeof r.node, "%s", node);
    snprintf(r.power, sizeof r.power, "running");
    r.state = st;
    r.cores = 2;
    r.memory_mb = 2048;
    r.disk_gb = 20;
    r.created_at = T0 + vmid;
    r.pending = pending ? json_loads(pending, 0, NULL) : NULL;
    TRY(store_vm_insert(s, &r, &e));
    vm_rec_release(&r);
}

static void job(store *s, const char *id, const char *kind, int vmid, int64_t created,
                const char *request)
{
    struct job_rec j = {0};
    snprintf(j.id, sizeof j.id, "%s", id);
    snprintf(j.kind, sizeof j.kind, "%s", kind);
    snprintf(j.owner, sizeof j.owner, "alice");
    snprintf(j.step, sizeof j.step, "queued");
    j.state = JOB_QUEUED;
    j.vmid = vmid;
    j.created_at = created;
    j.request = json_loads(request, 0, NULL);
    TRY(store_job_insert(s, &j, &e));
    job_rec_release(&j);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: store-fixture-gen URL\n");
        return 2;
    }
    store *s = store_open(argv[1], &e);
    if (!s) {
        fprintf(stderr, "store_open: %s\n", e.message);
        return 1;
    }
    /* VM records: live ones of two owners, one with pending changes, and a
     * deleted one kept for audit beside a live one of the same VMID. */
    vm(s, 101, "alice", "sv1", VMS_ENABLED, "{\"cores\":4}");
    vm(s, 102, "alice", "sv2", VMS_ENABLED, NULL);
    vm(s, 103, "bob", "sv1", VMS_CREATING, NULL);
    vm(s, 104, "bob", "sv3", VMS_DELETED, NULL);
    vm(s, 104, "bob", "sv3", VMS_ENABLED, NULL);

    /* Jobs. Two jobs of VM 101 made in the same millisecond, inserted
     * "job-z" first: insertion order, not the id, decides which runs first.
     * A job that is done, with events; an update that asks for more cores
     * (it counts in the owner's quota use). */
    job(s, "job-z", "start", 101, T0 + 1000, "{}");
    job(s, "job-a", "stop", 101, T0 + 1000, "{}");
    job(s, "job-done", "create", 102, T0 + 10, "{\"os\":\"debian12\"}");
    job(s, "job-upd", "update", 102, T0 + 2000, "{\"cores\":6}");
    TRY(store_job_event_add(s, "job-done", "clone", 40, "cloning", &e));
    TRY(store_job_event_add(s, "job-done", "done", 100, "done", &e));
    struct job_rec d = {0};
    TRY(store_job_get(s, "job-done", &d, &e));
    d.state = JOB_DONE;
    d.progress = 100;
    d.finished_at = T0 + 5010;
    snprintf(d.step, sizeof d.step, "done");
    TRY(store_job_update(s, &d, &e));
    job_rec_release(&d);

    /* VMID allocations: used, reserved to a job, foreign, quarantined. */
    struct vmid_range r = {200, 299};
    int id = 0;
    TRY(store_vmid_reserve(s, &r, 1, NULL, 0, "job-done", &id, &e)); /* 200 */
    TRY(store_vmid_mark_used(s, id, &e));
    TRY(store_vmid_reserve(s, &r, 1, NULL, 0, "job-z", &id, &e)); /* 201 */
    TRY(store_vmid_mark_foreign(s, 202, &e));
    TRY(store_vmid_reserve(s, &r, 1, NULL, 0, "job-a", &id, &e));      /* 203 */
    TRY(store_vmid_release(s, id, 24 * 3600 * 1000LL * 365 * 50, &e)); /* quarantined long */

    /* Capacity, clone slots, leftovers, idempotency, tokens, settings. */
    TRY(store_reserve_capacity(s, "job-z", "sv1", 1LL << 30, 20LL << 30, NULL, &e));
    TRY(store_clone_slot_take(s, "job-a", "sv1", 4, &e));
    TRY(store_leftover_add(s, 201, "sv2", "job-z", &e));
    json_t *answer = json_pack("{s:i}", "vmid", 101);
    TRY(store_idem_put(s, "alice", "key-1", answer, NULL, &e));
    json_decref(answer);
    struct token_rec t = {0};
    snprintf(t.id, sizeof t.id, "tok1");
    snprintf(t.owner, sizeof t.owner, "alice");
    snprintf(t.role, sizeof t.role, "admin");
    snprintf(t.hash, sizeof t.hash, "abcdef");
    t.created_at = T0;
    TRY(store_token_insert(s, &t, &e));
    char out[64];
    TRY(store_kv_setdefault(s, "api_key", "secret-1", out, sizeof out, &e));
    store_close(s);
    return 0;
}
