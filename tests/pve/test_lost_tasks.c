/* Requests whose answer is dropped (pvesim serves them, then closes the
 * connection) are answered by the task they started, found on the node's
 * task list, and sent once:
 *   - a disk reassignment (move_disk with target-vmid): its qmmove task,
 *     whose ID names both VMs and disks, not the VMID (sent again, it
 *     failed "Disk 'scsi0' for VM '700' does not exist" once the first
 *     one's task had moved it);
 *   - an HA-managed VM's migration: its hamigrate task (only qmigrate was
 *     looked for);
 *   - an HA-managed VM's start and stop: hastart and hastop.
 * The HA requests' own tasks, not the LRM's qmigrate, qmstart or qmstop
 * that follow them (which pvesim, at its time scale, has started by then;
 * Proxmox's CRM and LRM take seconds).
 * Config writes and resizes are sent once too (the retry policy sent them
 * again after a lost answer):
 *   - a config write with a digest: done when the config read back holds
 *     it (sent again, it failed "checksum mismatch (file change by other
 *     user?)" against its own first run); without one, not sent twice;
 *   - an asynchronous config write (POST): its qmconfig task;
 *   - a resize: its resize task (PVE >= 8), or on PVE 7, which resizes in
 *     the request, the disk's size read back; a relative "+1G" grows the
 *     disk once (sent again, it grew it twice);
 *   - a write whose request never got an answer nor was served (a hang):
 *     the config read back does not hold it, it is sent again;
 *   - a write served late (pvesim's `late`: no answer, served after the
 *     client looked and sent it again): a relative resize was sent again
 *     as the absolute size it comes to, so the late one grows nothing more
 *     (sent as "+1G" both times, the disk grew 2G); a config write with a
 *     digest, sent again, applies, and the late one's digest is stale.
 * Only a task this client's user or token started is its answer: an
 * operator's start a moment before is not (it was adopted: within the
 * 5 s of slack, of the right type and VMID), nor one of the same token
 * started seconds before the call; a node whose clock is off has its
 * tasks found all the same (its clock is read); a client that logs in with a
 * password finds its own under the user the login answered. Nor is a task
 * the client was answered with before: the VM's previous resize; nor,
 * with a task registry shared by clients (proxd instances on one
 * database), a task another client was answered with. */
#include "pvetest.h"
#include "common/util.h"
#include "pve/pve_api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int port;
static pid_t pid;

static int setup(void **st)
{
    (void)st;
    struct h_sim_opts o = {
        .nodes = "sv1,sv2", .token = T_TOKEN, .password = "opw", .time_scale = "0.01"};
    pid = h_sim_up(&port, &o);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_sim_stop(pid, true);
    return 0;
}

/* A client of the sim on `port`: with the test token, or logging in as
 * `user` with `password` (an operator, or proxd configured with a user). */
static pve_client *client_as(long timeout_ms, const char *user, const char *password)
{
    char host[64];
    const char *hostv[1];
    struct pve_config cfg;
    snprintf(host, sizeof host, "127.0.0.1:%d", port);
    tcfg_init(&cfg, hostv, host);
    cfg.connect_timeout_ms = 2000;
    cfg.timeout_ms = timeout_ms;
    if (user) {
        cfg.token = NULL;
        cfg.user = user;
        cfg.password = password;
    }
    return tclient(&cfg);
}

static pve_client *client_timeout(long timeout_ms)
{
    return client_as(timeout_ms, NULL, NULL);
}

static pve_client *user_client(long timeout_ms)
{
    return client_as(timeout_ms, "root@pam", "opw");
}

/* A PVE 7 sim of its own in place of the main one (`port` points at it);
 * pve7_down stops it and points `port` back. */
static pid_t pve7_up(int *main_port)
{
    *main_port = port;
    struct h_sim_opts o = {
        .nodes = "sv1,sv2", .token = T_TOKEN, .time_scale = "0.01", .pve_version = 7};
    return h_sim_up(&port, &o);
}

static void pve7_down(pid_t p7, int main_port)
{
    h_sim_stop(p7, true);
    port = main_port;
}

static pve_client *client(void)
{
    return client_timeout(5000);
}

static long count_calls(const char *key)
{
    json_t *r = h_sim_ctl(port, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(json_object_get(json_object_get(r, "calls"), key));
    json_decref(r);
    return n;
}

/* The next request of `method` to a path matching `path` meets a fault of
 * `kind` (with its delay_ms). A call first, so that the request goes out
 * on a reused connection (where curl would send it again by itself). */
static void fault_next_ms(pve_client *c, const char *method, const char *path, const char *kind,
                          long delay_ms)
{
    struct pve_error e;
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    json_decref(h_sim_ctl(port, "DELETE", "/_sim/faults", NULL)); /* a failed case's */
    char body[256];
    snprintf(body, sizeof body,
             "{\"method\":\"%s\",\"path\":\"%s\",\"kind\":\"%s\",\"count\":1,\"delay_ms\":%ld}",
             method, path, kind, delay_ms);
    json_decref(h_sim_ctl(port, "POST", "/_sim/faults", body));
}

static void fault_next(pve_client *c, const char *method, const char *path, const char *kind)
{
    fault_next_ms(c, method, path, kind, 0);
}

/* The next such request is served, its answer dropped. */
static void drop_next(pve_client *c, const char *method, const char *path)
{
    fault_next(c, method, path, "drop");
}

/* The rule was hit once (the answer was dropped); rules cleared. */
static void dropped(void)
{
    json_t *r = h_sim_ctl(port, "GET", "/_sim/faults", NULL), *f;
    size_t i;
    long hits = 0;
    json_array_foreach(r, i, f) hits += (long)json_integer_value(json_object_get(f, "hits"));
    json_decref(r);
    assert_int_equal(hits, 1);
    json_decref(h_sim_ctl(port, "DELETE", "/_sim/faults", NULL));
}

static void task_ok(pve_client *c, const char *upid)
{
    struct pve_error e;
    struct pve_task t;
    char buf[1024];
    if (pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e))
        fail_msg("%s: %s", upid, pve_strerror(&e, buf, sizeof buf));
    if (strcmp(t.exitstatus, "OK") != 0)
        fail_msg("%s: %s", upid, t.exitstatus);
}

static void vm_clone(pve_client *c, int newid)
{
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    struct pve_clone co = {.newid = newid, .full = 1};
    if (pve_vm_clone(c, "sv1", 8000, &co, upid, &e))
        fail_msg("clone %d: %s", newid, pve_strerror(&e, buf, sizeof buf));
    task_ok(c, upid);
}

static void lost_move_disk_is_its_qmmove(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, 700);
    vm_clone(c, 701);
    const char *key = "POST /nodes/{node}/qemu/{vmid}/move_disk";
    long before = count_calls(key);
    drop_next(c, "POST", "/move_disk$");
    if (pve_vm_move_disk(c, "sv1", 700, "scsi0", 701, "scsi1", upid, &e))
        fail_msg("a dropped move_disk: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (!strstr(upid, ":qmmove:700-scsi0>701-scsi1:"))
        fail_msg("%s is not the qmmove task", upid);
    assert_int_equal(count_calls(key) - before, 1);
    task_ok(c, upid);
    struct pve_vm_config cfg;
    assert_int_equal(pve_vm_config_get(c, "sv1", 701, false, &cfg, &e), 0);
    assert_non_null(json_object_get(cfg.raw, "scsi1"));
    pve_vm_config_release(&cfg);
    pve_client_free(c);
}

/* A rollback sent again after a lost answer was a second request that,
 * when the first was still queued on a busy node, could roll the VM back
 * once more after the job had ended. */
static void lost_rollback_is_its_qmrollback(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, 730);
    if (pve_snap_create(c, "sv1", 730, "s1", NULL, false, upid, &e))
        fail_msg("snapshot: %s", pve_strerror(&e, buf, sizeof buf));
    task_ok(c, upid);
    const char *key = "POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback";
    long before = count_calls(key);
    drop_next(c, "POST", "/qemu/730/snapshot/s1/rollback$");
    if (pve_snap_rollback(c, "sv1", 730, "s1", upid, &e))
        fail_msg("a dropped rollback: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (!strstr(upid, ":qmrollback:730:"))
        fail_msg("%s is not the qmrollback task", upid);
    assert_int_equal(count_calls(key) - before, 1);
    task_ok(c, upid);
    pve_client_free(c);
}

static void lost_ha_migration_is_its_hamigrate(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, 702);
    json_decref(h_sim_ctl(port, "POST", "/_sim/vms/702", "{\"ha\":true,\"ha_state\":\"stopped\"}"));
    const char *key = "POST /nodes/{node}/qemu/{vmid}/migrate";
    long before = count_calls(key);
    drop_next(c, "POST", "/qemu/702/migrate$");
    struct pve_migrate_opts mo = {0};
    if (pve_vm_migrate(c, "sv1", 702, "sv2", &mo, upid, &e))
        fail_msg("a dropped HA migration: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (!strstr(upid, ":hamigrate:702:")) /* the LRM's qmigrate is not the request's */
        fail_msg("%s is not the hamigrate task", upid);
    assert_int_equal(count_calls(key) - before, 1);
    task_ok(c, upid);
    pve_client_free(c);
}

static void lost_ha_start_and_stop_are_their_ha_tasks(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, 703);
    json_decref(h_sim_ctl(port, "POST", "/_sim/vms/703", "{\"ha\":true,\"ha_state\":\"stopped\"}"));
    static const struct {
        enum pve_power action;
        const char *path, *key, *type;
    } steps[] = {
        {PVE_POWER_START, "/qemu/703/status/start$", "POST /nodes/{node}/qemu/{vmid}/status/start",
         ":hastart:703:"},
        {PVE_POWER_STOP, "/qemu/703/status/stop$", "POST /nodes/{node}/qemu/{vmid}/status/stop",
         ":hastop:703:"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        long before = count_calls(steps[i].key);
        drop_next(c, "POST", steps[i].path);
        if (pve_vm_power(c, "sv1", 703, steps[i].action, NULL, upid, &e))
            fail_msg("a dropped %s: %s", pve_power_name(steps[i].action),
                     pve_strerror(&e, buf, sizeof buf));
        dropped();
        if (!strstr(upid, steps[i].type))
            fail_msg("%s: %s is not a %s task", pve_power_name(steps[i].action), upid,
                     steps[i].type);
        assert_int_equal(count_calls(steps[i].key) - before, 1);
        task_ok(c, upid);
    }
    pve_client_free(c);
}

/* The size= of `disk` of `vmid` on sv1, bytes. */
static int64_t disk_bytes(pve_client *c, int vmid, const char *disk)
{
    struct pve_error e;
    struct pve_vm_config cfg;
    assert_int_equal(pve_vm_config_get(c, "sv1", vmid, false, &cfg, &e), 0);
    struct pve_volume *vols = NULL;
    size_t n = 0;
    int64_t size = -1;
    pve_vm_config_volumes(&cfg, &vols, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(vols[i].key, disk) == 0)
            size = vols[i].size;
    free(vols);
    pve_vm_config_release(&cfg);
    assert_true(size > 0);
    return size;
}

static const char *config_value(pve_client *c, int vmid, const char *key, char *out, size_t len)
{
    struct pve_error e;
    struct pve_vm_config cfg;
    assert_int_equal(pve_vm_config_get(c, "sv1", vmid, false, &cfg, &e), 0);
    json_t *v = json_object_get(cfg.raw, key);
    if (json_is_integer(v))
        snprintf(out, len, "%lld", (long long)json_integer_value(v));
    else
        snprintf(out, len, "%s", json_is_string(v) ? json_string_value(v) : "");
    pve_vm_config_release(&cfg);
    return out;
}

#define PUT_CONFIG "PUT /nodes/{node}/qemu/{vmid}/config"
#define POST_CONFIG "POST /nodes/{node}/qemu/{vmid}/config"
#define PUT_RESIZE "PUT /nodes/{node}/qemu/{vmid}/resize"

static void lost_config_write_with_digest_is_done(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char buf[1024];
    vm_clone(c, 704);
    struct pve_vm_config cfg;
    assert_int_equal(pve_vm_config_get(c, "sv1", 704, false, &cfg, &e), 0);
    char digest[48];
    snprintf(digest, sizeof digest, "%s", cfg.digest);
    pve_vm_config_release(&cfg);
    long before = count_calls(PUT_CONFIG);
    drop_next(c, "PUT", "/qemu/704/config$");
    struct pve_config_set s = {.name = "kept",
                               .ipconfig0 = "ip=10.1.2.3/24,gw=10.1.2.1",
                               .net0 = "virtio,bridge=vmbr0,tag=7",
                               .digest = digest};
    if (pve_vm_config_set(c, "sv1", 704, &s, &e))
        fail_msg("a dropped config write with a digest: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_int_equal(count_calls(PUT_CONFIG) - before, 1);
    assert_string_equal(config_value(c, 704, "name", buf, sizeof buf), "kept");
    assert_string_equal(config_value(c, 704, "ipconfig0", buf, sizeof buf),
                        "ip=10.1.2.3/24,gw=10.1.2.1");
    /* the digest is still checked: a stale one fails as Proxmox has it */
    s.name = "other";
    if (pve_vm_config_set(c, "sv1", 704, &s, &e) == 0 || !strstr(e.message, "checksum mismatch"))
        fail_msg("a stale digest: %s", pve_strerror(&e, buf, sizeof buf));
    pve_client_free(c);
}

static void lost_config_write_without_digest_is_sent_once(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char buf[1024];
    vm_clone(c, 705);
    long before = count_calls(PUT_CONFIG);
    drop_next(c, "PUT", "/qemu/705/config$");
    struct pve_config_set s = {.cores = 3,
                               .memory_mb = 1536,
                               .tags = "b;a",
                               .description = "line one\nline two",
                               .delete_keys = "agent"};
    if (pve_vm_config_set(c, "sv1", 705, &s, &e))
        fail_msg("a dropped config write: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_int_equal(count_calls(PUT_CONFIG) - before, 1);
    assert_string_equal(config_value(c, 705, "cores", buf, sizeof buf), "3");
    assert_string_equal(config_value(c, 705, "agent", buf, sizeof buf), "");
    pve_client_free(c);
}

static void lost_async_config_write_is_its_qmconfig(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, 706);
    long before = count_calls(POST_CONFIG);
    drop_next(c, "POST", "/qemu/706/config$");
    struct pve_config_set s = {.name = "async", .cores = 2};
    if (pve_vm_config_set_async(c, "sv1", 706, &s, upid, &e))
        fail_msg("a dropped asynchronous config write: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (!strstr(upid, ":qmconfig:706:"))
        fail_msg("%s is not the qmconfig task", upid);
    assert_int_equal(count_calls(POST_CONFIG) - before, 1);
    task_ok(c, upid);
    assert_string_equal(config_value(c, 706, "name", buf, sizeof buf), "async");
    pve_client_free(c);
}

/* A resize of `vmid`'s scsi0 by `size`, its answer dropped: done once,
 * the disk `want` bytes; a task when `task`, else done in the request. */
static void lost_resize(pve_client *c, int vmid, const char *size, int64_t want, bool task)
{
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    long before = count_calls(PUT_RESIZE);
    drop_next(c, "PUT", "/resize$");
    if (pve_vm_resize(c, "sv1", vmid, "scsi0", size, upid, &e))
        fail_msg("a dropped resize to %s: %s", size, pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (task && upid[0])
        task_ok(c, upid);
    if (disk_bytes(c, vmid, "scsi0") != want)
        fail_msg("resize to %s: %lld bytes, %lld wanted", size,
                 (long long)disk_bytes(c, vmid, "scsi0"), (long long)want);
    assert_int_equal(count_calls(PUT_RESIZE) - before, 1);
    if (task && !strstr(upid, ":resize:"))
        fail_msg("%s is not the resize task", upid);
    if (!task)
        assert_string_equal(upid, "");
}

#define GiB (1024LL * 1024 * 1024)

static void lost_resize_grows_once(void **st)
{
    (void)st;
    pve_client *c = client();
    vm_clone(c, 707);
    int64_t have = disk_bytes(c, 707, "scsi0");
    lost_resize(c, 707, "+1G", have + GiB, true);
    char abs[32];
    snprintf(abs, sizeof abs, "%lldG", (long long)(have / GiB + 3));
    lost_resize(c, 707, abs, (have / GiB + 3) * GiB, true);
    pve_client_free(c);
}

/* PVE 7 resizes in the request and answers null: the size read back. */
static void lost_resize_on_pve7_grows_once(void **st)
{
    (void)st;
    int main_port;
    pid_t p7 = pve7_up(&main_port);
    pve_client *c = client();
    vm_clone(c, 708);
    int64_t have = disk_bytes(c, 708, "scsi0");
    lost_resize(c, 708, "+1G", have + GiB, false);
    char abs[32];
    snprintf(abs, sizeof abs, "%lldG", (long long)(have / GiB + 3));
    lost_resize(c, 708, abs, (have / GiB + 3) * GiB, false);
    pve_client_free(c);
    pve7_down(p7, main_port);
}

/* A write that hangs (never served, never answered) is not found in the
 * config: it is sent again and done. */
static void unserved_config_write_is_sent_again(void **st)
{
    (void)st;
    struct pve_error e;
    char buf[1024];
    pve_client *c = client_timeout(1500);
    vm_clone(c, 709);
    long before = count_calls(PUT_CONFIG);
    fault_next(c, "PUT", "/qemu/709/config$", "hang");
    struct pve_config_set s = {.name = "again"};
    if (pve_vm_config_set(c, "sv1", 709, &s, &e))
        fail_msg("a hung config write: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_string_equal(config_value(c, 709, "name", buf, sizeof buf), "again");
    assert_int_equal(count_calls(PUT_CONFIG) - before, 2); /* the hung one counts */
    pve_client_free(c);
}

/* An operator starts the VM; proxd's own start hangs unserved: the
 * operator's qmstart, of the right type and VMID and within the slack, is
 * not proxd's answer (adopted, proxd took the operator's task for its own
 * start: it would have counted a start as done that it never sent had the
 * operator's failed). */
static void an_operators_task_is_not_ours(void **st)
{
    (void)st;
    struct pve_error e;
    char theirs[PVE_UPID_MAX], upid[PVE_UPID_MAX] = "", buf[1024];
    pve_client *c = client_timeout(1500), *op = user_client(5000);
    vm_clone(c, 713);
    if (pve_vm_power(op, "sv1", 713, PVE_POWER_START, NULL, theirs, &e))
        fail_msg("the operator's start: %s", pve_strerror(&e, buf, sizeof buf));
    assert_non_null(strstr(theirs, ":qmstart:713:root@pam:"));
    task_ok(op, theirs);
    fault_next(c, "POST", "/qemu/713/status/start$", "hang");
    int rc = pve_vm_power(c, "sv1", 713, PVE_POWER_START, NULL, upid, &e);
    dropped();
    if (rc == 0)
        fail_msg("a start that never was served answered %s (the operator's: %s)", upid, theirs);
    assert_int_equal(rc, PVE_E_NETWORK);
    pve_client_free(op);
    pve_client_free(c);
}

/* The same client logged in with a password: its own dropped start is its
 * task, under the user the login answered. */
static void a_users_own_task_is_found(void **st)
{
    (void)st;
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    pve_client *c = user_client(5000);
    vm_clone(c, 714);
    long before = count_calls("POST /nodes/{node}/qemu/{vmid}/status/start");
    drop_next(c, "POST", "/qemu/714/status/start$");
    if (pve_vm_power(c, "sv1", 714, PVE_POWER_START, NULL, upid, &e))
        fail_msg("a dropped start: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_non_null(strstr(upid, ":qmstart:714:root@pam:"));
    assert_int_equal(count_calls("POST /nodes/{node}/qemu/{vmid}/status/start") - before, 1);
    task_ok(c, upid);
    pve_client_free(c);
}

/* A request served late (pvesim's `late`): its connection closes without
 * an answer at once, and the call is served LATE_MS after, when the client
 * has looked, not found it done and sent it again: long enough for that
 * look and send on a loaded machine. */
#define LATE_MS 1500

static bool none_late(void *arg)
{
    (void)arg;
    json_t *r = h_sim_ctl(port, "GET", "/_sim/calls", NULL);
    json_t *n = json_object_get(r, "late_pending");
    bool none = json_is_integer(n) && json_integer_value(n) == 0;
    json_decref(r);
    return none;
}

/* The late call has been served (its effects done, or its task started). */
static void late_served(void)
{
    if (!h_wait(none_late, NULL, 15000))
        fail_msg("the late call was not served within 15 s");
}

/* Every resize task of `vmid` on sv1 (the sends' and the late call's)
 * ended OK; how many there were. */
static size_t resize_tasks_ok(pve_client *c, int vmid)
{
    struct pve_error e;
    struct pve_task *tasks = NULL;
    size_t n = 0;
    assert_int_equal(pve_task_list(c, "sv1", vmid, "resize", 50, &tasks, &n, &e), 0);
    for (size_t i = 0; i < n; i++)
        task_ok(c, tasks[i].upid);
    free(tasks);
    return n;
}

/* A relative resize served late: the client, not finding it done, sends
 * it again as the absolute size it comes to; the late one, served after,
 * asks that same size: the disk grows by 1G once, not twice. */
static void late_relative_resize_grows_once(pve_client *c, int vmid, bool task)
{
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    vm_clone(c, vmid);
    int64_t have = disk_bytes(c, vmid, "scsi0");
    long before = count_calls(PUT_RESIZE);
    fault_next_ms(c, "PUT", "/resize$", "late", LATE_MS);
    if (pve_vm_resize(c, "sv1", vmid, "scsi0", "+1G", upid, &e))
        fail_msg("a late resize: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_int_equal(count_calls(PUT_RESIZE) - before, 2); /* not found done: sent again */
    if (task && !strstr(upid, ":resize:"))
        fail_msg("%s is not the resize task", upid);
    if (!task)
        assert_string_equal(upid, "");
    late_served();
    if (task) /* the second send's task, and the late call's, started when served */
        assert_int_equal(resize_tasks_ok(c, vmid), 2);
    if (disk_bytes(c, vmid, "scsi0") != have + GiB)
        fail_msg("a late +1G: %lld bytes, %lld wanted", (long long)disk_bytes(c, vmid, "scsi0"),
                 (long long)(have + GiB));
}

static void late_resize_grows_once(void **st)
{
    (void)st;
    pve_client *c = client();
    late_relative_resize_grows_once(c, 710, true);
    pve_client_free(c);
}

/* PVE 7 resizes in the request: the late call resizes when served. */
static void late_resize_on_pve7_grows_once(void **st)
{
    (void)st;
    int main_port;
    pid_t p7 = pve7_up(&main_port);
    pve_client *c = client();
    late_relative_resize_grows_once(c, 711, false);
    pve_client_free(c);
    pve7_down(p7, main_port);
}

/* A config write with a digest served late: the client, not finding it
 * done, sends it again and it applies; the late one, served after with its
 * digest stale, is refused. The config holds what was asked and nothing
 * else changed. */
static void late_config_write_with_digest_is_done_once(void **st)
{
    (void)st;
    pve_client *c = client();
    struct pve_error e;
    char buf[1024];
    vm_clone(c, 712);
    struct pve_vm_config cfg;
    assert_int_equal(pve_vm_config_get(c, "sv1", 712, false, &cfg, &e), 0);
    char digest[48];
    snprintf(digest, sizeof digest, "%s", cfg.digest);
    json_t *want = json_deep_copy(cfg.raw);
    pve_vm_config_release(&cfg);
    json_object_set_new(want, "name", json_string("late-one"));
    json_object_set_new(want, "ipconfig0", json_string("ip=10.1.2.4/24,gw=10.1.2.1"));
    json_object_del(want, "digest");
    long before = count_calls(PUT_CONFIG);
    fault_next_ms(c, "PUT", "/qemu/712/config$", "late", LATE_MS);
    struct pve_config_set s = {
        .name = "late-one", .ipconfig0 = "ip=10.1.2.4/24,gw=10.1.2.1", .digest = digest};
    if (pve_vm_config_set(c, "sv1", 712, &s, &e))
        fail_msg("a late config write with a digest: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_int_equal(count_calls(PUT_CONFIG) - before, 2); /* not found done: sent again */
    late_served();
    assert_int_equal(pve_vm_config_get(c, "sv1", 712, false, &cfg, &e), 0);
    json_object_del(cfg.raw, "digest");
    if (!json_equal(cfg.raw, want)) {
        char *have = json_dumps(cfg.raw, JSON_SORT_KEYS), *w = json_dumps(want, JSON_SORT_KEYS);
        fail_msg("after a late config write:\n%s\nwanted:\n%s", have, w);
    }
    pve_vm_config_release(&cfg);
    json_decref(want);
    pve_client_free(c);
}

/* A resize answered, then the VM's next resize served late: the lookup
 * of the second's lost answer finds the first's task (same type, VMID,
 * user, and within the slack, often the same second), already ended. It is
 * the client's own earlier task, known as such: not the answer (taken for
 * it, the second resize counted as done at the first's size). */
static void an_earlier_task_of_ours_is_not_the_answer(void **st)
{
    (void)st;
    struct pve_error e;
    char first[PVE_UPID_MAX], upid[PVE_UPID_MAX], buf[1024];
    pve_client *c = client();
    vm_clone(c, 715);
    int64_t have = disk_bytes(c, 715, "scsi0");
    char size[32];
    snprintf(size, sizeof size, "%lld", (long long)(have + GiB));
    if (pve_vm_resize(c, "sv1", 715, "scsi0", size, first, &e))
        fail_msg("the first resize: %s", pve_strerror(&e, buf, sizeof buf));
    task_ok(c, first);
    fault_next_ms(c, "PUT", "/qemu/715/resize$", "late", LATE_MS);
    snprintf(size, sizeof size, "%lld", (long long)(have + 2 * GiB));
    if (pve_vm_resize(c, "sv1", 715, "scsi0", size, upid, &e))
        fail_msg("a late resize: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    if (strcmp(upid, first) == 0)
        fail_msg("the late resize's answer is the first resize's task %s", first);
    task_ok(c, upid);
    if (disk_bytes(c, 715, "scsi0") != have + 2 * GiB)
        fail_msg("after the second resize: %lld bytes, %lld wanted",
                 (long long)disk_bytes(c, 715, "scsi0"), (long long)(have + 2 * GiB));
    late_served();
    pve_client_free(c);
}

static bool clock_past(void *ud)
{
    return wall_s() >= *(int64_t *)ud;
}

/* A task of the same token started three seconds before the call (another
 * client's, or an earlier call of its own served late, whose answer nobody
 * read) is not the answer of a call that was never served: with 5 s of
 * slack on the host's clock it was (a delete then failed "VM still exists
 * after its destroy task": CI, test_late_calls). */
static void a_task_seconds_before_the_call_is_not_ours(void **st)
{
    (void)st;
    struct pve_error e;
    char theirs[PVE_UPID_MAX], upid[PVE_UPID_MAX] = "", buf[1024];
    pve_client *c = client_timeout(1500), *other = client();
    vm_clone(c, 720);
    fault_next(other, "POST", "/qemu/720/status/start$", "task_error");
    if (pve_vm_power(other, "sv1", 720, PVE_POWER_START, NULL, theirs, &e))
        fail_msg("the other client's start: %s", pve_strerror(&e, buf, sizeof buf));
    struct pve_task t;
    memset(&t, 0, sizeof t);
    pve_task_wait(other, theirs, 30000, NULL, NULL, &t, &e); /* it fails */
    assert_string_equal(t.exitstatus, "injected failure");
    dropped();
    int64_t when = t.starttime + 3;
    assert_true(h_wait(clock_past, &when, 10000));
    fault_next(c, "POST", "/qemu/720/status/start$", "hang");
    int rc = pve_vm_power(c, "sv1", 720, PVE_POWER_START, NULL, upid, &e);
    dropped();
    if (rc == 0)
        fail_msg("a start never served answered %s (started before it: %s)", upid, theirs);
    assert_int_equal(rc, PVE_E_NETWORK);
    pve_client_free(other);
    pve_client_free(c);
}

static void set_clock(const char *node, int offset_s)
{
    char path[64], body[64];
    snprintf(path, sizeof path, "/_sim/nodes/%s", node);
    snprintf(body, sizeof body, "{\"clock_offset_s\":%d}", offset_s);
    json_decref(h_sim_ctl(port, "POST", path, body));
}

/* A node whose clock is two minutes behind this host's: a lost answer's
 * task is still found (a start's, a clone's), and the request is sent
 * once. With 5 s of slack on this host's clock, neither was: the start
 * was sent again and failed "already running", the clone "already exists". */
static void a_node_with_its_clock_off_has_its_tasks_found(void **st)
{
    (void)st;
    struct pve_error e;
    char upid[PVE_UPID_MAX], buf[1024];
    pve_client *c = client();
    vm_clone(c, 721);
    set_clock("sv1", -120);
    const char *start = "POST /nodes/{node}/qemu/{vmid}/status/start",
               *clone = "POST /nodes/{node}/qemu/{vmid}/clone";
    long starts = count_calls(start), clones = count_calls(clone);
    drop_next(c, "POST", "/qemu/721/status/start$");
    int rc = pve_vm_power(c, "sv1", 721, PVE_POWER_START, NULL, upid, &e);
    dropped();
    if (rc)
        fail_msg("a dropped start on a node 2 min behind: %s", pve_strerror(&e, buf, sizeof buf));
    assert_non_null(strstr(upid, ":qmstart:721:"));
    task_ok(c, upid);
    drop_next(c, "POST", "/qemu/8000/clone$");
    struct pve_clone co = {.newid = 722, .full = 1};
    rc = pve_vm_clone(c, "sv1", 8000, &co, upid, &e);
    dropped();
    set_clock("sv1", 0);
    if (rc)
        fail_msg("a dropped clone on a node 2 min behind: %s", pve_strerror(&e, buf, sizeof buf));
    task_ok(c, upid);
    assert_int_equal(count_calls(start) - starts, 1);
    assert_int_equal(count_calls(clone) - clones, 1);
    pve_client_free(c);
}

/* A task registry shared by clients, as proxd instances on one database
 * share theirs (the store's, core.c): a list of UPIDs. */
struct reg {
    char upids[16][PVE_UPID_MAX];
    int n;
    pthread_mutex_t mu;
};

static void reg_seen(void *ud, const char *upid)
{
    struct reg *r = ud;
    pthread_mutex_lock(&r->mu);
    if (r->n < 16)
        snprintf(r->upids[r->n++], PVE_UPID_MAX, "%s", upid);
    pthread_mutex_unlock(&r->mu);
}

static int reg_known(void *ud, const char *upid)
{
    struct reg *r = ud;
    int known = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n && !known; i++)
        known = strcmp(r->upids[i], upid) == 0;
    pthread_mutex_unlock(&r->mu);
    return known;
}

static int reg_blind(void *ud, const char *upid)
{
    (void)ud;
    (void)upid;
    return -1;
}

/* Two proxd instances share one token: one starts a VM and stops it, the other's start of it never
 * reaches Proxmox (a hang). Its lookup finds the first one's start on the task list: same type,
 * VMID, token, and a start time not before the call's (the node's clock ran 30 s ahead when it
 * began, then was set right: a stand-in for a start the other instance makes while the call waits,
 * which a lookup cannot tell from its own). With the instances' shared registry it does not take
 * it, and the lost answer is a network error (the caller looks at the VM and asks again); a
 * registry that cannot tell makes the lookup skip the task too. Without a registry it takes it (the
 * start "done", the VM stopped): shown last, so that the case proves the scenario was live for the
 * two before. */
static void another_instances_task_is_not_ours(void **st)
{
    (void)st;
    struct pve_error e;
    char first[PVE_UPID_MAX], upid[PVE_UPID_MAX] = "", buf[1024];
    struct reg r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const struct pve_task_registry shared = {reg_seen, reg_known, &r};
    const struct pve_task_registry blind = {reg_seen, reg_blind, &r};
    pve_client *a = client(), *lone = client_timeout(500), *b = client_timeout(500);
    pve_client_set_task_registry(a, &shared);
    pve_client_set_task_registry(b, &shared);
    vm_clone(a, 716);
    set_clock("sv1", 30);
    if (pve_vm_power(a, "sv1", 716, PVE_POWER_START, NULL, first, &e))
        fail_msg("the first start: %s", pve_strerror(&e, buf, sizeof buf));
    set_clock("sv1", 0);
    task_ok(a, first);
    if (pve_vm_power(a, "sv1", 716, PVE_POWER_STOP, NULL, upid, &e))
        fail_msg("the stop: %s", pve_strerror(&e, buf, sizeof buf));
    task_ok(a, upid);
    assert_true(reg_known(&r, first)); /* noted when its answer came */

    fault_next(b, "POST", "/qemu/716/status/start$", "hang");
    upid[0] = '\0';
    int rc = pve_vm_power(b, "sv1", 716, PVE_POWER_START, NULL, upid, &e);
    dropped();
    if (rc == 0)
        fail_msg("a start that never was served answered %s (the other instance's: %s)", upid,
                 first);
    assert_int_equal(rc, PVE_E_NETWORK);

    pve_client_set_task_registry(b, &blind);
    fault_next(b, "POST", "/qemu/716/status/start$", "hang");
    rc = pve_vm_power(b, "sv1", 716, PVE_POWER_START, NULL, upid, &e);
    dropped();
    assert_int_equal(rc, PVE_E_NETWORK);

    /* last: the window still holds the first start (so it held it above) */
    fault_next(lone, "POST", "/qemu/716/status/start$", "hang");
    rc = pve_vm_power(lone, "sv1", 716, PVE_POWER_START, NULL, upid, &e);
    dropped();
    if (rc != 0 || strcmp(upid, first) != 0)
        fail_msg("without a registry, the lost start did not take the other's task %s (rc %d, "
                 "%s): the case shows nothing",
                 first, rc, upid);

    /* a task a lookup found is recorded as one answered with */
    pve_client_set_task_registry(b, &shared);
    drop_next(b, "POST", "/qemu/716/status/start$");
    if (pve_vm_power(b, "sv1", 716, PVE_POWER_START, NULL, upid, &e))
        fail_msg("a dropped start: %s", pve_strerror(&e, buf, sizeof buf));
    dropped();
    assert_string_not_equal(upid, first);
    assert_true(reg_known(&r, upid));
    task_ok(b, upid);
    pve_client_free(a);
    pve_client_free(lone);
    pve_client_free(b);
}

int main(void)
{
    pve_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lost_move_disk_is_its_qmmove),
        cmocka_unit_test(lost_rollback_is_its_qmrollback),
        cmocka_unit_test(lost_ha_migration_is_its_hamigrate),
        cmocka_unit_test(lost_ha_start_and_stop_are_their_ha_tasks),
        cmocka_unit_test(lost_config_write_with_digest_is_done),
        cmocka_unit_test(lost_config_write_without_digest_is_sent_once),
        cmocka_unit_test(lost_async_config_write_is_its_qmconfig),
        cmocka_unit_test(lost_resize_grows_once),
        cmocka_unit_test(lost_resize_on_pve7_grows_once),
        cmocka_unit_test(unserved_config_write_is_sent_again),
        cmocka_unit_test(an_operators_task_is_not_ours),
        cmocka_unit_test(a_users_own_task_is_found),
        cmocka_unit_test(an_earlier_task_of_ours_is_not_the_answer),
        cmocka_unit_test(a_task_seconds_before_the_call_is_not_ours),
        cmocka_unit_test(a_node_with_its_clock_off_has_its_tasks_found),
        cmocka_unit_test(another_instances_task_is_not_ours),
        cmocka_unit_test(late_resize_grows_once),
        cmocka_unit_test(late_resize_on_pve7_grows_once),
        cmocka_unit_test(late_config_write_with_digest_is_done_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
