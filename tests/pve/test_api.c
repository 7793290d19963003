/* Every typed call of pve_api.h against pvesim, on PVE 7, 8 and 9
 * behaviour, with token and with ticket auth, in cluster and standalone
 * mode; and pvesim's record of requests the official schema refused must
 * stay empty (every request we send matches the schema). */
#include "harness.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKEN "root@pam!ci=" H_TOKEN_SECRET
#define KEY1                                                                                       \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzq7NTAlFT4SImr0qHpVZ0HHVdVunThFP1ICflNG6d+ me@host"
#define KEY2                                                                                       \
    "ssh-rsa "                                                                                     \
    "AAAAB3NzaC1yc2EAAAADAQABAAAAgQC6FKtnHJYt3nV0sMuTS1jkF/U9FGqUwpohsXVB6AO6DJJ7QHxaoYF1bLmIUoZs" \
    "EYQ9OEphAjs8wpCUD5weQ9mgPiNlpS8XYO2aKcUpA0xX/GxuZmQqBkbB35iLb7i6cBk0RTYEAbSmY2cqLj+eh0CLsyaH" \
    "b6bAP651KZE0XDTRKQ== a+b/c=d@example"

struct world {
    int port;
    pid_t pid;
    pve_client *c;
    const char *node;
    int tpl;
    int version;
};

static void start(struct world *w, int version, bool ticket, bool standalone)
{
    memset(w, 0, sizeof *w);
    w->version = version;
    const char *standalone_arg[] = {"--standalone", NULL};
    struct h_sim_opts o = {.nodes = "sv1,sv2",
                           .token = TOKEN,
                           .password = "SECRET",
                           .time_scale = "0.01",
                           .pve_version = version,
                           .extra = standalone ? standalone_arg : NULL};
    w->pid = h_sim_up(&w->port, &o);
    /* standalone: sv2 is on port+1; cluster: the entry port proxies to sv2 */
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%d", standalone ? w->port + 1 : w->port);
    const char *hosts[] = {host};
    struct pve_config cfg = {.hosts = hosts,
                             .nhosts = 1,
                             .insecure = true,
                             .connect_timeout_ms = 2000,
                             .timeout_ms = 20000};
    if (ticket) {
        cfg.user = "root@pam";
        cfg.password = "SECRET";
    } else {
        cfg.token = TOKEN;
    }
    struct pve_error err;
    w->c = pve_client_new(&cfg, &err);
    assert_non_null(w->c);
    w->node = "sv2";
    w->tpl = 8010; /* sv2's ubuntu template */
}

static void stop(struct world *w)
{
    struct h_resp r;
    int port = w->port; /* /_sim/ is served on every listener */
    h_request(port, "GET", "/_sim/rejections", NULL, NULL, NULL, &r);
    if (!json_is_array(r.json) || json_array_size(r.json) != 0)
        fail_msg("pvesim refused requests as not matching the schema: %s", r.body);
    h_resp_free(&r);
    pve_client_free(w->c);
    h_sim_stop(w->pid, true);
}

static void ok(int rc, struct pve_error *e)
{
    char buf[2048];
    if (rc)
        fail_msg("call failed: %s", pve_strerror(e, buf, sizeof buf));
}

static void wait_ok(struct world *w, const char *upid)
{
    struct pve_task t;
    struct pve_error e;
    ok(pve_task_wait(w->c, upid, 30000, NULL, NULL, &t, &e), &e);
    assert_string_equal(t.exitstatus, "OK");
}

static void cluster_calls(struct world *w, bool standalone)
{
    struct pve_error e;
    struct pve_version v;
    ok(pve_get_version(w->c, &v, &e), &e);
    assert_int_equal(v.major, w->version);

    struct pve_node *nodes;
    size_t n;
    ok(pve_nodes(w->c, &nodes, &n, &e), &e);
    assert_int_equal(n, standalone ? 1 : 2);
    assert_true(nodes[0].online && nodes[0].maxmem > 0);
    free(nodes);

    struct pve_node_status ns;
    ok(pve_node_status(w->c, w->node, &ns, &e), &e);
    assert_true(ns.mem_total > ns.mem_used && ns.cpus > 0);

    struct pve_storage *st;
    ok(pve_storage_list(w->c, w->node, "images", &st, &n, &e), &e);
    assert_int_equal(n, 1);
    assert_string_equal(st[0].storage, "local-lvm");
    assert_true(st[0].avail > 0 && st[0].total >= st[0].avail);
    free(st);
    struct pve_storage one;
    ok(pve_storage_status(w->c, w->node, "local-lvm", &one, &e), &e);
    assert_true(one.total > 0);
    assert_int_equal(pve_storage_status(w->c, w->node, "nope", &one, &e), PVE_E_INVALID);

    struct pve_resource *res;
    ok(pve_cluster_resources(w->c, "vm", &res, &n, &e), &e);
    assert_true(n >= 4);
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        seen |= res[i].vmid == w->tpl && res[i].tmpl && strcmp(res[i].node, "sv2") == 0;
    assert_true(seen);
    free(res);
    ok(pve_cluster_resources(w->c, NULL, &res, &n, &e), &e);
    free(res);

    struct pve_cluster_status cs;
    ok(pve_cluster_status(w->c, &cs, &e), &e);
    assert_int_equal(cs.is_cluster, !standalone);
    assert_int_equal(cs.nmembers, standalone ? 1 : 2);

    int id;
    ok(pve_nextid(w->c, 0, &id, &e), &e);
    assert_int_equal(id, 100);
    ok(pve_nextid(w->c, 1234, &id, &e), &e);
    assert_int_equal(id, 1234);
    assert_int_equal(pve_nextid(w->c, w->tpl, &id, &e), PVE_E_EXISTS);
}

static void vm_calls(struct world *w)
{
    struct pve_error e;
    char upid[PVE_UPID_MAX];
    struct pve_clone co = {.newid = 1000,
                           .name = "web-1",
                           .description = "proxd test",
                           .storage = "local-lvm",
                           .full = 1};
    ok(pve_vm_clone(w->c, w->node, w->tpl, &co, upid, &e), &e);
    assert_non_null(strstr(upid, ":qmclone:"));
    wait_ok(w, upid);
    /* the same clone again: "already exists" */
    assert_int_equal(pve_vm_clone(w->c, w->node, w->tpl, &co, upid, &e), PVE_E_EXISTS);

    struct pve_vm *vms;
    size_t n;
    ok(pve_vm_list(w->c, w->node, &vms, &n, &e), &e);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= vms[i].vmid == 1000 && strcmp(vms[i].name, "web-1") == 0 && !vms[i].tmpl;
    assert_true(found);
    free(vms);

    /* config: keys with '+', '/', '=', '@' and spaces, two lines */
    struct pve_config_set s = {.cores = 3,
                               .memory_mb = 3072,
                               .sshkeys = KEY1 "\n" KEY2,
                               .ciuser = "admin",
                               .ipconfig0 = "ip=10.1.2.3/24,gw=10.1.2.1",
                               .tags = "proxd;web",
                               .description = "a & b = c + d\nline 2"};
    ok(pve_vm_config_set(w->c, w->node, 1000, &s, &e), &e);
    struct pve_vm_config cfg;
    ok(pve_vm_config_get(w->c, w->node, 1000, false, &cfg, &e), &e);
    assert_int_equal(cfg.cores, 3);
    assert_int_equal(cfg.memory_mb, 3072);
    assert_string_equal(cfg.ciuser, "admin");
    assert_string_equal(cfg.description, "a & b = c + d\nline 2");
    assert_string_equal(cfg.bootdisk, "scsi0");
    assert_string_equal(cfg.bootdisk_storage, "local-lvm");
    assert_int_equal(cfg.bootdisk_size, 10LL << 30);
    /* a volume's size as its storage lists it; one it does not list */
    int64_t vsize = 0;
    ok(pve_volume_size(w->c, w->node, "local-lvm", 1000, cfg.bootdisk_volume, &vsize, &e), &e);
    assert_int_equal(vsize, 10LL << 30);
    assert_int_equal(
        pve_volume_size(w->c, w->node, "local-lvm", 1000, "local-lvm:vm-1000-disk-9", &vsize, &e),
        PVE_E_NOTFOUND);
    assert_non_null(strstr(e.message, "local-lvm:vm-1000-disk-9 is not listed"));
    assert_int_equal(pve_volume_size(w->c, w->node, "ceph", 1000, cfg.bootdisk_volume, &vsize, &e),
                     PVE_E_INVALID);
    char *enc = pve_sshkeys_encode(KEY1 "\n" KEY2);
    assert_string_equal(json_string_value(json_object_get(cfg.raw, "sshkeys")), enc);
    free(enc);
    char digest[48];
    snprintf(digest, sizeof digest, "%s", cfg.digest);
    pve_vm_config_release(&cfg);

    /* async config with a stale digest fails; with the right one works */
    struct pve_config_set s2 = {.name = "web-2",
                                .digest = "0123456789abcdef0123456789abcdef01234567"};
    assert_int_equal(pve_vm_config_set(w->c, w->node, 1000, &s2, &e), PVE_E_OTHER);
    assert_non_null(strstr(e.message, "checksum"));
    s2.digest = digest;
    ok(pve_vm_config_set_async(w->c, w->node, 1000, &s2, upid, &e), &e);
    wait_ok(w, upid);

    /* resize: relative, then absolute; a task on 8/9, synchronous on 7 */
    ok(pve_vm_resize(w->c, w->node, 1000, "scsi0", "+5G", upid, &e), &e);
    if (w->version >= 8) {
        assert_non_null(strstr(upid, ":resize:"));
        wait_ok(w, upid);
    } else {
        assert_string_equal(upid, "");
    }
    ok(pve_vm_resize(w->c, w->node, 1000, "scsi0", "20G", upid, &e), &e);
    if (upid[0])
        wait_ok(w, upid);
    ok(pve_vm_config_get(w->c, w->node, 1000, true, &cfg, &e), &e);
    assert_int_equal(cfg.bootdisk_size, 20LL << 30);
    assert_string_equal(cfg.name, "web-2");
    pve_vm_config_release(&cfg);
    assert_int_equal(pve_vm_resize(w->c, w->node, 1000, "scsi0", "1 G", upid, &e), PVE_E_INVALID);

    /* power */
    struct pve_vm_status vs;
    ok(pve_vm_power(w->c, w->node, 1000, PVE_POWER_START, NULL, upid, &e), &e);
    wait_ok(w, upid);
    ok(pve_vm_status(w->c, w->node, 1000, &vs, &e), &e);
    assert_string_equal(vs.status, "running");
    assert_false(vs.ha_managed);

    /* a pending change on a running VM */
    struct pve_config_set s3 = {.cores = 4};
    ok(pve_vm_config_set(w->c, w->node, 1000, &s3, &e), &e);
    struct pve_pending *p;
    ok(pve_vm_pending(w->c, w->node, 1000, &p, &n, &e), &e);
    assert_int_equal(n, 1);
    assert_string_equal(p[0].key, "cores");
    assert_string_equal(p[0].pending, "4");
    free(p);

    enum pve_power seq[] = {PVE_POWER_SUSPEND, PVE_POWER_RESUME, PVE_POWER_REBOOT, PVE_POWER_RESET,
                            PVE_POWER_SHUTDOWN};
    for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) {
        struct pve_power_opts po = {.timeout = 30, .force_stop = true};
        ok(pve_vm_power(w->c, w->node, 1000, seq[i], &po, upid, &e), &e);
        wait_ok(w, upid);
    }
    ok(pve_vm_status(w->c, w->node, 1000, &vs, &e), &e);
    assert_string_equal(vs.status, "stopped");
    ok(pve_vm_pending(w->c, w->node, 1000, &p, &n, &e), &e);
    assert_int_equal(n, 0); /* applied at the reboot */
    free(p);
    ok(pve_vm_power(w->c, w->node, 1000, PVE_POWER_STOP, NULL, upid, &e), &e);
    wait_ok(w, upid);

    /* HA: delete without purge refused, HA listing and removal */
    char body[64];
    snprintf(body, sizeof body, "{\"ha\":true,\"at\":\"%s\"}", w->node);
    struct h_resp r;
    h_request(w->port, "POST", "/_sim/vms/1000", "application/json", body, NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    struct pve_ha_resource *ha;
    ok(pve_ha_list(w->c, &ha, &n, &e), &e);
    assert_int_equal(n, 1);
    assert_string_equal(ha[0].sid, "vm:1000");
    assert_int_equal(ha[0].vmid, 1000);
    free(ha);
    struct pve_delete_opts d = {.purge = false};
    int drc = pve_vm_delete(w->c, w->node, 1000, &d, upid, &e);
    if (drc != PVE_E_OTHER)
        fail_msg("delete: %d %s / %s", drc, e.message, e.params);
    assert_non_null(strstr(e.message, "used in HA resources"));
    ok(pve_ha_remove(w->c, "vm:1000", &e), &e);
    d.purge = true;
    d.destroy_unreferenced = true;
    ok(pve_vm_delete(w->c, w->node, 1000, &d, upid, &e), &e);
    wait_ok(w, upid);
    assert_int_equal(pve_vm_config_get(w->c, w->node, 1000, false, &cfg, &e), PVE_E_NOTFOUND);

    /* tasks: list and log */
    struct pve_task *tasks;
    ok(pve_task_list(w->c, w->node, 1000, "qmdestroy", 10, &tasks, &n, &e), &e);
    assert_int_equal(n, 1);
    free(tasks);
    json_t *lines;
    ok(pve_task_log(w->c, upid, 0, 0, &lines, &e), &e);
    assert_true(json_array_size(lines) >= 1);
    assert_string_equal(json_string_value(json_array_get(lines, json_array_size(lines) - 1)),
                        "TASK OK");
    json_decref(lines);

    /* create from scratch */
    json_t *opts = json_pack("{s:s,s:i,s:s}", "name", "raw-1", "cores", 1, "scsi0", "local-lvm:4");
    ok(pve_vm_create(w->c, w->node, 1001, opts, upid, &e), &e);
    json_decref(opts);
    wait_ok(w, upid);
    ok(pve_vm_config_get(w->c, w->node, 1001, false, &cfg, &e), &e);
    assert_int_equal(cfg.bootdisk_size, 4LL << 30);
    pve_vm_config_release(&cfg);

    /* a linked clone's volume ("base-T-disk-0/vm-N-disk-0") lists as the
     * thin volume it is */
    struct pve_clone lc = {.newid = 1009, .name = "linked", .full = 0};
    ok(pve_vm_clone(w->c, w->node, w->tpl, &lc, upid, &e), &e);
    wait_ok(w, upid);
    ok(pve_vm_config_get(w->c, w->node, 1009, false, &cfg, &e), &e);
    assert_non_null(strstr(cfg.bootdisk_volume, "/vm-1009-disk-0"));
    int64_t lsize = 0;
    ok(pve_volume_size(w->c, w->node, cfg.bootdisk_storage, 1009, cfg.bootdisk_volume, &lsize, &e),
       &e);
    assert_int_equal(lsize, cfg.bootdisk_size);
    pve_vm_config_release(&cfg);
    struct pve_delete_opts ld = {.purge = true};
    ok(pve_vm_delete(w->c, w->node, 1009, &ld, upid, &e), &e);
    wait_ok(w, upid);
}

static void run(int version, bool ticket, bool standalone)
{
    struct world w;
    start(&w, version, ticket, standalone);
    cluster_calls(&w, standalone);
    vm_calls(&w);
    stop(&w);
}

static void pve9_token_cluster(void **st)
{
    (void)st;
    run(9, false, false);
}
static void pve9_ticket_cluster(void **st)
{
    (void)st;
    run(9, true, false);
}
static void pve9_token_standalone(void **st)
{
    (void)st;
    run(9, false, true);
}
static void pve9_ticket_standalone(void **st)
{
    (void)st;
    run(9, true, true);
}
static void pve8_token_cluster(void **st)
{
    (void)st;
    run(8, false, false);
}
static void pve8_ticket_standalone(void **st)
{
    (void)st;
    run(8, true, true);
}
static void pve8_ticket_cluster(void **st)
{
    (void)st;
    run(8, true, false);
}
static void pve8_token_standalone(void **st)
{
    (void)st;
    run(8, false, true);
}
static void pve7_token_cluster(void **st)
{
    (void)st;
    run(7, false, false);
}
static void pve7_ticket_standalone(void **st)
{
    (void)st;
    run(7, true, true);
}

int main(void)
{
    pve_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pve9_token_cluster),    cmocka_unit_test(pve9_ticket_cluster),
        cmocka_unit_test(pve9_token_standalone), cmocka_unit_test(pve9_ticket_standalone),
        cmocka_unit_test(pve8_token_cluster),    cmocka_unit_test(pve8_ticket_cluster),
        cmocka_unit_test(pve8_token_standalone), cmocka_unit_test(pve8_ticket_standalone),
        cmocka_unit_test(pve7_token_cluster),    cmocka_unit_test(pve7_ticket_standalone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
