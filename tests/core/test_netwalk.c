/* The config walk and the guest agent's confirmation (core/netwalk.c,
 * core/netconfirm.c; docs/design/ippool.md sections 4 "Verify" and 5) on a
 * pvesim cluster. proxd's VMs get their network the way the creation's
 * configure step gives it (an address bound in the store, the vm_net row,
 * net0 and ipconfig0 in the VM's config), so these tests do not depend on
 * the creation flow. One pvesim and core serve every case of a group. */
#include "core_harness.h"

#include "core/fleet.h"
#include "core/ippool.h"
#include "core/netwalk.h"
#include "store/store.h"

#define POOLS                                                                                      \
    "[ippool lan]\ncidr = 10.9.0.0/24\ngateway = 10.9.0.1\nranges = 10.9.0.50-10.9.0.69\n"         \
    "bridge = vmbr1\nvlan = 42\n"                                                                  \
    "[ippool tiny]\ncidr = 10.9.1.0/24\nranges = 10.9.1.50-10.9.1.51\nbridge = vmbr1\n"

static struct ch_env env;

/* ---- helpers ----------------------------------------------------------------- */

static void key_of(const char *ip, char key[IPPOOL_KEYLEN])
{
    struct ippool_addr a;
    assert_int_equal(ippool_addr_parse(ip, &a), IPPOOL_OK);
    ippool_addr_key(&a, key);
}

static void conf_set(const char *node, int vmid, const struct pve_config_set *cs)
{
    struct pve_error pe;
    if (pve_vm_config_set(fleet_client(env.fl, node), node, vmid, cs, &pe))
        fail_msg("config of %d: %s", vmid, pe.message);
}

static char *conf_get(const char *node, int vmid, const char *key)
{
    struct pve_vm_config vc;
    struct pve_error pe;
    if (pve_vm_config_get(fleet_client(env.fl, node), node, vmid, false, &vc, &pe))
        fail_msg("config of %d: %s", vmid, pe.message);
    const char *v = json_string_value(json_object_get(vc.raw, key));
    char *out = strdup(v ? v : "");
    pve_vm_config_release(&vc);
    return out;
}

/* A VM that is not proxd's: cloned on node svN (its ubuntu template)
 * behind proxd's back. */
static void foreign_vm_on(int n, int vmid, const char *ipconfig0)
{
    char upid[PVE_UPID_MAX], node[8];
    snprintf(node, sizeof node, "sv%d", n);
    pve_client *c = fleet_client(env.fl, node);
    struct pve_clone o = {.newid = vmid, .name = "foreign", .full = 1};
    struct pve_error pe;
    if (pve_vm_clone(c, node, 8000 + 10 * (n - 1), &o, upid, &pe) != 0)
        fail_msg("clone: %s", pe.message);
    struct pve_task t;
    if (pve_task_wait(c, upid, 20000, NULL, NULL, &t, &pe) != 0)
        fail_msg("clone task: %s", pe.message);
    struct pve_config_set cs = {.ipconfig0 = ipconfig0};
    conf_set(node, vmid, &cs);
    fleet_refresh(env.fl, true);
}

static void foreign_vm(int vmid, const char *ipconfig0)
{
    foreign_vm_on(1, vmid, ipconfig0);
}

struct ourvm {
    int vmid;
    int64_t id;
    char node[64];
    char mac[18], ipconfig0[128], net0[128];
};

/* One of proxd's VMs with address ip of pool lan, configured as the
 * creation's configure step does it; agent: NULL leaves the template's
 * (on), "" removes it, else its value. */
/* Set by test_agent: the next VM's agent answers "not running" to its first
 * two reads, a rule made as soon as its VMID is known (before its address
 * is recorded: a walk may read the agent from then on). */
static bool agent_late;

static void agent_late_rule(int vmid)
{
    char path[128];
    snprintf(path, sizeof path, "^/nodes/[^/]+/qemu/%d/agent/", vmid);
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:s,s:i,s:i}", "method", "GET", "path", path, "kind", "error",
                  "message", "QEMU guest agent is not running", "status", 500, "count", 2);
    char *s = json_dumps(o, 0);
    ch_sim(&env, "POST", "/_sim/faults", s);
    free(s);
    json_decref(o);
}

static void our_vm_agent(const char *name, const char *ip, const char *mac, const char *agent,
                         struct ourvm *v)
{
    struct vm_request r;
    ch_request(&r, "ubuntu", name, 1, 512, 10);
    char job[40];
    memset(v, 0, sizeof *v);
    assert_int_equal(ch_create_wait(&env, &r, job, &v->vmid, 60000), JOB_DONE);
    if (agent_late)
        agent_late_rule(v->vmid);
    struct vm_rec rec;
    assert_int_equal(store_vm_get(env.st, v->vmid, &rec, NULL), STORE_OK);
    v->id = rec.id;
    snprintf(v->node, sizeof v->node, "%s", rec.node);
    vm_rec_release(&rec);
    char key[IPPOOL_KEYLEN], njob[48];
    key_of(ip, key);
    snprintf(njob, sizeof njob, "net-%d", v->vmid);
    struct store_addr_req q = {.pool = "lan", .want = key};
    struct store_error se;
    if (store_addr_reserve(env.st, njob, &q, 1, &se) ||
        store_addr_bind_job(env.st, njob, v->id, v->vmid, &se))
        fail_msg("address %s: %s", ip, se.message);
    snprintf(v->mac, sizeof v->mac, "%s", mac);
    snprintf(v->ipconfig0, sizeof v->ipconfig0, "ip=%s/24,gw=10.9.0.1", ip);
    snprintf(v->net0, sizeof v->net0, "virtio=%s,bridge=vmbr1,tag=42", mac);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO vm_net (vm_id, mac, bridge, vlan, ipconfig0, nameserver, searchdomain,"
             " live) VALUES (%lld, '%s', 'vmbr1', 42, '%s', '', '', 1)",
             (long long)v->id, mac, v->ipconfig0);
    ch_sql(&env, sql);
    struct pve_config_set cs = {.ipconfig0 = v->ipconfig0, .net0 = v->net0};
    conf_set(v->node, v->vmid, &cs);
    if (agent) {
        struct pve_error pe;
        json_t *p =
            *agent ? json_pack("{s:s}", "agent", agent) : json_pack("{s:s}", "delete", "agent");
        char path[128];
        snprintf(path, sizeof path, "/nodes/%s/qemu/%d/config", v->node, v->vmid);
        assert_int_equal(pve_call(fleet_client(env.fl, v->node), "PUT", path, p, NULL, &pe), 0);
        json_decref(p);
    }
    /* configured before the guest boots, as a creation does */
    struct core_error ce = {0};
    assert_int_equal(core_vm_action(env.k, v->vmid, "alice", ACT_REBOOT, NULL, job, &ce), 0);
    enum job_state st;
    assert_int_equal(core_wait_job(env.k, job, 60000, &st), 0);
    assert_int_equal(st, JOB_DONE);
}

static void our_vm(const char *name, const char *ip, const char *mac, struct ourvm *v)
{
    our_vm_agent(name, ip, mac, NULL, v);
}

static int64_t sql_i(const char *fmt, const char *a, long long b)
{
    char sql[512];
    snprintf(sql, sizeof sql, fmt, a, b);
    return ch_sql(&env, sql);
}

/* The store's row of ip: state == want, held for vmid (0: any). */
static bool row_is(const char *ip, const char *state, int vmid)
{
    char key[IPPOOL_KEYLEN], f[256];
    key_of(ip, key);
    snprintf(f, sizeof f, "SELECT count(*) FROM addr_alloc WHERE addr = '%%s' AND state = '%s'%s",
             state, vmid ? " AND vmid = %lld" : " AND %lld = 0");
    return sql_i(f, key, vmid) == 1;
}

static bool seen_in_pool(const char *pool, const char *ip, int vmid, const char *node)
{
    struct fleet_addr *a;
    size_t n;
    struct ippool_addr want;
    assert_int_equal(ippool_addr_parse(ip, &want), IPPOOL_OK);
    fleet_pool_addrs(env.fl, pool, &a, &n);
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        found = ippool_addr_cmp(&a[i].addr, &want) == 0 && a[i].vmid == vmid &&
                (!node || strcmp(a[i].node, node) == 0);
    free(a);
    return found;
}

struct pickctx {
    const struct ippool *plan;
    bool with_inventory;
    const char *pool;
};

/* The core's pick as section 4 specifies it: store keys merged with the
 * walk's addresses. */
static int pick(void *ctx, const char *const *alloc, size_t n, const char *cursor,
                char out[STORE_ADDR_KEY])
{
    struct pickctx *p = ctx;
    struct ippool_addr *inv = NULL;
    size_t ni = 0;
    if (p->with_inventory)
        fleet_pool_taken(env.fl, p->pool, &inv, &ni);
    struct ippool_addr *t = calloc(n + ni + 1, sizeof *t);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        ippool_addr_from_key(alloc[i], &t[m++]);
    for (size_t i = 0; i < ni; i++)
        t[m++] = inv[i];
    for (size_t i = 1; i < m; i++) /* insertion sort: a handful */
        for (size_t j = i; j > 0 && ippool_addr_cmp(&t[j - 1], &t[j]) > 0; j--) {
            struct ippool_addr x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    struct ippool_addr c, got;
    bool hasc = cursor && *cursor && ippool_addr_from_key(cursor, &c) == IPPOOL_OK;
    enum ippool_err e = ippool_pick(p->plan, t, m, hasc ? &c : NULL, &got);
    free(t);
    free(inv);
    if (e != IPPOOL_OK)
        return STORE_E_FULL;
    ippool_addr_key(&got, out);
    return 0;
}

static void walk(void)
{
    assert_int_equal(core_net_walk(env.k), 0);
}

static bool net_seen(const struct ourvm *v)
{
    return sql_i("SELECT count(*) FROM vm_net WHERE seen_at > 0 AND vm_id = %s%lld", "",
                 (long long)v->id) == 1;
}

static bool seen_cb(void *v)
{
    return net_seen(v);
}

static void wait_job(const char *job)
{
    enum job_state st;
    assert_int_equal(core_wait_job(env.k, job, 60000, &st), 0);
    assert_int_equal(st, JOB_DONE);
}

/* ---- the rate bound (pure) ------------------------------------------------------ */

static void test_pace(void **state)
{
    (void)state;
    unsigned seed = 7;
    for (int per_s = 1; per_s <= 1000; per_s *= 5) {
        struct netwalk_pacer p = {.per_s = per_s};
        int64_t now = 1000000, starts[4000];
        int n = 0;
        /* a reader that asks at random moments, often too early */
        while (n < 4000 && now < 1000000 + 20000) {
            int64_t w = netwalk_pace(&p, now);
            if (w == 0)
                starts[n++] = now;
            now += w ? (rand_r(&seed) % (w + 1)) : rand_r(&seed) % 3;
        }
        /* no second (half-open window) ever holds more than per_s starts */
        for (int i = 0, j = 0; i < n; i++) {
            while (starts[i] - starts[j] >= 1000)
                j++;
            assert_true(i - j + 1 <= per_s);
        }
        /* and a reader that keeps asking gets close to the rate (waits are
         * whole ms, rounded up: at most 1 ms lost per read) */
        double secs = (starts[n - 1] - starts[0]) / 1000.0;
        if (n > 10 && per_s <= 125)
            assert_true(n - 1 >= 0.9 * per_s * secs);
    }
}

/* ---- the walk -------------------------------------------------------------------- */

/* Design section 7 item 2: an address in a foreign VM's ipconfig0 (made
 * behind proxd's back) is never handed out after one walk, and a forgotten
 * one comes back. */
static void test_foreign(void **state)
{
    (void)state;
    foreign_vm(600, "ip=10.9.1.50/24,gw=10.9.1.1");
    walk();
    assert_true(row_is("10.9.1.50", "foreign", 0));
    assert_true(seen_in_pool("tiny", "10.9.1.50", 600, "sv1"));
    const struct cfg_ippool *tiny = config_ippool(env.cfg, "tiny");
    /* the store alone, and with the walk's addresses: .51 either way */
    for (int inv = 0; inv < 2; inv++) {
        struct pickctx pc = {&tiny->plan, inv, "tiny"};
        struct store_addr_req q = {.pool = "tiny", .pick = pick, .ctx = &pc};
        struct store_error se;
        char job[16];
        snprintf(job, sizeof job, "j%d", inv);
        assert_int_equal(store_addr_reserve(env.st, job, &q, 1, &se), STORE_OK);
        char want[IPPOOL_KEYLEN];
        key_of("10.9.1.51", want);
        assert_string_equal(q.got, want);
        struct store_addr_req q2 = {.pool = "tiny", .pick = pick, .ctx = &pc};
        assert_int_equal(store_addr_reserve(env.st, "j2", &q2, 1, &se), STORE_E_FULL);
        assert_string_equal(se.field, "ippool");
        assert_int_equal(store_addr_release_job(env.st, job, NULL, 0, NULL, &se), STORE_OK);
    }
    /* gone from the config: forgotten once unseen (reconcile_interval 1 s
     * here: two intervals), then handed out again */
    struct pve_config_set cs = {.delete_keys = "ipconfig0"};
    conf_set("sv1", 600, &cs);
    int64_t until = h_now_ms() + 20000;
    while (row_is("10.9.1.50", "foreign", 0) && h_now_ms() < until) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        walk();
    }
    assert_false(row_is("10.9.1.50", "foreign", 0));
    assert_false(seen_in_pool("tiny", "10.9.1.50", 600, NULL));
}

/* An address proxd uses for A found on a foreign VM: a conflict, listed and
 * counted once, never fixed. */
static void test_conflict(void **state)
{
    (void)state;
    struct ourvm a;
    our_vm("conf-a", "10.9.0.52", "02:00:00:00:0A:52", &a);
    foreign_vm(601, "ip=10.9.0.52/24");
    walk();
    walk();
    struct core_ip_conflict c[4];
    assert_int_equal(core_ippool_conflicts(env.k, "lan", c, 4), 1);
    assert_string_equal(c[0].address, "10.9.0.52");
    assert_int_equal(c[0].vmid, a.vmid);
    assert_int_equal(c[0].seen_vmid, 601);
    assert_string_equal(c[0].seen_node, "sv1");
    assert_int_equal(core_ippool_conflicts_total(env.k, "lan"), 1);
    assert_true(row_is("10.9.0.52", "used", a.vmid)); /* not fixed */
    char *ipc = conf_get("sv1", 601, "ipconfig0");
    assert_string_equal(ipc, "ip=10.9.0.52/24");
    free(ipc);
    /* resolved by hand: gone from the list at the next walk, still counted */
    struct pve_config_set cs = {.ipconfig0 = "ip=10.77.0.5/24"};
    conf_set("sv1", 601, &cs);
    walk();
    assert_int_equal(core_ippool_conflicts(env.k, "lan", c, 4), 0);
    assert_int_equal(core_ippool_conflicts_total(env.k, "lan"), 1);
    /* another of proxd's VMs given A's address by hand: a conflict too (and
     * drift on that VM), nothing changed */
    struct ourvm b;
    our_vm("conf-b", "10.9.0.59", "02:00:00:00:0A:59", &b);
    struct pve_config_set cb = {.ipconfig0 = "ip=10.9.0.52/24,gw=10.9.0.1"};
    conf_set(b.node, b.vmid, &cb);
    walk();
    assert_int_equal(core_ippool_conflicts(env.k, "lan", c, 4), 1);
    assert_string_equal(c[0].address, "10.9.0.52");
    assert_int_equal(c[0].vmid, a.vmid);
    assert_int_equal(c[0].seen_vmid, b.vmid);
    assert_int_equal(core_ippool_conflicts_total(env.k, "lan"), 2);
    char d[256];
    assert_true(core_net_drift(env.k, b.id, d, sizeof d));
    assert_true(row_is("10.9.0.52", "used", a.vmid));
    assert_true(row_is("10.9.0.59", "used", b.vmid));
}

/* A reinstall's temporary VM carries the VM's address and MAC under a VMID
 * its job holds reserved: proxd's own, not a conflict; once the VMID is no
 * longer reserved, the same config is one. */
static size_t conflicts_seen_on(int vmid)
{
    struct core_ip_conflict c[16];
    size_t n = core_ippool_conflicts(env.k, "lan", c, 16), k = 0;
    for (size_t i = 0; i < n; i++)
        k += c[i].seen_vmid == vmid;
    return k;
}

static void test_reinstall_temp_not_conflict(void **state)
{
    (void)state;
    struct ourvm a;
    our_vm("temp-a", "10.9.0.61", "02:00:00:00:0A:61", &a);
    struct vmid_range r = {603, 603};
    int vmid = 0;
    assert_int_equal(store_vmid_reserve(env.st, &r, 1, NULL, 0, "job-reinstall", &vmid, NULL), 0);
    assert_int_equal(vmid, 603);
    foreign_vm(603, "ip=10.9.0.61/24");
    walk();
    walk();
    assert_int_equal(conflicts_seen_on(603), 0);
    assert_true(row_is("10.9.0.61", "used", a.vmid));
    assert_int_equal(store_vmid_release(env.st, 603, 0, NULL), 0);
    walk();
    assert_int_equal(conflicts_seen_on(603), 1);
}

/* Design section 7 item 4: the address stays through an HA move, a cores
 * change, a disk growth and a reconcile pass; a GUI change is drift. */
static void test_keeps_address(void **state)
{
    (void)state;
    struct ourvm v;
    our_vm("keep", "10.9.0.53", "02:00:00:00:0A:53", &v);
    walk();
    char d[256];
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
    /* HA moves it */
    const char *to = strcmp(v.node, "sv2") == 0 ? "sv3" : "sv2";
    char path[64], body[64];
    snprintf(path, sizeof path, "/_sim/vms/%d", v.vmid);
    snprintf(body, sizeof body, "{\"node\": \"%s\"}", to);
    ch_sim(&env, "POST", path, body);
    struct reconcile_report rep;
    assert_int_equal(core_reconcile(env.k, &rep), 0);
    struct vm_rec r;
    assert_int_equal(store_vm_get(env.st, v.vmid, &r, NULL), STORE_OK);
    assert_string_equal(r.node, to);
    vm_rec_release(&r);
    /* the move behind proxd's back is told once, as observed (issue 15) */
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM events WHERE type = 'vm.moved' AND vmid = %d"
             " AND node = '%s' AND data LIKE '%%\"observed\":true%%'",
             v.vmid, to);
    assert_int_equal(ch_sql(&env, q), 1);
    assert_int_equal(core_reconcile(env.k, &rep), 0);
    assert_int_equal(ch_sql(&env, q), 1);
    snprintf(v.node, sizeof v.node, "%s", to);
    /* cores, disk */
    char job[40];
    struct core_error ce = {0};
    assert_int_equal(core_vm_update(env.k, v.vmid, "alice", 2, 0, job, &ce), 0);
    wait_job(job);
    assert_int_equal(core_vm_resize(env.k, v.vmid, "alice", 12, job, &ce), 0);
    wait_job(job);
    assert_int_equal(core_reconcile(env.k, &rep), 0);
    walk();
    char *ipc = conf_get(v.node, v.vmid, "ipconfig0"), *net0 = conf_get(v.node, v.vmid, "net0");
    assert_string_equal(ipc, v.ipconfig0);
    assert_string_equal(net0, v.net0);
    free(ipc);
    free(net0);
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
    assert_true(row_is("10.9.0.53", "used", v.vmid));
    assert_true(seen_in_pool("lan", "10.9.0.53", v.vmid, to));
    /* someone changes ipconfig0 in the GUI: reported, nothing changed */
    struct pve_config_set cs = {.ipconfig0 = "ip=10.9.0.66/24,gw=10.9.0.1"};
    conf_set(v.node, v.vmid, &cs);
    walk();
    assert_true(core_net_drift(env.k, v.id, d, sizeof d));
    assert_non_null(strstr(d, "ipconfig0 is 'ip=10.9.0.66/24,gw=10.9.0.1'"));
    assert_non_null(strstr(d, v.ipconfig0));
    ipc = conf_get(v.node, v.vmid, "ipconfig0");
    assert_string_equal(ipc, "ip=10.9.0.66/24,gw=10.9.0.1");
    free(ipc);
    /* and the bridge */
    struct pve_config_set cn = {.net0 = "virtio=02:00:00:00:0A:53,bridge=vmbr0,tag=42"};
    conf_set(v.node, v.vmid, &cn);
    walk();
    assert_true(core_net_drift(env.k, v.id, d, sizeof d));
    assert_non_null(strstr(d, "net0 bridge is 'vmbr0' (proxd set 'vmbr1')"));
    /* put back by hand: no drift */
    struct pve_config_set back = {.ipconfig0 = v.ipconfig0, .net0 = v.net0};
    conf_set(v.node, v.vmid, &back);
    walk();
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
}

/* ---- the guest agent (design section 7 item 7) ---------------------------------- */

static void test_agent(void **state)
{
    (void)state;
    /* the agent answers late: "not running" for its first looks */
    struct ourvm v;
    agent_late = true;
    our_vm("agent", "10.9.0.54", "02:00:00:00:0A:54", &v);
    agent_late = false;
    char path[128];
    snprintf(path, sizeof path, "^/nodes/[^/]+/qemu/%d/agent/", v.vmid);
    core_net_confirm(env.k, v.id);
    assert_true(h_wait(seen_cb, &v, 20000));
    /* asked until it answered: both "not running" were seen (a walk may
     * have asked before this test did, so no count of seconds from here) */
    json_t *fl = h_sim_ctl(env.port, "GET", "/_sim/faults", NULL);
    size_t fi;
    json_t *fr;
    int hits = -1;
    json_array_foreach(fl, fi, fr)
    {
        if (strcmp(json_string_value(json_object_get(fr, "path")), path) == 0)
            hits = (int)json_integer_value(json_object_get(fr, "hits"));
    }
    json_decref(fl);
    assert_int_equal(hits, 2);
    json_t *seen = NULL;
    assert_int_equal(store_vm_net_seen_get(env.st, v.id, &seen, NULL), STORE_OK);
    char *txt = json_dumps(seen, 0);
    assert_non_null(strstr(txt, "\"address\": \"10.9.0.54\""));
    assert_non_null(strstr(txt, "02:00:00:00:0a:54"));
    free(txt);
    json_decref(seen);

    /* ipconfig0 changed while it runs: the guest keeps the address it
     * booted with, which is proxd's: confirmed; the walk reports drift */
    struct ourvm w;
    our_vm("agent-chg", "10.9.0.55", "02:00:00:00:0A:55", &w);
    struct pve_config_set cs = {.ipconfig0 = "ip=10.9.0.67/24"};
    conf_set(w.node, w.vmid, &cs);
    core_net_confirm(env.k, w.id);
    assert_true(h_wait(seen_cb, &w, 20000));
    walk();
    char d[256];
    assert_true(core_net_drift(env.k, w.id, d, sizeof d));

    /* agent disabled, and no agent: never confirmed, never failed */
    struct ourvm x, y;
    our_vm_agent("agent-off", "10.9.0.56", "02:00:00:00:0A:56", "enabled=0", &x);
    our_vm_agent("agent-none", "10.9.0.57", "02:00:00:00:0A:57", "", &y);
    core_net_confirm(env.k, x.id);
    core_net_confirm(env.k, y.id);
    walk();
    /* a VM with its agent on is confirmed meanwhile (the walk asks for it):
     * these two had every chance */
    struct ourvm z;
    our_vm("agent-ctl", "10.9.0.58", "02:00:00:00:0A:58", &z);
    walk();
    assert_true(h_wait(seen_cb, &z, 20000));
    assert_false(net_seen(&x));
    assert_false(net_seen(&y));
    struct vm_rec r;
    assert_int_equal(store_vm_get(env.st, x.vmid, &r, NULL), STORE_OK);
    assert_int_equal(r.state, VMS_ENABLED);
    vm_rec_release(&r);
    assert_int_equal(store_vm_get(env.st, y.vmid, &r, NULL), STORE_OK);
    assert_int_equal(r.state, VMS_ENABLED);
    vm_rec_release(&r);
}

static int group_up(void **state)
{
    (void)state;
    struct ch_opts o = {.reconcile_interval = 1, .extra = POOLS};
    ch_up(&env, &o);
    return 0;
}

static int group_down(void **state)
{
    (void)state;
    ch_down(&env);
    return 0;
}

/* ---- network_drift = restore ------------------------------------------------------ */

/* The config writes pvesim served (PUT .../config). */
static long put_configs(void)
{
    json_t *r = h_sim_ctl(env.port, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(
        json_object_get(json_object_get(r, "calls"), "PUT /nodes/{node}/qemu/{vmid}/config"));
    json_decref(r);
    return n;
}

static void test_restore(void **state)
{
    (void)state;
    /* the test walks: a background walk (every reconcile_interval) could
     * put the config back between the test's change and its fault rule */
    struct ch_opts o = {
        .reconcile_interval = 3600, .proxd_extra = "network_drift = restore\n", .extra = POOLS};
    ch_up(&env, &o);
    struct ourvm v;
    our_vm("restore", "10.9.0.60", "02:00:00:00:0A:60", &v);
    struct pve_config_set cs = {.ipconfig0 = "ip=10.9.0.61/24",
                                .net0 = "virtio=02:00:00:00:0B:60,bridge=vmbr0"};
    conf_set(v.node, v.vmid, &cs);
    walk();
    char d[256];
    assert_true(core_net_drift(env.k, v.id, d, sizeof d));
    assert_non_null(strstr(d, "net0 MAC is '02:00:00:00:0B:60'"));
    char *ipc = conf_get(v.node, v.vmid, "ipconfig0"), *net0 = conf_get(v.node, v.vmid, "net0");
    assert_string_equal(ipc, v.ipconfig0);
    assert_string_equal(net0, v.net0);
    free(ipc);
    free(net0);
    walk(); /* what was put back is no drift */
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
    assert_true(row_is("10.9.0.60", "used", v.vmid));
    /* the restore's answer dropped (served, then the connection closed):
     * put back with one write. The write carries the config's digest: sent
     * again, it failed "checksum mismatch" against its own first run and
     * the walk logged "network not restored" */
    conf_set(v.node, v.vmid, &cs);
    char rule[256];
    snprintf(rule, sizeof rule,
             "{\"method\":\"PUT\",\"path\":\"/qemu/%d/config$\",\"kind\":\"drop\","
             "\"count\":1}",
             v.vmid);
    long before = put_configs();
    ch_sim(&env, "POST", "/_sim/faults", rule);
    walk();
    json_t *fl = h_sim_ctl(env.port, "GET", "/_sim/faults", NULL);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(fl, 0), "hits")), 1);
    json_decref(fl);
    ch_sim(&env, "DELETE", "/_sim/faults", NULL);
    assert_int_equal(put_configs() - before, 1);
    ipc = conf_get(v.node, v.vmid, "ipconfig0");
    net0 = conf_get(v.node, v.vmid, "net0");
    assert_string_equal(ipc, v.ipconfig0);
    assert_string_equal(net0, v.net0);
    free(ipc);
    free(net0);
    ch_down(&env);
}

/* ---- network_drift = adopt ------------------------------------------------------- */

static int64_t net_int(const struct ourvm *v, const char *col, const char *want)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM vm_net WHERE vm_id = %lld AND %s = '%s'",
             (long long)v->id, col, want);
    return ch_sql(&env, sql);
}

static void test_adopt(void **state)
{
    (void)state;
    struct ch_opts o = {
        .reconcile_interval = 3600, .proxd_extra = "network_drift = adopt\n", .extra = POOLS};
    ch_up(&env, &o);
    struct ourvm v, w;
    our_vm("adopt", "10.9.0.62", "02:00:00:00:0A:62", &v);
    our_vm("adopt2", "10.9.0.64", "02:00:00:00:0A:64", &w);
    /* a free address of the pool, a new MAC: taken over */
    struct pve_config_set cs = {.ipconfig0 = "ip=10.9.0.63/24,gw=10.9.0.1",
                                .net0 = "virtio=02:00:00:00:0C:62,bridge=vmbr1,tag=42"};
    conf_set(v.node, v.vmid, &cs);
    walk();
    char d[256];
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
    assert_true(row_is("10.9.0.63", "used", v.vmid));
    assert_true(row_is("10.9.0.62", "quarantine", v.vmid));
    assert_int_equal(net_int(&v, "ipconfig0", "ip=10.9.0.63/24,gw=10.9.0.1"), 1);
    assert_int_equal(net_int(&v, "mac", "02:00:00:00:0C:62"), 1);
    walk();
    assert_false(core_net_drift(env.k, v.id, d, sizeof d));
    /* the other VM's address: reported, nothing taken */
    struct pve_config_set cw = {.ipconfig0 = "ip=10.9.0.63/24,gw=10.9.0.1"};
    conf_set(w.node, w.vmid, &cw);
    walk();
    assert_true(core_net_drift(env.k, w.id, d, sizeof d));
    assert_true(row_is("10.9.0.63", "used", v.vmid));
    assert_true(row_is("10.9.0.64", "used", w.vmid));
    assert_int_equal(net_int(&w, "ipconfig0", w.ipconfig0), 1);
    /* an address no pool hands out: reported */
    struct pve_config_set cx = {.ipconfig0 = "ip=10.9.0.200/24"};
    conf_set(w.node, w.vmid, &cx);
    walk();
    assert_true(core_net_drift(env.k, w.id, d, sizeof d));
    assert_true(row_is("10.9.0.64", "used", w.vmid));
    /* a held one: reported */
    struct store_error se;
    char key[IPPOOL_KEYLEN];
    key_of("10.9.0.65", key);
    assert_int_equal(store_addr_hold(env.st, "lan", key, "x", &se), STORE_OK);
    struct pve_config_set ch = {.ipconfig0 = "ip=10.9.0.65/24"};
    conf_set(w.node, w.vmid, &ch);
    walk();
    assert_true(core_net_drift(env.k, w.id, d, sizeof d));
    assert_true(row_is("10.9.0.65", "held", 0));
    assert_true(row_is("10.9.0.64", "used", w.vmid));
    ch_down(&env);
}

/* ---- under random faults ------------------------------------------------------------ */

/* The walk and the agent's confirmation while pvesim fails a seeded random
 * share of the calls (500s, 596s, lock timeouts, failing tasks, delays,
 * hangs) and, every other walk, a node dies. What a failed or timed-out read shows
 * is no answer: never "address absent" (the pick would hand it out), never
 * "address changed" (drift, a restore written), never a foreign address or
 * conflict that is not there. After each walk, with the faults off, against
 * pvesim's state and the store: every address on a VM is in the walk's
 * list and its store row is right (used by its VM, or foreign), nothing
 * else is foreign, no conflict, no drift but the real one, no config
 * written but the real drift's restore, no address on two VMs (a pooled
 * creation runs during each walk without a dead node), and each walk ended
 * within a bound. Then, faults off: the drift restored, and every address
 * confirmed by the guest agent (asked while the faults ran: a failed agent
 * call is no answer). NETWALK_FAULT_SEEDS and NETWALK_FAULT_ROUNDS make it
 * longer (make soak). */

#define NF_OURS 2
#define NF_FOREIGN 3
#define NF_WALK_BOUND_MS 60000

struct nf_vm {
    int vmid;
    const char *pool, *ip;
    char ipconfig0[128], net0[128]; /* as set */
};

static struct nf_vm nf_ours[NF_OURS + 1], nf_foreign[NF_FOREIGN];
static struct ourvm nf_our[NF_OURS + 1]; /* the last: the one whose config drifts */

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

/* Rules whose draws add up to about `rate` of each method's calls, every
 * kind (as tests/core/test_faults_random.py does): reads get what applies
 * to a read. */
static void nf_faults_on(double rate)
{
    static const struct {
        const char *kind;
        double get, write;
    } kinds[] = {{"error", 0.45, 0.25},   {"596", 0.20, 0.10},   {"lock_timeout", 0, 0.15},
                 {"task_error", 0, 0.30}, {"delay", 0.25, 0.15}, {"hang", 0.10, 0.05}};
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    for (int m = 0; m < 4; m++) {
        double left = 1.0;
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
            double p = rate * (m == 0 ? kinds[k].get : kinds[k].write);
            if (p <= 0)
                continue;
            json_t *r =
                json_pack("{s:s,s:s,s:s,s:f}", "kind", kinds[k].kind, "method", methods[m], "path",
                          "^/(nodes|cluster)/", "rate", p / left > 1 ? 1 : p / left);
            left -= p;
            if (strcmp(kinds[k].kind, "delay") == 0)
                json_object_set_new(r, "delay_ms", json_integer(400));
            char *s = json_dumps(r, 0);
            ch_sim(&env, "POST", "/_sim/faults", s);
            free(s);
            json_decref(r);
        }
    }
}

static int64_t nf_fault_hits(void)
{
    json_t *f = h_sim_ctl(env.port, "GET", "/_sim/faults", NULL);
    int64_t n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(f, i, r) n += json_integer_value(json_object_get(r, "hits"));
    json_decref(f);
    return n;
}

static const char *conf_str(json_t *state, int vmid, const char *key)
{
    json_t *v = ch_state_vm(state, vmid);
    const char *s = json_string_value(json_object_get(json_object_get(v, "conf"), key));
    return s ? s : "";
}

/* The invariants after a walk (faults off; a dead node stays dead). */
static void nf_check(const char *drifted)
{
    char d[256];
    json_t *state = ch_state(&env);
    for (int i = 0; i < NF_FOREIGN; i++) {
        struct nf_vm *v = &nf_foreign[i];
        if (!seen_in_pool(v->pool, v->ip, v->vmid, NULL))
            fail_msg("foreign %s of vmid=%d left out of the walk's list", v->ip, v->vmid);
        assert_true(row_is(v->ip, "foreign", 0));
        assert_string_equal(conf_str(state, v->vmid, "ipconfig0"), v->ipconfig0);
    }
    for (int i = 0; i <= NF_OURS; i++) {
        struct nf_vm *v = &nf_ours[i];
        const char *ipc = conf_str(state, v->vmid, "ipconfig0");
        const char *net0 = conf_str(state, v->vmid, "net0");
        /* the address its config has; the drifted one's: or, while no walk
         * has read it since it changed, the one before */
        char on[64] = "";
        if (sscanf(ipc, "ip=%63[0-9.]", on) != 1 ||
            !(seen_in_pool(v->pool, on, v->vmid, NULL) ||
              (i == NF_OURS && seen_in_pool(v->pool, v->ip, v->vmid, NULL))))
            fail_msg("%s of proxd's vmid=%d left out of the walk's list", on, v->vmid);
        if (!row_is(v->ip, "used", v->vmid))
            fail_msg("%s of proxd's vmid=%d is not used by it", v->ip, v->vmid);
        if (i < NF_OURS) {
            if (core_net_drift(env.k, nf_our[i].id, d, sizeof d))
                fail_msg("vmid=%d: drift reported, none made: %s", v->vmid, d);
            /* nothing was written: the config is as set */
            assert_string_equal(ipc, v->ipconfig0);
            assert_string_equal(net0, v->net0);
        } else if (strcmp(ipc, v->ipconfig0) != 0) {
            /* the real drift: as made, or restored, never anything else */
            assert_string_equal(ipc, drifted);
        }
    }
    assert_int_equal(
        sql_i("SELECT count(*) FROM addr_alloc WHERE state = '%s' AND %lld = 0", "foreign", 0),
        NF_FOREIGN);
    struct core_ip_conflict c[8];
    size_t nc = core_ippool_conflicts(env.k, NULL, c, 8);
    if (nc)
        fail_msg("%zu conflict(s) reported, none made: %s of vmid=%d on vmid=%d", nc, c[0].address,
                 c[0].vmid, c[0].seen_vmid);
    /* no address on two VMs */
    char seen[64][64];
    int ns = 0;
    size_t i;
    json_t *vm;
    json_array_foreach(json_object_get(state, "vms"), i, vm)
    {
        int vmid = (int)json_integer_value(json_object_get(vm, "vmid"));
        const char *ipc = conf_str(state, vmid, "ipconfig0");
        char a[64];
        /* a failed creation's partial VM keeps its address until the
         * reconciler removes it (a leftover): it is no VM of anyone's */
        if (sscanf(ipc, "ip=%63[0-9.]", a) != 1 ||
            sql_i("SELECT count(*) FROM leftovers WHERE node = '%s' AND vmid = %lld",
                  json_string_value(json_object_get(vm, "node")), vmid))
            continue;
        for (int k = 0; k < ns; k++)
            if (strcmp(seen[k], a) == 0)
                fail_msg("%s is on two VMs (vmid=%d and one before)", a, vmid);
        if (ns < 64)
            snprintf(seen[ns++], sizeof seen[0], "%s", a);
    }
    json_decref(state);
}

static bool all_seen(void *arg)
{
    (void)arg;
    for (int i = 0; i <= NF_OURS; i++)
        if (!net_seen(&nf_our[i]))
            return false;
    return true;
}

static void nf_seed(unsigned seed, int rounds)
{
    char sd[16];
    snprintf(sd, sizeof sd, "%u", seed);
    struct ch_opts o = {.reconcile_interval = 3600, /* the test walks */
                        .timeout = 2,               /* a hang costs 2 s */
                        .proxd_extra = "network_drift = restore\n",
                        .extra = POOLS,
                        .sim_seed = sd};
    ch_up(&env, &o);
    static const char *const our_ip[] = {"10.9.0.50", "10.9.0.51", "10.9.0.52", "10.9.0.53"};
    static const char *const for_ip[] = {"10.9.0.60", "10.9.0.61", "10.9.1.50"};
    for (int i = 0; i <= NF_OURS; i++) {
        char name[16], mac[18];
        snprintf(name, sizeof name, "nf-%d", i);
        snprintf(mac, sizeof mac, "02:00:00:00:0F:%02d", i);
        our_vm(name, our_ip[i], mac, &nf_our[i]);
        nf_ours[i] = (struct nf_vm){.vmid = nf_our[i].vmid, .pool = "lan", .ip = our_ip[i]};
        snprintf(nf_ours[i].ipconfig0, sizeof nf_ours[i].ipconfig0, "%s", nf_our[i].ipconfig0);
        snprintf(nf_ours[i].net0, sizeof nf_ours[i].net0, "%s", nf_our[i].net0);
    }
    for (int i = 0; i < NF_FOREIGN; i++) {
        struct nf_vm *v = &nf_foreign[i];
        *v = (struct nf_vm){.vmid = 700 + i, .pool = i < 2 ? "lan" : "tiny", .ip = for_ip[i]};
        snprintf(v->ipconfig0, sizeof v->ipconfig0, "ip=%s/24", for_ip[i]);
        foreign_vm_on(i + 1, v->vmid, v->ipconfig0);
    }
    walk(); /* the baseline: everything read once */
    nf_check(NULL);
    /* a real drift, to be restored when a read and a write succeed */
    const char *drifted = "ip=10.9.0.68/24";
    struct ourvm *dv = &nf_our[NF_OURS];
    struct pve_config_set cs = {.ipconfig0 = drifted};
    conf_set(dv->node, dv->vmid, &cs);
    unsigned rng = seed;
    double rate = 0.15 + (rand_r(&rng) % 20) / 100.0;
    int64_t hits = 0, slowest = 0, t_rounds = h_now_ms(), asked = 0;
    int dead = 0, made = 0;
    /* the agent's confirmation asked again under faults for the last (up
     * to) three walks, within its 60 s: its first answers are errors (one
     * per VM at least), then the random ones */
    int ask_round = rounds > 3 ? rounds - 3 : 0;
    for (int r = 0; r < rounds; r++) {
        if (r == ask_round) {
            ch_sql(&env, "UPDATE vm_net SET seen_at = 0, seen = NULL");
            json_t *first = json_pack("{s:s,s:s,s:s,s:i}", "method", "GET", "path", "/agent/",
                                      "kind", "error", "count", NF_OURS + 1);
            char *fs = json_dumps(first, 0);
            ch_sim(&env, "POST", "/_sim/faults", fs);
            free(fs);
            json_decref(first);
        }
        nf_faults_on(rate);
        if (r == ask_round) {
            asked = h_now_ms();
            for (int i = 0; i <= NF_OURS; i++)
                core_net_confirm(env.k, nf_our[i].id);
        }
        /* sometimes a node dies (its VMs cannot be read) for this walk */
        int down = r % 2 ? 1 + rand_r(&rng) % 3 : 0;
        char path[32];
        snprintf(path, sizeof path, "/_sim/nodes/sv%d", down);
        if (down) {
            ch_sim(&env, "POST", path,
                   rand_r(&rng) % 2 ? "{\"state\": \"offline\"}" : "{\"state\": \"blackhole\"}");
            fleet_refresh(env.fl, true);
            dead++;
        }
        /* a pooled creation meanwhile (in the rounds without a dead node) */
        struct vm_request req;
        char name[16], job[40];
        snprintf(name, sizeof name, "nfc-%d", r);
        ch_request(&req, "ubuntu", name, 1, 512, 10);
        req.pools_given = true;
        req.npools = 1;
        snprintf(req.pools[0], sizeof req.pools[0], "lan");
        int vmid = 0;
        struct core_error ce = {0};
        bool submitted = !down && core_create(env.k, &req, job, &vmid, &ce) == 0;
        int64_t t0 = h_now_ms();
        core_net_walk(env.k); /* -1 when some VM was not read: expected here */
        int64_t took = h_now_ms() - t0;
        if (took > slowest)
            slowest = took;
        if (took > NF_WALK_BOUND_MS)
            fail_msg("round %d: a walk took %lld ms", r, (long long)took);
        enum job_state st = JOB_QUEUED;
        if (submitted) {
            assert_int_equal(core_wait_job(env.k, job, 120000, &st), 0);
            made += st == JOB_DONE;
        }
        hits += nf_fault_hits();
        ch_sim(&env, "DELETE", "/_sim/faults", NULL);
        nf_check(drifted);
        if (down) {
            ch_sim(&env, "POST", path, "{\"state\": \"online\"}");
            fleet_refresh(env.fl, true);
        }
    }
    t_rounds = h_now_ms() - t_rounds;
    /* faults over: the drift is restored by the next walks, every address
     * confirmed within the agent's 60 s */
    fleet_refresh(env.fl, true);
    walk();
    walk();
    nf_check(NULL);
    char d[256];
    assert_false(core_net_drift(env.k, dv->id, d, sizeof d));
    int64_t t_wait = h_now_ms();
    if (!h_wait(all_seen, NULL, (int)(asked + 55000 - h_now_ms())))
        fail_msg("an address not confirmed by the guest agent after the faults");
    t_wait = h_now_ms() - t_wait;
    for (int i = 0; i <= NF_OURS; i++) {
        json_t *seen = NULL;
        assert_int_equal(store_vm_net_seen_get(env.st, nf_our[i].id, &seen, NULL), STORE_OK);
        char *txt = json_dumps(seen, 0);
        char want[64];
        snprintf(want, sizeof want, "\"address\": \"%s\"", nf_ours[i].ip);
        assert_non_null(strstr(txt, want));
        free(txt);
        json_decref(seen);
    }
    print_message(
        "[ figures  ] seed %u: %d walks at fault rate %.2f, %lld fault hits, %d with a "
        "dead node, %d of %d pooled creations done, slowest walk %lld ms, rounds %lld ms, "
        "confirmations after them %lld ms\n",
        seed, rounds, rate, (long long)hits, dead, made, rounds - dead, (long long)slowest,
        (long long)t_rounds, (long long)t_wait);
    assert_true(hits > 0);
    ch_down(&env);
}

static void test_random_faults(void **state)
{
    (void)state;
    const char *seeds = getenv("NETWALK_FAULT_SEEDS");
    int rounds = env_int("NETWALK_FAULT_ROUNDS", 3);
    if (!seeds || !*seeds)
        seeds = "31";
    char *copy = strdup(seeds), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        nf_seed((unsigned)strtoul(t, NULL, 10), rounds);
    free(copy);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest pure[] = {cmocka_unit_test(test_pace)};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_foreign),
        cmocka_unit_test(test_conflict),
        cmocka_unit_test(test_reinstall_temp_not_conflict),
        cmocka_unit_test(test_keeps_address),
        cmocka_unit_test(test_agent),
    };
    const struct CMUnitTest restore_tests[] = {cmocka_unit_test(test_restore),
                                               cmocka_unit_test(test_adopt),
                                               cmocka_unit_test(test_random_faults)};
    int rc = cmocka_run_group_tests(pure, NULL, NULL);
    rc |= cmocka_run_group_tests(tests, group_up, group_down);
    rc |= cmocka_run_group_tests(restore_tests, NULL, NULL);
    return rc;
}
