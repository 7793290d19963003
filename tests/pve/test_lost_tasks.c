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
 * Proxmox's CRM and LRM take seconds). */
#include "harness.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN "root@pam!ci=" H_TOKEN_SECRET

static int port;
static pid_t pid;

static int setup(void **st)
{
    (void)st;
    struct h_sim_opts o = {.nodes = "sv1,sv2", .token = TOKEN, .time_scale = "0.01"};
    pid = h_sim_up(&port, &o);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_sim_stop(pid, true);
    return 0;
}

static pve_client *client(void)
{
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%d", port);
    const char *hosts[] = {host};
    struct pve_config cfg = {.hosts = hosts,
                             .nhosts = 1,
                             .token = TOKEN,
                             .insecure = true,
                             .connect_timeout_ms = 2000,
                             .timeout_ms = 5000};
    struct pve_error e;
    pve_client *c = pve_client_new(&cfg, &e);
    assert_non_null(c);
    return c;
}

static long count_calls(const char *key)
{
    json_t *r = h_sim_ctl(port, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(json_object_get(json_object_get(r, "calls"), key));
    json_decref(r);
    return n;
}

/* The next request of `method` to a path matching `path` is served, its
 * answer dropped. A call first, so that the request goes out on a reused
 * connection (where curl would send it again by itself). */
static void drop_next(pve_client *c, const char *method, const char *path)
{
    struct pve_error e;
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    json_decref(h_sim_ctl(port, "DELETE", "/_sim/faults", NULL)); /* a failed case's */
    char body[256];
    snprintf(body, sizeof body, "{\"method\":\"%s\",\"path\":\"%s\",\"kind\":\"drop\",\"count\":1}",
             method, path);
    json_decref(h_sim_ctl(port, "POST", "/_sim/faults", body));
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

int main(void)
{
    pve_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lost_move_disk_is_its_qmmove),
        cmocka_unit_test(lost_ha_migration_is_its_hamigrate),
        cmocka_unit_test(lost_ha_start_and_stop_are_their_ha_tasks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
