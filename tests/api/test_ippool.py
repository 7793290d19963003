"""IP address pools through the API (docs/design/ippool.md section 7, items
1, 3, 5, 6): the promise is that no two VMs ever get one address, that a
creation that cannot have one is refused cleanly, and that nothing is lost
or doubled by a crash.

1. 200 concurrent creations against a pool with 150 free addresses, through
   two proxd on one private PostgreSQL, then through one proxd on SQLite:
   exactly 150 VMs with 150 distinct addresses (pvesim's ipconfig0 and
   net0, and addr_alloc), 50 clean 409 `address_exhausted` naming the pool,
   no VM beyond them in pvesim, no `reserved` row.
2. Bad input: an unknown pool, an address outside the pool, an address in
   use, a user asking for an address; each names the field.
3. Quarantine: a deleted VM's address is not handed out before the pool's
   quarantine has passed, then it is.
4. Placement only on the nodes a pool reaches (the skipped ones say why);
   a failover keeps the address; an owner's address quota.
5. kill -9 during creations with a pool, three times: after each restart
   every `used` address belongs to a live record (or a leftover), every
   live record's address is `used` by it, no address twice, none
   `reserved` once the jobs are settled.
6. A VM list page shows every record's network when other owners'
   records (more than a page of them) lie between its ids.

Each backend runs on a pvesim of its own (both databases would hand out the
same VMIDs and addresses to one Proxmox otherwise)."""
import concurrent.futures
import contextlib
import os
import random
import re
import sqlite3
import subprocess
import tempfile
import time

from lib.cases import case, finish
from lib.db import expire_leases, query, wait_settled
from lib.env import PROXCTL
from lib.pg import PrivatePG
from lib.proxd import Proxd, shutdown
from lib.sim import Sim
from lib.wait import wait_for

SEED = 20261203
rng = random.Random(SEED)

# 150 hand-out addresses: .10 - .159 of 10.20.0.0/24 (gateway .1)
POOLS = """
[ippool lan]
cidr = 10.20.0.0/24
gateway = 10.20.0.1
ranges = 10.20.0.10-10.20.0.159
dns = 10.20.0.53
searchdomain = example.test
bridge = vmbr0
vlan = 20

[ippool tiny]
cidr = 10.30.0.0/29
gateway = 10.30.0.1
ranges = 10.30.0.2-10.30.0.3
bridge = vmbr1
quarantine = 4

[ippool crash]
cidr = 10.40.0.0/24
gateway = 10.40.0.1
bridge = vmbr0
quarantine = 0

[ippool only5]
cidr = 10.60.0.0/24
gateway = 10.60.0.1
bridge = vmbr0
nodes = sv5

[ippool page]
cidr = 10.70.0.0/24
gateway = 10.70.0.1
bridge = vmbr0

[quota frank]
addresses = 1
"""


def pooled(px):
    """The API tests' configuration with the pools, ubuntu's default pool
    lan, and no VM count quota for the admin's owner."""
    with open(px.conf) as f:
        text = f.read()
    text = text.replace("[os ubuntu]\nvmid_range = 1000-1999\n",
                        "[os ubuntu]\nvmid_range = 1000-1999\nippools = lan\n")
    text = text.replace("[quota default]\nvms = 100\n", "[quota default]\nvms = 0\n")
    with open(px.conf, "w") as f:
        f.write(text + POOLS)


def spec(name, **kw):
    b = {"os": "ubuntu", "name": name, "cores": 1, "memory_mb": 512, "disk_gb": 10}
    b.update(kw)
    return b


def in_parallel(fn, n, workers=50):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, range(n)))


def key_of(addr):
    """ippool_addr_key() of an IPv4 address."""
    a, b, c, d = (int(x) for x in addr.split("."))
    return "4" + "0" * 24 + "%02x%02x%02x%02x" % (a, b, c, d)


def addr_of(key):
    v = int(key[1:], 16)
    return "%d.%d.%d.%d" % (v >> 24 & 255, v >> 16 & 255, v >> 8 & 255, v & 255)


def sim_configs(sim):
    """{vmid: config} of every VM in pvesim that is not a template."""
    return {v["vmid"]: v["conf"] for v in sim.state()["vms"] if not v["conf"].get("template")}


def sim_address(conf):
    m = re.match(r"ip=([0-9.]+)/(\d+)", conf.get("ipconfig0", ""))
    return m.group(1) if m else None


def alloc(db, pool):
    return query(db, "SELECT addr, state, vm_id, vmid, job FROM addr_alloc WHERE pool = '%s'"
                 % pool)


def check_invariants(db, sim, pool):
    """No address twice (store and pvesim), every used row a live record's
    or a leftover's, every live record's address used by it, nothing
    reserved; returns {vmid: address} of the live records."""
    rows = alloc(db, pool)
    assert not [r for r in rows if r[1] == "reserved"], rows
    live = {r[0]: r[1] for r in query(
        db, "SELECT id, vmid FROM vms WHERE state IN ('creating', 'enabled', 'deleting')")}
    left_jobs = {r[0] for r in query(db, "SELECT job FROM leftovers")}
    used = [r for r in rows if r[1] == "used"]
    for addr, _, vm_id, vmid, job in used:
        assert vm_id in live or job in left_jobs, \
            "address %s used by record %s (VMID %s), which is gone" % (addr_of(addr), vm_id, vmid)
    by_vm = {}
    for addr, _, vm_id, _, _ in used:
        assert vm_id not in by_vm, "record %s holds two addresses of %s" % (vm_id, pool)
        by_vm[vm_id] = addr_of(addr)
    # a live record of this pool (its job asked for it) holds one used address
    for vm_id, req in query(db, "SELECT v.id, j.request FROM vms v JOIN jobs j ON j.id = v.job"
                            " WHERE v.state IN ('creating', 'enabled', 'deleting')"):
        if '"%s"' % pool in str(req) and '"ippools"' in str(req):
            assert vm_id in by_vm, "live record %s has no used address" % vm_id
    # in pvesim: no address on two VMs (a leftover, which its creation's
    # new VM may share until it is removed, aside)
    left_vmids = {r[0] for r in query(db, "SELECT vmid FROM leftovers")}
    seen = {}
    for vmid, c in sim_configs(sim).items():
        a = sim_address(c)
        if a and vmid not in left_vmids:
            assert a not in seen, "address %s on VMs %d and %d" % (a, seen[a], vmid)
            seen[a] = vmid
    return {live[i]: a for i, a in by_vm.items() if i in live}


def concurrent_200(pxs, sim, admin, label):
    """200 creations at once through pxs (alternately) for lan's 150."""
    answers = in_parallel(
        lambda i: pxs[i % len(pxs)].call("POST", "/v1/vms", admin,
                                         spec("%s-%03d" % (label, i))), 200)
    ok = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    assert len(ok) == 150, (len(ok), [a.text for a in refused][:3])
    assert len(refused) == 50
    for a in refused:
        e = a.json()["error"]
        assert a.status_code == 409 and e["code"] == "address_exhausted", a.text
        assert e["details"] == {"field": "ippools", "pool": "lan"}, a.text
        assert "lan" in e["message"], a.text
    db = pxs[0].db
    wait_settled(db, deadline=240)
    jobs = query(db, "SELECT state, count(*) FROM jobs WHERE kind = 'create' GROUP BY state")
    assert dict(jobs) == {"done": 150}, jobs
    confs = sim_configs(sim)
    assert len(confs) == 150, "pvesim has %d VMs" % len(confs)
    addrs = {}
    macs = set()
    for vmid, c in confs.items():
        a = sim_address(c)
        assert a and c["ipconfig0"] == "ip=%s/24,gw=10.20.0.1" % a, c
        assert 10 <= int(a.split(".")[3]) <= 159 and a.startswith("10.20.0."), a
        assert c.get("nameserver") == "10.20.0.53" and c.get("searchdomain") == "example.test", c
        m = re.match(r"virtio=([0-9A-F:]{17}),bridge=vmbr0,tag=20$", c.get("net0", ""))
        assert m, c.get("net0")
        macs.add(m.group(1))
        assert a not in addrs, "address %s on VMs %d and %d" % (a, addrs[a], vmid)
        addrs[a] = vmid
    assert len(addrs) == 150 and len(macs) == 150
    store = check_invariants(db, sim, "lan")
    assert store == {v: a for a, v in addrs.items()}, "the store and pvesim disagree"
    rows = alloc(db, "lan")
    assert len(rows) == 150 and all(r[1] == "used" for r in rows)
    # the record shows its network
    vmid = next(iter(confs))
    rec = pxs[-1].call("GET", "/v1/vms/%d" % vmid, admin).json()
    net = rec["network"]
    assert net["mac"] in macs and net["bridge"] == "vmbr0" and net["vlan"] == 20, net
    assert net["addresses"] == [{"pool": "lan", "address": addrs and sim_address(confs[vmid]),
                                 "prefix": 24, "gateway": "10.20.0.1"}], net
    listed = pxs[0].call("GET", "/v1/vms?limit=1000", admin).json()["vms"]
    with_addr = [v for v in listed if v.get("network") and v["network"]["addresses"]]
    assert len(with_addr) == 150, len(with_addr)


# ---- PostgreSQL: two proxd on one database ------------------------------------------

pg = PrivatePG()
sim = Sim()
px1 = Proxd(sim, database=pg.url)
ADMIN = px1.token("ops", "admin")
px2 = Proxd(sim, database=pg.url)
px2.secrets += px1.secrets
for p in (px1, px2):
    pooled(p)
try:
    px1.start()
    px2.start()

    @case
    def pg_200_creations_for_150_addresses():
        concurrent_200([px1, px2], sim, ADMIN, "pg")
finally:
    try:
        shutdown(px2, sim)
        if px1.alive():
            px1.stop()
    finally:
        pg.stop()

# ---- SQLite: one proxd ------------------------------------------------------------

sim = Sim()
px = Proxd(sim)
pooled(px)
ADMIN = px.token("ops", "admin")
USER = px.token("carol")
FRANK = px.token("frank")
px.start()


def create(body, token=None):
    return px.call("POST", "/v1/vms", token or ADMIN, body)


def done(r):
    assert r.status_code == 202, r.text
    j = px.wait_job(r.json()["job"], ADMIN, deadline=90)
    assert j["state"] == "done", j
    return r.json()["vmid"]


def address_of(vmid):
    return px.call("GET", "/v1/vms/%d" % vmid, ADMIN).json()["network"]["addresses"][0]["address"]


@contextlib.contextmanager
def placed_in_order():
    """px restarted with placement = ordered (the configuration's order,
    sv1 to sv5, for every creation), then again as it was (spread)."""
    with open(px.conf) as f:
        text = f.read()
    with open(px.conf, "w") as f:
        f.write(text.replace("[proxd]\n", "[proxd]\nplacement = ordered\n", 1))
    px.stop()
    px.start()
    try:
        yield
    finally:
        with open(px.conf, "w") as f:
            f.write(text)
        px.stop()
        px.start()


try:
    @case
    def sqlite_200_creations_for_150_addresses():
        concurrent_200([px], sim, ADMIN, "lite")

    @case
    def bad_input_names_the_field():
        def refused(r, status, code, field):
            assert r.status_code == status, r.text
            e = r.json()["error"]
            assert e["code"] == code and e["details"].get("field") == field, r.text
        refused(create(spec("b1", ippools=["nope"])), 400, "invalid", "ippools")
        refused(create(spec("b2", ippools=["tiny", "crash"])), 400, "invalid", "ippools")
        refused(create(spec("b3", ippools="tiny")), 400, "invalid", "ippools")
        refused(create(spec("b4", ippools=["tiny"], addresses={"tiny": "10.30.0.5"})), 400,
                "invalid", "addresses.tiny")
        refused(create(spec("b5", ippools=["tiny"], addresses={"tiny": "10.30.0.1"})), 400,
                "invalid", "addresses.tiny")  # the gateway
        refused(create(spec("b6", ippools=["tiny"], addresses={"tiny": "banana"})), 400,
                "invalid", "addresses.tiny")
        refused(create(spec("b7", ippools=["tiny"], addresses={"lan": "10.20.0.10"})), 400,
                "invalid", "addresses.lan")  # not one of the creation's pools
        refused(create(spec("b8", ippools=["tiny"], addresses={"tiny": "10.30.0.2"}), USER),
                403, "forbidden", "addresses")
        # in use: lan is full, every address of it is some VM's
        used = addr_of(alloc(px.db, "lan")[0][0])
        refused(create(spec("b9", addresses={"lan": used})), 409, "conflict", "addresses.lan")
        # nothing was written by any of them
        assert not query(px.db, "SELECT name FROM vms WHERE name LIKE 'b_'")
        assert not [r for r in alloc(px.db, "tiny") if r[1] != "quarantine"]

    @case
    def quarantine_then_reuse():
        a = done(create(spec("q-a", ippools=["tiny"], addresses={"tiny": "10.30.0.2"})))
        b = done(create(spec("q-b", ippools=["tiny"])))
        assert (address_of(a), address_of(b)) == ("10.30.0.2", "10.30.0.3")
        r = create(spec("q-c", ippools=["tiny"]))
        assert r.status_code == 409 and r.json()["error"]["details"]["pool"] == "tiny", r.text
        d = px.call("DELETE", "/v1/vms/%d" % a, ADMIN)
        assert d.status_code == 202, d.text
        assert px.wait_job(d.json()["job"], ADMIN, deadline=60)["state"] == "done"
        rows = {addr_of(k): (s, vm_id) for k, s, vm_id, _, _ in alloc(px.db, "tiny")}
        assert rows["10.30.0.2"] == ("quarantine", 0), rows
        until = query(px.db, "SELECT until FROM addr_alloc WHERE addr = '%s'"
                      % key_of("10.30.0.2"))[0][0]
        # not before its time (4 s): refused while it rests
        if time.time() * 1000 < until - 1000:
            r = create(spec("q-c", ippools=["tiny"]))
            assert r.status_code == 409, r.text

        def reused():
            r = create(spec("q-c", ippools=["tiny"]))
            return None if r.status_code == 409 else r
        r = wait_for(reused, deadline=30, interval=0.25, what="the address out of quarantine")
        # the store's own clock of the hand-out (a request sent just before the
        # end may be served just after it: the time of the write is what counts)
        taken = query(px.db, "SELECT updated_at FROM addr_alloc WHERE addr = '%s'"
                      % key_of("10.30.0.2"))[0][0]
        assert taken >= until, "handed out %d ms before its quarantine ended" % (until - taken)
        c = done(r)
        assert address_of(c) == "10.30.0.2"
        check_invariants(px.db, sim, "tiny")
        # proxctl shows it: vm show's network lines, vm list's ADDRESS column
        env = dict(os.environ, HOME=tempfile.mkdtemp(prefix="proxctl-home-"),
                   PROXD_URL=px.base, PROXD_TOKEN=ADMIN)
        env.pop("PROXCTL_CONFIG", None)
        out = subprocess.run([PROXCTL, "vm", "show", str(c)], capture_output=True, text=True,
                             env=env, timeout=60).stdout
        assert re.search(r"^mac +[0-9A-F:]{17} on vmbr1$", out, re.M), out
        assert re.search(r"^address +10\.30\.0\.2/29 gw 10\.30\.0\.1 \(pool tiny\)$", out,
                         re.M), out
        out = subprocess.run([PROXCTL, "vm", "list"], capture_output=True, text=True, env=env,
                             timeout=60).stdout.splitlines()
        assert out[0].split()[-1] == "ADDRESS", out[0]
        row = [x for x in out if x.split()[0] == str(c)]
        assert row and row[0].split()[-1] == "10.30.0.2", out

    @case
    def failover_keeps_the_address():
        # the first node's configure fails (every try: one 500 is ridden
        # out): the creation moves to another node, with the address (and
        # MAC) it took at submit
        sim.ctl("POST", "/faults", {"kind": "error", "method": "PUT", "count": 4,
                                    "path": r"^/nodes/[^/]+/qemu/\d+/config$"})
        r = create(spec("fo-1", ippools=["crash"]))
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        before = query(px.db, "SELECT addr FROM addr_alloc WHERE job = '%s'" % job)
        j = px.wait_job(job, ADMIN, deadline=90)
        assert j["state"] == "done" and len(j["attempts"]) == 1, j
        vmid = j["vmid"]
        rec = px.call("GET", "/v1/vms/%d" % vmid, ADMIN).json()
        assert rec["node"] != j["attempts"][0]["node"], (rec, j)
        a = rec["network"]["addresses"][0]["address"]
        assert [(key_of(a),)] == before, (a, before)
        conf = sim_configs(sim)[vmid]
        assert sim_address(conf) == a and rec["network"]["mac"] in conf["net0"], conf

    @case
    def placed_only_where_the_pool_reaches():
        # placement in the configuration's order puts sv5, the only node
        # the pool reaches, last: every creation looks at sv1 to sv4 first
        # (spread's order follows the bandwidth proxd learned from the
        # clones before: sv5 came first for every creation now and then)
        with placed_in_order():
            vmids = [done(create(spec("p5-%d" % i, ippools=["only5"]))) for i in range(3)]
            for vmid in vmids:
                rec = px.call("GET", "/v1/vms/%d" % vmid, ADMIN).json()
                assert rec["node"] == "sv5", rec
                j = px.call("GET", "/v1/jobs/" + rec["job"], ADMIN).json()
                # the nodes skipped say why, each once
                assert [a["node"] for a in j["attempts"]] == ["sv1", "sv2", "sv3", "sv4"], j
                for a in j["attempts"]:
                    assert a["error"] == "pool only5 is not reachable on %s" % a["node"], j
                assert sim_address(sim_configs(sim)[vmid]).startswith("10.60.0."), (vmid, j)
            # skipped before anything was done there: no clone on sv1 to sv4
            nodes = {v["node"] for v in sim.state()["vms"]
                     if str(v["conf"].get("name", "")).startswith("p5-")}
            assert nodes == {"sv5"}, nodes

    @case
    def address_quota():
        done(create(spec("fr-1", ippools=["crash"]), FRANK))
        r = create(spec("fr-2", ippools=["crash"]), FRANK)
        assert r.status_code == 403, r.text
        e = r.json()["error"]
        assert e["code"] == "quota_exceeded" and "1 of 1 addresses" in e["message"], r.text
        done(create(spec("fr-3", ippools=[]), FRANK))  # no address: not counted
        q = px.call("GET", "/v1/quota", FRANK).json()
        assert q["limits"]["addresses"] == 1 and q["used"]["addresses"] == 1, q
        assert q["used"]["vms"] == 2, q

    @case
    def list_page_shows_every_network_between_other_owners():
        # carol's two VMs with 1200 other records' networks between their ids
        # (a page's networks were read by id range, at most 1000 rows: the
        # second VM showed "network": null)
        a = done(create(spec("pg-a", ippools=["page"]), USER))
        c = sqlite3.connect(px.db, timeout=30)
        try:
            with c:
                top = c.execute("SELECT max(id), max(vmid) FROM vms").fetchone()
                c.executemany("INSERT INTO vms (vmid, owner, state, created_at, updated_at)"
                              " VALUES (?, 'zed', 'deleted', 1, 1)",
                              [(top[1] + 1 + i,) for i in range(1200)])
                c.execute("INSERT INTO vm_net (vm_id, mac, bridge, ipconfig0, live)"
                          " SELECT id, 'zed-' || id, 'vmbr0', 'ip=dhcp', 0 FROM vms"
                          " WHERE owner = 'zed' AND id > ?", (top[0],))
        finally:
            c.close()
        b = done(create(spec("pg-b", ippools=["page"]), USER))
        ids = dict(query(px.db, "SELECT vmid, id FROM vms WHERE vmid IN (%d, %d)" % (a, b)))
        assert ids[b] - ids[a] > 1200, ids
        for token in (USER, ADMIN):
            page = px.call("GET", "/v1/vms?owner=carol&limit=10", token).json()["vms"]
            assert [v["vmid"] for v in page] == [a, b], page
            for v in page:
                net = v["network"]
                assert net and net["addresses"][0]["address"] == address_of(v["vmid"]), v
                assert net["addresses"][0]["address"].startswith("10.70.0."), v

    @case
    def kill_during_creations_loses_and_doubles_nothing():
        made = []
        cut = 0  # creations the kills interrupted
        for rnd in range(3):
            answers = in_parallel(lambda i: create(spec("k%d-%02d" % (rnd, i),
                                                        ippools=["crash"])), 12, workers=12)
            assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
            made += [a.json()["vmid"] for a in answers]
            time.sleep(rng.uniform(0.05, 1.0))  # a random moment of the creations
            cut += len(query(px.db, "SELECT id FROM jobs WHERE state NOT IN ('done', 'failed')"))
            px.kill()
            expire_leases(px.db)
            px.start()
            wait_settled(px.db, deadline=120)
            check_invariants(px.db, sim, "crash")
        jobs = query(px.db, "SELECT state FROM jobs WHERE kind = 'create' AND request LIKE "
                     "'%crash%'")
        assert jobs and all(j[0] in ("done", "failed") for j in jobs)
        # the live records of the crash pool hold exactly its used addresses
        live = check_invariants(px.db, sim, "crash")
        assert len(live) == len([j for j in jobs if j[0] == "done"]), (len(live), jobs)
        assert cut > 0, "no kill landed during a creation"
        print("     %d creations interrupted by the kills, %d done" % (cut, len(live)))
finally:
    shutdown(px, sim)

finish()
