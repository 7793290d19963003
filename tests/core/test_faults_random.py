"""Randomized fault test: pvesim fails a fraction of Proxmox calls of every
kind at random (500s, lock timeouts, 596s, failing tasks, delays, hangs,
answers dropped after the call was served)
while proxd runs mixed jobs on its VMs (start, shutdown, stop, pause,
resume, reboot, update (cores, memory or both), resize, delete, and with
FAULT_SNAPSHOTS=1, the
default, snapshots made, removed and rolled back to; with
FAULT_REINSTALLS=1, the default, reinstalls to the other OS; with
FAULT_DRAINS=1, the default, one node drained meanwhile, its VMs migrating
under the faults, then uncordoned) and, with
FAULT_CREATE=1, creations (half of them with an address from an IP pool;
two customers, ci and cj, every third VM cj's, whose jobs take turns for
the workers);
a share of all those jobs (FAULT_CANCELS, 0.1) is cancelled 0 to 1.5 s
after it was asked for, queued, running or ended by then;
then the faults stop and the promises are checked against pvesim's state
and proxd's database:
  - every job ended by itself (done or failed, with its terminal event)
    within a bounded time;
  - no VM leaked: every VM on the nodes has one enabled record (proxd's or
    anyone's: nobody else makes VMs here), none is half made;
  - every live record with a network has its address used by it and in its
    config, no address twice, none left reserved;
  - no VMID held by two live records, no record stuck creating or deleting,
    none marked lost (nothing is deleted behind proxd's back here);
  - after a reconcile pass, every record's power (paused included), node,
    disk, cores and memory (a change pending in Proxmox counted) match
    Proxmox, a record says changes are pending when Proxmox holds some,
    and its OS is the one its boot disk was cloned from;
  - no VMID left reserved, no capacity reservation left unsettled (every
    job has ended: each gave back what it held);
  - the event log tells every committed change exactly once
    (lib/eventcheck.py; a VMID that came back is passed over), and a
    guest check's event (guest_wait 4 s) names a done start of its VM,
    once at most;
  - every power, node or size change the reconciler took as made outside
    proxd (an observed event: vm.started/stopped/paused, vm.moved,
    vm.drift), and every VM it found gone (an observed vm.lost or
    vm.deleted), was so in pvesim at some moment between the VM's event
    before it and it (check_observed, pvesim's GET /_sim/history):
    none was read from figures older than the record (the seed's report
    counts them: `observed`);
  - no snapshot left half made or half removed, none made by a job that
    failed, no VM left locked by a snapshot job (a failed rollback's lock
    excepted: PVE leaves it for an operator); a done creation's snapshot
    is there, a done removal's is gone (check_snapshots, itself checked
    against planted faults first). Checked after the daemon's snapshot
    sync has read every VM's list (sync_snapshots: proxd started once more,
    with a pass a second reading every VM, until its removals have ended):
    a call of a snap-create job that Proxmox served late, after the job had
    looked and failed, makes a snapshot with the failed job's marker, and
    that sync is what removes it (a removal of reason "stray"; the case
    the_snapshot_sync_removes_a_late_snapshot_of_a_failed_job makes one on
    purpose). One it leaves is reported all the same.
  - with FAULT_STREAMS=1, the default, an admin's client follows the
    event stream (GET /v1/events/stream) from the start, through the
    instances in turn, connecting again with Last-Event-ID whenever its
    connection ends (a kill, an outage): once the jobs ended, it was sent
    every event of the log so far, each once, in id order, as the log has
    them (check_stream, itself checked against planted faults first; the
    seed's report: `stream`, with its connections);
  - with FAULT_HOOKS=1, the default, every instance has a webhook of
    every event to a receiver that answers a drawn 5 % of posts 500 and
    2 % after proxd's 1 s timeout: once the jobs ended, every event of
    the log so far is taken at least once; every post is an event of the
    log, signed, its body the same each time; in order: a post of event N
    comes only after every event before N was taken; and one instance
    posts at a time (no two posts in flight at once, but for one proxd
    gave up on after its timeout or a kill cut) (check_webhook,
    itself checked against planted faults first). Kills, outages and two
    instances meet its lease and cursor here (the seed's report: `webhook`).

The seeds of FAULT_SHARED_SEEDS (default 44) run on a fleet whose nodes keep
their VMs on one shared storage (Ceph: a pool every node reports whole,
counted per pool across the nodes), sized for about 75 % of the creations'
disks and a few GiB for the resizes: there, besides the above, pvesim's pool
(sampled throughout the creations and the resizes, each of which reserves
its growth in the pool) never holds more than its size less the margin, and
a creation the pool cannot take fails naming the shared storage (a resize
is refused at once, 403, or by its job when another took the room, saying
so).

The seeds of FAULT_STANDALONE_SEEDS (default 77) run on five standalone
hosts, each with its own VMID space, instead of one cluster: there too no
VMID exists twice on the hosts (proxd's VMIDs are unique across its
fleet), and every record is on its own VM's host.

Of those, the seeds of FAULT_MIXED_SEEDS (default 77) make a mixed fleet:
sv1 and sv3 are declared one-node clusters (c1, c3; a real standalone PVE
host answers as a cluster of one), the other three standalone hosts, so
creations fail over between clusters and hosts, each its own VMID space.

The seeds of FAULT_HOSTS_SEEDS (default 33) run on the cluster with each
member's own pveproxy as proxd's endpoints (host = that node's port, the five
in order) instead of the cluster's entry, which never goes down: a node
that goes down (below) takes one of proxd's hosts with it, the calls it
carried for the other nodes too, and proxd fails over to the next.

The seeds of FAULT_LAG_SEEDS (default 22) run on a pvesim that serves
/cluster/resources' VM, node and storage figures as of its last pvestatd
report (--pvestatd-cycle), one every LAG_CYCLE_S (1 s), as a real cluster
does from its RRD cache every 10 s or so, and proxd with stats_lag LAG_S
(2 s; the others serve them live, stats_lag 0); the final reconcile pass
waits until a report has every change. The seeds of FAULT_RECONCILE_SEEDS
(default 22 and 88) run the daemons' reconcile pass (and its snapshot sync) every
RECONCILE_S (2 s) beside the jobs, as in production; the others once, as
each daemon starts.

The seeds of FAULT_CLOCK_SEEDS (default 77 and 88) run with every node's
clock off the host's, each by up to CLOCK_OFF_S (10 minutes) either way,
drawn (pvesim's clock_offset_s: its tasks' start and end times, as a node
whose NTP is gone; proxd looks for the task of a call whose answer was
lost by its start time), and every invariant holds as without them.

The seeds of FAULT_HOLD_SEEDS (default 11 and 88) have an admin hold
addresses of the creations' pool and let them go while the jobs run
(Holds, through the instances in turn): a hold is taken (201) or refused
because a VM uses the address or a creation reserved it (409
address_in_use), some are refused so, and at the end every address it
holds is held in the store and in no VM's config.

The seeds of FAULT_SEEK_SEEDS (default 33 and 88) have an admin move the
webhook's cursor back every 1 to 3 s (Seeks, through the instances in
turn): after each seek back to X from `was`, every event in (X, was] is
posted again and taken; the cursor's delivered count is the events up to
it plus those each seek put behind it again (exact when every seek's answer
was read); the webhook's checks above hold all the same (one instance
posting at a time: a seek leaves the lease to its holder).

The seeds of FAULT_PASSWORD_SEEDS (default 111) run proxd logged in with
root@pam's password instead of its API token (the others keep the token),
on tickets that pvesim takes for TICKET_SIM_S (4 s) and proxd for
TICKET_LIFETIME_S (5 s), renewing them from TICKET_RENEW_S (1 s) on: a
seed's run sees renewals, renewals that fail, tickets that expire on the
server while proxd still holds them (a 401, one login again) and logins
with the password. Their faults also hit the tickets: about a tenth of
the seed's rate of the calls under /nodes and /cluster is refused with
PVE's 401 for a ticket it no longer takes ("permission denied - invalid PVE
ticket"; more would leave no ticket a second to live: each 401 discards
it, and its renewals with it), and twice the seed's rate (at most half) of the logins and
renewals (POST /access/ticket) fail: 500s, refusals (401), hangs, delays
past a renewal's glance, dropped and late answers (lib.faults,
ticket_fault_rules). Every invariant above holds there too, and besides:
some of the seed's creations and jobs are done (its jobs do not all fail
for want of a ticket), and neither the password nor a ticket ever appears
in proxd's log. Its figures count the logins and renewals sent
("logins": pvesim's "POST /access/ticket") and those proxd logged as
done ("logged_in", "renewed") and failed ("renew_failed").

The seeds of FAULT_ROLE_SEEDS (default 22 and 88; not a password seed) run
proxd with a privilege-separated token that holds only the role the
operator guide documents (lib.privs: its `pveum role add` line), on a
pvesim that checks privileges as PVE does: every path the faults send proxd
down (clean-ups, failovers, drains, reinstalls, the reconciler's and the
snapshot sync's reads) must be allowed by it: no job fails for a privilege
(a 403: the faults inject none), proxd's check of its privileges finds
none missing, and the reconciler never meets a VM hidden from the token.

The seeds of FAULT_LINKED_SEEDS (default 11 and 77) make their debian VMs
linked clones ([os] clone = linked): thin volumes over the templates' base
volumes, which a drain leaves on their node (PVE refuses to migrate a
linked clone off local storage) and a reinstall turns into full copies;
every invariant holds as for full clones.

Seeded and repeatable: FAULT_SEEDS (comma-separated) picks the runs; each
seed drives both the job mix here and pvesim's fault draws (--seed). The
interleaving of threads still varies a little from run to run.

Knobs (the suite's defaults are small enough for CI; `make soak` runs it
bigger): FAULT_SEEDS, FAULT_VMS (VMs per seed), FAULT_OPS (jobs per VM),
FAULT_RATE (the fraction of calls that fail, over all kinds), FAULT_CREATE
(1, the default: the VMs are created while the faults run too; 0: they are
created before, and only the other jobs meet the faults), FAULT_SHARED_SEEDS
(the seeds on a shared pool), FAULT_STANDALONE_SEEDS (the seeds on standalone
hosts), FAULT_HOSTS_SEEDS (the seeds with the members' own hosts), FAULT_LAG_SEEDS (the
seeds whose figures lag), FAULT_RECONCILE_SEEDS (the seeds reconciling as
they go), FAULT_CLOCK_SEEDS (the seeds whose nodes' clocks are off), FAULT_MIXED_SEEDS (the
standalone seeds with two one-node clusters), FAULT_HOLD_SEEDS (the seeds with
an admin holding addresses), FAULT_SEEK_SEEDS (the seeds with an admin moving
the webhook's cursor back), FAULT_INSTANCES (proxd instances on the one database, the API calls
spread over them), PROXD_TEST_DB (a PostgreSQL server's URL: a database per
seed), FAULT_REPORT (a file the per-seed figures are appended to),
FAULT_KEEP_LOG (1: keep proxd's log of every seed in
$TMPDIR/proxd-faults-seed-N.log, not only of a seed that failed),
FAULT_KILL_SEEDS (the seeds during which proxd is also killed, below),
FAULT_PASSWORD_SEEDS (the seeds logged in with a password, above),
FAULT_ROLE_SEEDS (the seeds with the documented role's token, above),
FAULT_LINKED_SEEDS (the seeds whose debian VMs are linked clones, above),
FAULT_OUTAGE_SEEDS (the seeds whose database is cut off now and then, below),
FAULT_NODE_SEEDS (the seeds whose nodes go down now and then, below),
FAULT_REINSTALLS, FAULT_DRAINS, FAULT_HOOKS, FAULT_STREAMS (1, the defaults:
reinstalls, a drain, the webhook, the stream's follower; 0: none),
FAULT_CANCELS (the share of jobs cancelled, 0.1), FAULT_JOB_LEASE ([proxd]
job_lease in seconds; proxd's default when unset).

Kills (the seeds of FAULT_KILL_SEEDS, default 88, one of the default seeds):
while the creations and the jobs run under the faults, a proxd instance
(one drawn from the seed) is killed with SIGKILL every 1 to 4 s (the first
time after 0.5 to 2 s) and started again up to half a second later, so kills
land in the steps of the jobs running then, and in their calls to a Proxmox
that is failing meanwhile: a call answered late to a dead process, a task
started by a process that is gone, a clean-up cut in two. The restarted instance takes its dead predecessor's
jobs over (same host, pid gone). The client acts as a real one does when
the connection drops: it asks again, a creation with the same
Idempotency-Key (one VM, not two). Every invariant above must hold as
without kills, and proxd must never end by itself (a kill that finds it
gone is an error).

Database outages (the seeds of FAULT_OUTAGE_SEEDS, default 88, the kill
seed, so that kills and outages meet): while the jobs run, the seed's
database is cut off every 3 to 10 s for 0.5 to 6 s (Outage: PostgreSQL
refuses the database's connections and ends those it had; a SQLite file's
lock is held by the test). proxd's jobs wait at their checkpoints and go on
once it is back; its API answers 503 unavailable meanwhile, which the client
asks again. Every invariant holds as without them, and proxd never ends by
itself.

Dead nodes (the seeds of FAULT_NODE_SEEDS, default 33): while the jobs
run, a node drawn goes off the network every 2 to 6 s for 0.3 to 3 s
(NodeDowns: pvesim's offline, its connections refused, or blackhole, taken
and never answered), and comes back. The jobs on it fail over, fail or wait
as their step allows, the half-made VMs it kept are removed once it is back,
and every invariant holds as without them.
"""
import json
import os
import random
import re
import tempfile
import threading
import time

import requests

from lib import eventcheck
from lib.cases import finish, run_case
from lib.db import execute as db_execute, query as db_query
from lib.env import PASSWORD, TOKEN
from lib.faults import fault_rules, ticket_fault_rules
from lib.fleet import GiB, PoolSampler, shared_pool_fleet
from lib.hookrecv import Receiver, verify
from lib.privs import SVC, role_sim_args
from lib.proxd import cluster_config as write_config, Daemon, run as proxd, TEMPLATE_BASE, wait_answer
from lib.sim import Sim, volume_name
from lib.wait import wait_for

SEEDS = [int(s) for s in os.environ.get("FAULT_SEEDS", "11,22,33,44,77,88,111").split(",")
         if s]
NVMS = int(os.environ.get("FAULT_VMS", "10"))
# the guest checks' wait (proxd's default is 300 s): outcomes come within a
# run, under the faults (the agent's pings fail too), and lib/eventcheck
# checks their events
GUEST_WAIT_S = 4
NOPS = int(os.environ.get("FAULT_OPS", "10"))
RATE = float(os.environ.get("FAULT_RATE", "0.07"))
CREATE = os.environ.get("FAULT_CREATE", "1") == "1"
SHARED = {int(s) for s in os.environ.get("FAULT_SHARED_SEEDS", "44").split(",") if s}
# seeds on five standalone hosts (a VMID space each) instead of one cluster
STANDALONE = {int(s) for s in os.environ.get("FAULT_STANDALONE_SEEDS", "77").split(",") if s}
MARGIN_GB = 20  # proxd's default disk_margin_gb
DISK_GB = 20  # every creation's disk
REPORT = os.environ.get("FAULT_REPORT")
KEEP_LOG = os.environ.get("FAULT_KEEP_LOG") == "1"  # keep proxd's log of a seed that passed too
# several proxd instances sharing the database and the work (the API calls
# spread over them), and the database: PostgreSQL (a server's URL: a
# database per seed) or SQLite
INSTANCES = int(os.environ.get("FAULT_INSTANCES", "1"))
KILLS = {int(s) for s in os.environ.get("FAULT_KILL_SEEDS", "88").split(",") if s}
# seeds whose database is cut off now and then while the jobs run (Outage)
OUTAGES = {int(s) for s in os.environ.get("FAULT_OUTAGE_SEEDS", "88").split(",") if s}
# seeds whose nodes go off the network now and then while the jobs run (NodeDowns)
NODE_DOWNS = {int(s) for s in os.environ.get("FAULT_NODE_SEEDS", "33").split(",") if s}
# seeds whose cluster is reached through each member's own port, not the entry
HOSTS = {int(s) for s in os.environ.get("FAULT_HOSTS_SEEDS", "33").split(",") if s}


def member_hosts(seed):
    """Is the seed's cluster reached through its members' own ports? (A
    standalone seed has no cluster; a shared pool's seed is never standalone.)"""
    return seed in HOSTS and (seed in SHARED or seed not in STANDALONE)


# seeds whose pvesim serves /cluster/resources' figures as of its last
# pvestatd report, one every LAG_CYCLE_S (real seconds), as PVE does from its
# RRD cache, with proxd's stats_lag (LAG_S) above it; the others serve them
# live, stats_lag 0
LAGS = {int(s) for s in os.environ.get("FAULT_LAG_SEEDS", "22").split(",") if s}
LAG_CYCLE_S, LAG_S = 1.0, 2
SIM_SCALE = 0.005  # pvesim's time scale: a PVE second lasts 5 ms here
# seeds whose daemons run a reconcile pass every RECONCILE_S while the jobs
# run (as in production, where it runs beside them); the others once, at
# each start (reconcile_interval 3600)
RECONCILES = {int(s) for s in os.environ.get("FAULT_RECONCILE_SEEDS", "22,88").split(",") if s}
RECONCILE_S = 2
# standalone seeds whose sv1 and sv3 are one-node clusters (a mixed fleet)
MIXED = {int(s) for s in os.environ.get("FAULT_MIXED_SEEDS", "77").split(",") if s}
# seeds whose nodes' clocks are off, each by up to CLOCK_OFF_S either way
CLOCKS = {int(s) for s in os.environ.get("FAULT_CLOCK_SEEDS", "77,88").split(",") if s}
CLOCK_OFF_S = 600
# seeds during which an admin holds addresses of the creations' pool and
# lets them go (Holds)
HOLDS = {int(s) for s in os.environ.get("FAULT_HOLD_SEEDS", "11,88").split(",") if s}
HOLDS_MAX = 6
# seeds during which an admin moves the webhook's cursor back now and then
# (Seeks: its events are posted again)
SEEKS = {int(s) for s in os.environ.get("FAULT_SEEK_SEEDS", "33,88").split(",") if s}
# seeds logged in with root@pam's password (tickets) instead of the token
PASSWORD_SEEDS = {int(s) for s in os.environ.get("FAULT_PASSWORD_SEEDS", "111").split(",") if s}
# seeds whose proxd calls with a privilege-separated token holding only the
# role the operator guide documents (lib.privs), on a pvesim that checks
# privileges as PVE does (a password seed keeps root@pam)
ROLE_SEEDS = {int(s) for s in os.environ.get("FAULT_ROLE_SEEDS", "22,88").split(",") if s}
# seeds whose debian VMs are linked clones ([os] clone = linked)
LINKED = {int(s) for s in os.environ.get("FAULT_LINKED_SEEDS", "11,77").split(",") if s}
TICKET_SIM_S = 4  # pvesim's ticket lifetime (real seconds)
TICKET_LIFETIME_S = 5  # proxd's: longer, so that a ticket also expires under it
TICKET_RENEW_S = 1
SNAPS = os.environ.get("FAULT_SNAPSHOTS", "1") == "1"
# reinstalls to the other OS (a temporary clone, a disk swap), a few per VM
REINSTALLS = os.environ.get("FAULT_REINSTALLS", "1") == "1"
# a node drained (its VMs migrated under the faults) while the jobs run, then uncordoned
DRAINS = os.environ.get("FAULT_DRAINS", "1") == "1"
# [proxd] job_lease (seconds; proxd's default when unset): a short one makes
# the outages outlast the leases, whose runners must keep their jobs
LEASE = ["job_lease = " + os.environ["FAULT_JOB_LEASE"]] if os.environ.get("FAULT_JOB_LEASE") \
    else []
# the share of jobs cancelled a moment (0 to 1.5 s) after they were asked for
CANCELS = float(os.environ.get("FAULT_CANCELS", "0.1"))
# a webhook of every event to a receiver that answers a share 500 and a
# share after proxd's timeout (1 s)
HOOKS = os.environ.get("FAULT_HOOKS", "1") == "1"
# a client following the event stream through the instances
STREAMS = os.environ.get("FAULT_STREAMS", "1") == "1"
HOOK_FAIL, HOOK_SLOW, HOOK_SECRET = 0.05, 0.02, "faults-webhook-secret"
PG_URL = os.environ.get("PROXD_TEST_DB")
JOB_BOUND_S = 120  # no job may take longer than this, faults or not
READ_FAILURES = ("cannot find VM", "cannot verify the new size", "cannot read the config")
# a password seed's refusals that are final by design (pve.h, Tickets): a
# login refused (401, as for a wrong password), a second 401 after the one
# login again; a read that meets one fails with it, as any call does
AUTH_FAILURES = ("authentication failure", "invalid PVE ticket")
ACTIONS = ["start", "shutdown", "stop", "pause", "resume", "reboot"]


class Api:
    def __init__(self, base, token):
        self.base, self.h = base, {"Authorization": "Bearer " + token}

    def call(self, method, path, body=None, key=None):
        """The call, asked again while proxd does not answer (killed, and
        not yet started again), is starting (503 starting: its port answers
        while it opens its database) or its database does not answer (503
        unavailable): nothing was done; for up to 40 s. key: an
        Idempotency-Key."""
        h = dict(self.h, **({"Idempotency-Key": key} if key else {}))
        end = time.monotonic() + 40
        while True:
            try:
                r = requests.request(method, self.base + path, json=body, headers=h, timeout=30)
                again = r.status_code == 503 and ('"unavailable"' in r.text or
                                                  '"starting"' in r.text)
                if not again or time.monotonic() > end:
                    return r
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                if time.monotonic() > end:
                    raise AssertionError("proxd does not answer %s %s" % (method, path))
            time.sleep(0.2)

    def wait_job(self, job, deadline):
        end = time.monotonic() + deadline
        while True:
            j = self.call("GET", "/v1/jobs/" + job).json()
            if j["state"] in ("done", "failed"):
                return j
            if time.monotonic() > end:
                return j
            time.sleep(0.1)


class Killer(threading.Thread):
    """Kills one of the proxd instances (drawn) with SIGKILL every 1 to 4 s
    (the first time after 0.5 to 2 s) and starts it again up to 0.5 s
    later, until halted; an instance found ended by itself is a problem
    (and is started again)."""

    def __init__(self, daemons, rng, problems, lock):
        super().__init__(daemon=True)
        self.daemons, self.rng, self.problems, self.lock = daemons, rng, problems, lock
        self.halt = threading.Event()
        self.kills = 0
        self.kill_times = []  # time.monotonic() of each kill

    def run(self):
        # the first soon (0.5 to 2 s), as the outages' first: a fast
        # machine's jobs may all end before a later one
        pause = self.rng.uniform(0.5, 2.0)
        while not self.halt.wait(pause):
            pause = self.rng.uniform(1.0, 4.0)
            d = self.daemons[self.rng.randrange(len(self.daemons))]
            try:
                self.kill_times.append(time.monotonic())
                d.kill()
                self.kills += 1
            except AssertionError as e:
                with self.lock:
                    self.problems.append(str(e).splitlines()[0] + " (log run %d)" % d.n)
            time.sleep(self.rng.uniform(0, 0.5))
            try:
                d.start()
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.problems.append("proxd could not be started again: %s" % e)

    def stop(self):
        self.halt.set()
        self.join()
        for d in self.daemons:
            if not d.alive():  # ended by itself after the last kill
                with self.lock:
                    self.problems.append("proxd ended by itself (log run %d)" % d.n)
                d.start()


class Outage(threading.Thread):
    """Cuts the seed's database off every 3 to 10 s (the first time after
    0.5 to 3 s) for 0.5 to 6 s, until
    halted: PostgreSQL refuses new connections to it and ends those it has
    (ALLOW_CONNECTIONS false, pg_terminate_backend), as a server that
    restarts or fails over does; a SQLite file has its lock held by
    another process (BEGIN EXCLUSIVE: readers go on, writers wait out their
    busy timeout and fail). proxd's jobs wait at their checkpoints, its API
    answers 503 unavailable (the client asks again), and nothing may be
    lost, doubled or left held for it."""

    def __init__(self, db, rng):
        super().__init__(daemon=True)
        self.db, self.rng = db, rng
        self.halt = threading.Event()
        self.outages, self.held_s, self.conn = 0, 0.0, None

    def cut(self):
        if "://" in self.db:
            name = self.db.rsplit("/", 1)[1]
            db_query(PG_URL, "ALTER DATABASE %s WITH ALLOW_CONNECTIONS false" % name)
            db_query(PG_URL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = '%s'" % name)
        else:
            import sqlite3
            self.conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")

    def restore(self):
        if "://" in self.db:
            db_query(PG_URL, "ALTER DATABASE %s WITH ALLOW_CONNECTIONS true"
                     % self.db.rsplit("/", 1)[1])
        elif self.conn:
            self.conn.execute("COMMIT")
            self.conn.close()
            self.conn = None

    def run(self):
        # the first soon (0.5 to 3 s): a seed whose jobs all end within 8 s
        # on a fast machine used to see none before them (seed 99: "no
        # database outage came while the jobs ran")
        pause = self.rng.uniform(0.5, 3.0)
        while not self.halt.wait(pause):
            self.cut()
            t = time.monotonic()
            self.outages += 1
            time.sleep(self.rng.uniform(0.5, 6.0))  # out in full, even when halted meanwhile
            self.restore()
            self.held_s += time.monotonic() - t
            pause = self.rng.uniform(3.0, 10.0)

    def stop(self):
        self.halt.set()
        self.join()


class Follower(threading.Thread):
    """A client of the event stream (GET /v1/events/stream, an admin's:
    every event) through the instances in turn: when its connection ends
    (a kill, a database outage, an error answer) it connects again to the
    next instance with Last-Event-ID, the last id it saw, as an SSE client
    does. `seen`: (id, type, vmid) of every event it was sent, in order."""

    def __init__(self, admins):
        super().__init__(daemon=True)
        self.admins = admins
        self.halt = threading.Event()
        self.seen, self.connects = [], 0

    def run(self):
        n, seen = 0, self.seen  # (stop() leaves self.seen a copy)
        while not self.halt.is_set():
            a = self.admins[n % len(self.admins)]
            n += 1
            h = dict(a.h, **({"Last-Event-ID": str(seen[-1][0])} if seen else {}))
            try:
                resp = requests.get(a.base + "/v1/events/stream", headers=h, stream=True,
                                    timeout=(2, 20))
                if resp.status_code != 200:
                    resp.close()
                    self.halt.wait(0.2)
                    continue
                self.connects += 1
                ev = {}
                for line in resp.iter_lines(decode_unicode=True):
                    if self.halt.is_set():
                        break
                    if line.startswith("id: "):
                        ev["id"] = int(line[4:])
                    elif line.startswith("data: "):
                        ev["data"] = json.loads(line[6:])
                    elif not line and "id" in ev:
                        seen.append((ev["id"], ev["data"]["type"], ev["data"].get("vmid") or 0))
                        ev = {}
                resp.close()
            except (requests.RequestException, ValueError):
                pass
            self.halt.wait(0.1)

    def stop(self):
        """Halted; `seen` as it is now. The thread is not waited for: it
        ends when the daemons, stopping, end their streams (a close of its
        response from here waits for the read under way: the next ping,
        15 s)."""
        self.halt.set()
        self.seen = list(self.seen)


def check_stream(db, follower, last, stats, problems):
    """The event stream against the log, through kills, outages and
    reconnections with Last-Event-ID: the events it sent up to `last` are
    the log's, each once, in id order, none missing."""
    log = {i: (t, vmid) for i, t, vmid in db_query(
        db, "SELECT id, type, vmid FROM events WHERE id <= %d" % last)}
    seen = [e for e in follower.seen if e[0] <= last]
    ids = [e[0] for e in seen]
    back = [(a, b) for a, b in zip(ids, ids[1:]) if b <= a]
    if back:
        problems.append("event stream: ids not increasing: %s" % back[:5])
    for i, t, vmid in seen:
        if log.get(i) != (t, vmid):
            problems.append("event stream: event %d sent as %s of VM %d, the log has %s" % (
                i, t, vmid, log.get(i)))
    missing = sorted(set(log) - set(ids))
    if missing:
        problems.append("event stream: %d events never sent: %s" % (len(missing), missing[:10]))
    stats["stream"] = "%d events, %d connections" % (len(seen), follower.connects)


class Holds(threading.Thread):
    """An admin holding addresses of the creations' pool and letting them
    go, every 0.2 to 1 s until halted, through the instances in turn: a hold
    of an address drawn from the pool's first ones, which the creations
    take too, or (half of the holds) one the admin's list shows used by a
    VM (201 held, or 409 address_in_use: a VM uses it or a creation
    reserved it), or the drop of one it holds (204; 404 when a kill cut the
    answer of a drop that was made), at most HOLDS_MAX held at once. Any
    other answer is a problem. `held`: what it holds at the end."""

    def __init__(self, admins, rng, problems, lock):
        super().__init__(daemon=True)
        self.admins, self.rng, self.problems, self.lock = admins, rng, problems, lock
        self.halt = threading.Event()
        self.held, self.made, self.refused, self.dropped = set(), 0, 0, 0

    def one(self, api):
        if self.held and (len(self.held) >= HOLDS_MAX or self.rng.random() < 0.4):
            a = self.rng.choice(sorted(self.held))
            r = api.call("DELETE", "/v1/ippools/flt/addresses/" + a)
            if r.status_code in (204, 404):
                self.held.discard(a)
                self.dropped += 1
                return
        else:
            a = "10.50.0.%d" % self.rng.randint(2, 16)
            if self.rng.random() < 0.5:  # one a VM uses now, as the admin lists them
                r = api.call("GET", "/v1/ippools/flt/addresses?state=used")
                if r.status_code != 200:
                    with self.lock:
                        self.problems.append("holds: GET %s: %s" % (r.url, r.text[:200]))
                    return
                used = [x["address"] for x in r.json()["addresses"]]
                a = self.rng.choice(used) if used else a
            r = api.call("POST", "/v1/ippools/flt/addresses", {"address": a, "note": "test"})
            if r.status_code == 201:
                self.held.add(a)
                self.made += 1
                return
            if r.status_code == 409 and r.json()["error"]["code"] == "address_in_use":
                self.refused += 1
                return
        with self.lock:
            self.problems.append("holds: %s %s: %s" % (r.request.method, r.url, r.text[:200]))

    def run(self):
        n = 0
        while not self.halt.wait(self.rng.uniform(0.2, 1.0)):
            try:
                self.one(self.admins[n % len(self.admins)])
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.problems.append("holds: %s: %s" % (type(e).__name__, e))
            n += 1

    def stop(self):
        self.halt.set()
        self.join()


class Seeks(threading.Thread):
    """An admin moving the webhook's cursor back, every 1 to 3 s until
    halted, through the instances in turn: to 1 to 8 events behind where
    GET /v1/webhooks shows it, so that the events after it are posted again
    (POST /v1/webhooks/flt/seek). `moves`: (monotonic time it was sent,
    after, was) of each seek answered 200; `unknown`: seeks whose answer a
    kill or an outage cut (made or not). Any other answer is a problem."""

    def __init__(self, admins, rng, problems, lock):
        super().__init__(daemon=True)
        self.admins, self.rng, self.problems, self.lock = admins, rng, problems, lock
        self.halt = threading.Event()
        self.moves, self.unknown = [], 0

    def one(self, api):
        try:
            r = requests.get(api.base + "/v1/webhooks", headers=api.h, timeout=10)
        except requests.RequestException:
            return  # killed: the next instance
        if r.status_code != 200:
            return
        row = [w for w in r.json()["webhooks"] if w["name"] == "flt"]
        if not row or row[0]["after"] < 1:
            return
        to = max(0, row[0]["after"] - self.rng.randint(1, 8))
        t0 = time.monotonic()
        try:
            r = requests.post(api.base + "/v1/webhooks/flt/seek", json={"after": to},
                              headers=api.h, timeout=10)
        except requests.RequestException:
            self.unknown += 1
            return
        if r.status_code == 200:
            self.moves.append((t0, to, r.json()["was"]))
        elif r.status_code == 503:
            self.unknown += 1  # the database's answer lost: made or not
        else:
            with self.lock:
                self.problems.append("seeks: POST %s: %s" % (r.url, r.text[:200]))

    def run(self):
        n = 0
        while not self.halt.wait(self.rng.uniform(1.0, 3.0)):
            self.one(self.admins[n % len(self.admins)])
            n += 1

    def stop(self):
        self.halt.set()
        self.join()


class NodeDowns(threading.Thread):
    """Takes a node (drawn) off the network every 2 to 6 s (the first time
    after 0.5 to 2 s) for 0.3 to 3 s, until halted: offline (its pveproxy
    refuses connections; in a cluster the entry answers 595 for it and the
    inventory shows its VMs "unknown") or blackholed (connections taken,
    nothing answered: in a cluster the entry's 596 after the proxy's
    timeout, a standalone host's calls time out), then online again."""

    def __init__(self, sim, rng):
        super().__init__(daemon=True)
        self.sim, self.rng = sim, rng
        self.halt = threading.Event()
        self.downs, self.down_s = 0, 0.0

    def run(self):
        pause = self.rng.uniform(0.5, 2.0)
        while not self.halt.wait(pause):
            node = self.rng.choice(self.sim.node_names)
            how = self.rng.choice(["offline", "blackhole"])
            self.sim.ctl("POST", "/nodes/" + node, {"state": how})
            t = time.monotonic()
            self.downs += 1
            time.sleep(self.rng.uniform(0.3, 3.0))  # down in full, even when halted meanwhile
            self.sim.ctl("POST", "/nodes/" + node, {"state": "online"})
            self.down_s += time.monotonic() - t
            pause = self.rng.uniform(2.0, 6.0)

    def stop(self):
        self.halt.set()
        self.join()


# What makes sense from a recorded power state (proxd refuses the rest at
# once, without a job): mostly those, sometimes anything.
SENSIBLE = {"running": ["shutdown", "stop", "pause", "reboot"],
            "paused": ["resume", "stop", "shutdown"],
            "stopped": ["start"]}


def pick(rng, power):
    r = rng.random()
    if r < 0.10:
        return "update"
    if r < 0.20:
        return "resize"
    if r < 0.25:
        return "delete"
    if r < 0.30:
        return rng.choice(ACTIONS)
    return rng.choice(SENSIBLE.get(power, ACTIONS))


def seed_database(seed, tmp):
    """The seed's database: a fresh one on the PostgreSQL server, else a
    SQLite file."""
    if not PG_URL:
        return os.path.join(tmp, "proxd.db")
    name = "faults_seed_%d" % seed
    db_query(PG_URL, "DROP DATABASE IF EXISTS %s" % name)
    db_query(PG_URL, "CREATE DATABASE %s" % name)
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def run_seed(seed):
    rng = random.Random(seed)
    tmp = tempfile.TemporaryDirectory(prefix="proxd-faults-")
    db = seed_database(seed, tmp.name)
    conf = os.path.join(tmp.name, "proxd.conf")
    shared = seed in SHARED
    alone = seed in STANDALONE and not shared
    password = seed in PASSWORD_SEEDS
    role = seed in ROLE_SEEDS and not password
    # the shared pool: the margin, about 75 % of the creations' disks and a
    # little for the resizes
    pool_gb = MARGIN_GB + NVMS * DISK_GB * 3 // 4 + 5
    lag = seed in LAGS
    sim = Sim(time_scale=SIM_SCALE, extra=["--seed", str(seed)] +
              (["--ticket-lifetime", str(TICKET_SIM_S)] if password else []) +
              (role_sim_args() if role else []) +
              (["--pvestatd-cycle", str(int(LAG_CYCLE_S / SIM_SCALE))] if lag else []),
              standalone=alone,
              fleet=shared_pool_fleet(["sv%d" % i for i in range(1, 6)], pool_gb)
              if shared else None)
    clocks = {}
    if seed in CLOCKS:  # NTP gone on every node: task times off the host's
        crng = random.Random(seed * 23 + 5)
        for n in sim.node_names:
            clocks[n] = crng.randint(-CLOCK_OFF_S, CLOCK_OFF_S)
            sim.ctl("POST", "/nodes/" + n, {"clock_offset_s": clocks[n]})
    # a hung call costs the request timeout: keep it short
    ports, daemons = [], []
    recv = Receiver().flaky(random.Random(seed * 31 + 13), HOOK_FAIL, HOOK_SLOW).up() \
        if HOOKS else None
    if recv:
        recv.delay = 1.5
    proxd_extra = ["reconcile_interval = %d" % (RECONCILE_S if seed in RECONCILES else 3600),
                   "quarantine = 0", "guest_wait = %d" % GUEST_WAIT_S] + LEASE + (
                       ["stats_lag = %d" % LAG_S] if lag else [])
    for i in range(INSTANCES):
        c = conf if i == 0 else os.path.join(tmp.name, "proxd-%d.conf" % (i + 1))
        ports.append(write_config(c, db, sim.entry, proxd_extra,
                                  proxmox_extra=["connect_timeout = 1", "timeout = 3"] + (
                                      ["ticket_lifetime = %d" % TICKET_LIFETIME_S,
                                       "ticket_renew = %d" % TICKET_RENEW_S] if password else []),
                                  storage="ceph" if shared else "local-lvm",
                                  standalone=sim.ports if alone else None,
                                  clusters={"sv1": "c1", "sv3": "c3"}
                                  if alone and seed in MIXED else None,
                                  hosts=sim.ports if member_hosts(seed) else None,
                                  password=PASSWORD if password else None,
                                  token=SVC if role else TOKEN,
                                  linked=("debian",) if seed in LINKED else ()))
        with open(c, "a") as f:  # half the creations take an address from it
            f.write(POOL)
            if recv:
                f.write("\n[webhook flt]\nurl = %s\nsecret = %s\ntimeout = 1\nretry_max = 1\n"
                        % (recv.url, HOOK_SECRET))
        logs = tmp.name if i == 0 else os.path.join(tmp.name, "i%d" % (i + 1))
        os.makedirs(logs, exist_ok=True)
        daemons.append(Daemon(c, logs))
    stats = {"seed": seed, "jobs": 0, "done": 0, "failed": 0, "refused": 0, "creations": 0,
             "created": 0, "max_job_s": 0.0}
    if shared:
        stats.update(pool_gb=pool_gb, pool_refused=0)
    if clocks:
        stats["clock_offsets_s"] = clocks
    sampler = PoolSampler(sim) if shared else None
    problems = []
    lock = threading.Lock()
    t0 = time.monotonic()
    killer = outage = downs = holds = follower = seeks = None
    try:
        token = proxd("token", "create", "--config", conf, "--owner", "ci", "--role",
                      "user").stdout.strip()
        # a second customer, whose creations take turns with ci's for the
        # workers (every third VM is theirs)
        token2 = proxd("token", "create", "--config", conf, "--owner", "cj", "--role",
                       "user").stdout.strip()
        ops = proxd("token", "create", "--config", conf, "--owner", "ops", "--role",
                    "admin").stdout.strip()
        if recv:  # the webhook from the first event on (a new one starts at the log's end)
            db_execute(db, "INSERT INTO webhook_cursor (name, after, updated_at) "
                           "VALUES ('flt', 0, 0)")
        for d in daemons:
            d.start()
        apis = [Api("http://127.0.0.1:%d" % port, token) for port in ports]
        apis_cj = [Api("http://127.0.0.1:%d" % port, token2) for port in ports]

        def owner_apis(i):
            """the i-th creation's owner's clients: ci's, every third cj's"""
            return apis_cj if i % 3 == 2 else apis
        vm_apis = {}  # vmid -> its owner's clients
        admins = [Api("http://127.0.0.1:%d" % port, ops) for port in ports]
        for a in apis:
            wait_answer(a.base + "/readyz")

        def faults_on():
            sim.ctl("DELETE", "/calls")
            if password:  # (first: pvesim takes the first rule that hits)
                sim.add_faults(ticket_fault_rules(RATE / 10, min(0.5, 2 * RATE)))
            sim.add_faults(fault_rules(RATE))

        def cancel_soon(api, job, crng):
            """Cancel the job 0 to 1.5 s from now (drawn: CANCELS of the
            calls): queued, running or ended, whichever it is by then."""
            if crng.random() >= CANCELS:
                return
            time.sleep(crng.uniform(0, 1.5))
            r = api.call("POST", "/v1/jobs/%s/cancel" % job)
            with lock:
                stats["cancels"] = stats.get("cancels", 0) + 1
                if r.status_code not in (200, 202, 409):
                    problems.append("cancel of job %s: %d %s" % (job, r.status_code, r.text))

        def note(job):
            with lock:
                stats["jobs"] += 1
                if job["state"] == "done":
                    stats["done"] += 1
                elif job["state"] == "failed":
                    stats["failed"] += 1
                else:
                    problems.append("job %s (%s) did not end within %d s: %s" % (
                        job["id"], job["kind"], JOB_BOUND_S, job["state"]))

        killer = Killer(daemons, random.Random(seed * 7 + 1), problems, lock) \
            if seed in KILLS else None
        outage = Outage(db, random.Random(seed * 11 + 3)) if seed in OUTAGES else None
        downs = NodeDowns(sim, random.Random(seed * 19 + 7)) if seed in NODE_DOWNS else None
        holds = Holds(admins, random.Random(seed * 29 + 11), problems, lock) \
            if seed in HOLDS else None
        seeks = Seeks(admins, random.Random(seed * 31 + 13), problems, lock) \
            if recv and seed in SEEKS else None
        follower = Follower(admins) if STREAMS else None
        if follower:
            follower.start()

        def troubles_on():
            faults_on()
            for t in (killer, outage, downs, holds, seeks):
                if t:
                    t.start()
        if CREATE:
            troubles_on()
        if sampler:
            sampler.start()
        vms = []
        creations = []
        for i in range(NVMS):
            body = {"os": rng.choice(["ubuntu", "debian"]), "name": "f%d-%02d" % (seed, i),
                    "cores": rng.choice([1, 2]), "memory_mb": rng.choice([512, 1024]),
                    "disk_gb": DISK_GB}
            if i % 2 == 0:
                body["ippools"] = ["flt"]
            end = time.monotonic() + 30
            while True:  # 503 while proxd reads the inventory first, or a node is down
                r = owner_apis(i)[i % INSTANCES].call("POST", "/v1/vms", body,
                                                      key="f%d-%02d" % (seed, i))
                if r.status_code != 503 or time.monotonic() > end:
                    break
                time.sleep(0.2)
            assert r.status_code == 202, (r.status_code, r.text)
            creations.append(r.json())
            vm_apis[r.json()["vmid"]] = owner_apis(i)
        crng = random.Random(seed * 13 + 5)  # the creations' cancels (under faults only)
        cancellers = [threading.Thread(target=cancel_soon, daemon=True,
                                       args=(owner_apis(i)[i % INSTANCES], c["job"],
                                             random.Random(crng.random())))
                      for i, c in enumerate(creations) if CREATE]
        for t in cancellers:
            t.start()
        for t in cancellers:
            t.join()
        for i, c in enumerate(creations):
            j = owner_apis(i)[0].wait_job(c["job"], JOB_BOUND_S)
            note(j)
            stats["creations"] += 1
            if j["state"] == "done":
                stats["created"] += 1
                vms.append(c["vmid"])
            elif shared and "not enough space on shared storage ceph" in (j.get("error") or ""):
                stats["pool_refused"] += 1
        if not CREATE:  # only the shared pool may refuse some
            assert len(vms) + stats.get("pool_refused", 0) == NVMS, \
                "creations failed without faults"
            troubles_on()

        def worker(vmid, wrng):
            api = vm_apis[vmid][vmid % INSTANCES]
            srng = random.Random(seed * 1000 + vmid + 500)  # the snapshot jobs' draws
            rrng = random.Random(seed * 1000 + vmid + 700)  # the reinstalls'
            crng = random.Random(seed * 1000 + vmid + 900)  # the cancels'
            urng = random.Random(seed * 1000 + vmid + 1100)  # the updates' memory
            names = []  # the snapshots asked for, s1, s2, ...
            for _ in range(NOPS):
                v = api.call("GET", "/v1/vms/%d" % vmid)
                if v.status_code != 200:
                    return
                v = v.json()
                if v["state"] != "enabled":
                    return
                op = pick(wrng, v["power"])
                if SNAPS and srng.random() < 0.2:
                    op = srng.choice(["snap", "snap", "snapdel", "rollback"]) if names else "snap"
                if REINSTALLS and rrng.random() < 0.08:
                    op = "reinstall"
                if op == "snap":
                    names.append("s%d" % (len(names) + 1))
                    r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, {"name": names[-1]})
                elif op in ("snapdel", "rollback"):
                    name = srng.choice(names)
                    r = api.call(*(("DELETE", "/v1/vms/%d/snapshots/%s" % (vmid, name))
                                   if op == "snapdel" else
                                   ("POST", "/v1/vms/%d/snapshots/%s/rollback" % (vmid, name))))
                elif op in ACTIONS:
                    r = api.call("POST", "/v1/vms/%d/%s" % (vmid, op),
                                 {"force": True} if op == "shutdown" else None)
                elif op == "reinstall":
                    r = api.call("POST", "/v1/vms/%d/reinstall" % vmid,
                                 {"os": "debian" if v["os"] == "ubuntu" else "ubuntu"})
                elif op == "update":
                    body = {"cores": wrng.choice([1, 2, 3])}
                    if urng.random() < 0.5:  # memory too, or memory alone
                        body["memory_mb"] = urng.choice([512, 1024, 1536])
                        if urng.random() < 0.3:
                            del body["cores"]
                    r = api.call("PATCH", "/v1/vms/%d" % vmid, body)
                elif op == "resize":
                    r = api.call("POST", "/v1/vms/%d/resize" % vmid,
                                 {"disk_gb": v["disk_gb"] + wrng.choice([1, 2, 5])})
                else:
                    r = api.call("DELETE", "/v1/vms/%d" % vmid)
                if r.status_code in (400, 409) or (r.status_code == 404 and op in ("snapdel", "rollback")):
                    with lock:  # (a snapshot proxd knows is not there: 404)
                        stats["refused"] += 1
                    continue
                if shared and r.status_code == 403 and "on shared storage ceph" in r.text:
                    with lock:  # a resize the pool has no room for
                        stats["pool_refused"] += 1
                    continue
                if r.status_code == 503 and "node_down" in r.text:
                    # a failed call (a 596) marked the VM's node down for a
                    # moment: proxd refuses at once rather than fail later
                    with lock:
                        stats["node_down"] = stats.get("node_down", 0) + 1
                    time.sleep(0.2)
                    continue
                if r.status_code == 404 and op == "delete":
                    return  # asked again after a kill: the first delete was done
                if r.status_code != 202:
                    with lock:
                        problems.append("%s of VM %d: %d %s" % (op, vmid, r.status_code, r.text))
                    return
                cancel_soon(api, r.json()["job"], crng)
                j = api.wait_job(r.json()["job"], JOB_BOUND_S)
                note(j)
                if shared and "resize refused: not enough space on shared storage ceph" in \
                        (j.get("error") or ""):
                    with lock:  # refused by the job's reservation (another took the room)
                        stats["pool_refused"] += 1
                if op == "delete" and j["state"] == "done":
                    return

        def guarded(vmid, wrng):
            # an exception ends a worker's thread silently: it is a problem
            # (proxd not answering for 40 s, a request that timed out)
            try:
                worker(vmid, wrng)
            except Exception as e:  # noqa: BLE001
                with lock:
                    problems.append("worker of VM %d: %s: %s" % (vmid, type(e).__name__, e))

        def drainer(drng):
            """A node drawn is drained a moment after the workers began (its
            VMs migrate while their own jobs and the faults go on), then
            uncordoned once the drain ended by itself, done or failed."""
            time.sleep(drng.uniform(0.5, 3.0))
            a = admins[drng.randrange(INSTANCES)]
            # one that holds VMs (asked of proxd, which rides out the outages)
            r = a.call("GET", "/v1/vms?limit=1000")
            held = sorted({v["node"] for v in r.json()["vms"] if v["state"] == "enabled" and
                           v.get("node")}) if r.status_code == 200 else []
            node = drng.choice(held or sim.node_names)
            r = a.call("POST", "/v1/nodes/%s/drain" % node)
            if r.status_code != 202:
                with lock:
                    problems.append("drain of %s: %d %s" % (node, r.status_code, r.text))
            else:
                j = a.wait_job(r.json()["job"], 2 * JOB_BOUND_S)
                note(j)
                res = j.get("result") or {}
                with lock:
                    stats["drained"] = "%s: %d moved, %d stayed" % (
                        node, len(res.get("moved") or []), len(res.get("stayed") or []))
            r = a.call("POST", "/v1/nodes/%s/uncordon" % node)
            if r.status_code != 200:
                with lock:
                    problems.append("uncordon of %s: %d %s" % (node, r.status_code, r.text))

        def drainer_guarded(drng):
            try:
                drainer(drng)
            except Exception as e:  # noqa: BLE001
                with lock:
                    problems.append("drainer: %s: %s" % (type(e).__name__, e))

        threads = [threading.Thread(target=guarded, args=(vm, random.Random(seed * 1000 + vm)))
                   for vm in vms]
        if DRAINS:
            threads.append(threading.Thread(target=drainer_guarded,
                                            args=(random.Random(seed * 17 + 9),)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if seeks:
            seeks.stop()
            stats["seeks"] = "%d moved back, %d unknown" % (len(seeks.moves), seeks.unknown)
        if holds:
            holds.stop()
            stats["holds"] = "%d held, %d refused, %d dropped" % (holds.made, holds.refused,
                                                                  holds.dropped)
            if holds.refused < 1:  # else no hold met a creation's address
                problems.append("no hold was refused for an address in use")
        if downs:
            downs.stop()
            stats["node_downs"], stats["node_down_s"] = downs.downs, round(downs.down_s, 1)
            if downs.downs < 1:  # else the seed proved nothing about dead nodes
                problems.append("no node went down while the jobs ran")
        if outage:
            outage.stop()
            stats["outages"], stats["outage_s"] = outage.outages, round(outage.held_s, 1)
            if outage.outages < 1:  # else the seed proved nothing about outages
                problems.append("no database outage came while the jobs ran")
        if killer:
            killer.stop()
            stats["kills"] = killer.kills
            if killer.kills < 1:  # else the seed proved nothing about kills
                problems.append("no kill landed while the jobs ran")
            for a in apis:  # every instance up again, to finish its jobs
                wait_answer(a.base + "/readyz", deadline=60)
        if sampler:
            # neither the creations nor the workers' resizes (each reserves
            # its growth in the pool) took more of the pool than it has less
            # the margin
            most = sampler.stop()
            stats["pool_most_gb"] = round(most / GiB, 1)
            if most > (pool_gb - MARGIN_GB) * GiB:
                problems.append("the pool held %.1f GiB, more than its %d less the margin %d"
                                % (most / GiB, pool_gb, MARGIN_GB))
        stats["fault_hits"] = sim.clear_faults()
        sim.wait_late()
        calls = sim.ctl("GET", "/calls")["calls"]
        stats["calls"] = sum(calls.values())
        if password:
            stats["logins"] = calls.get("POST /access/ticket", 0)
        stats["busy_s"] = round(time.monotonic() - t0, 1)

        # every job ends by itself
        def all_ended():
            return not db_query(db, "SELECT id FROM jobs WHERE state IN ('queued', 'running')")
        try:
            wait_for(all_ended, 60, 0.2, "every job to end")
        except AssertionError:
            problems.append("jobs still unfinished: %s" % db_query(
                db, "SELECT id, kind, state, step FROM jobs WHERE state IN ('queued', 'running')"))
        if recv:  # every event so far delivered, while every instance runs
            t_hook = time.monotonic()
            hook_last = db_query(db, "SELECT coalesce(max(id), 0) FROM events")[0][0]
            try:
                # (and the cursor there: posts made again after a seek back
                # are through)
                wait_for(lambda: hook_all_in(db, recv, hook_last) and db_query(
                    db, "SELECT after FROM webhook_cursor WHERE name = 'flt'")[0][0] >= hook_last,
                    60, 0.2, "every event delivered to the webhook")
            except AssertionError:
                pass  # check_webhook says which
            hook_end = time.monotonic()  # (then the daemons stop, giving up posts)
            stats["hook_wait_s"] = round(hook_end - t_hook, 1)
        if follower:  # the stream has sent every event so far
            stream_last = db_query(db, "SELECT coalesce(max(id), 0) FROM events")[0][0]
            try:
                wait_for(lambda: follower.seen and follower.seen[-1][0] >= stream_last, 30, 0.2,
                         "the event stream to send every event")
            except AssertionError:
                pass  # check_stream says which
            follower.stop()
        for d in daemons:
            d.stop()
        if member_hosts(seed):  # proxd's switches away from a member's host
            stats["host_downs"] = sum(d.log_text(n).count(" down for ")
                                      for d in daemons for n in range(1, d.n + 1))
        if lag:  # a record changed within stats_lag is left to a later pass:
            # this pass comes once a report has every change (proxd is
            # stopped, and the late calls were served) and the last one is
            # that far behind
            time.sleep(LAG_S + LAG_CYCLE_S)
        proxd("reconcile", "--config", conf)
        # the daemon's snapshot sync, over every VM, before the snapshots
        # are checked: it removes a failed job's snapshot that a call of
        # it served late made after the job had looked and failed
        os.makedirs(os.path.join(tmp.name, "sync"))
        syncer = Daemon(conf, os.path.join(tmp.name, "sync"))
        daemons.append(syncer)
        t_sync = time.monotonic()
        sync_snapshots(syncer, ports[0], db, problems)
        stats["sync_s"] = round(time.monotonic() - t_sync, 1)
        stats["strays"] = sum(json.loads(r[0]).get("reason") == "stray" for r in db_query(
            db, "SELECT request FROM jobs WHERE kind = 'snap-delete'"))
    except Exception:
        if downs and downs.is_alive():
            downs.stop()
        if holds and holds.is_alive():
            holds.stop()
        if seeks and seeks.is_alive():
            seeks.stop()
        if outage and outage.is_alive():
            outage.stop()
        if killer and killer.is_alive():
            killer.halt.set()
            killer.join()
        if sampler and sampler.is_alive():
            sampler.stop()
        for i, d in enumerate(daemons):
            if d.proc is not None and not d.alive():  # a crash, or an exit of its own
                print("  instance %d ended by itself: exit status %s" % (i + 1, d.proc.returncode))
            d.abort()
        sim.stop(check_clean=False)
        if recv:
            recv.down()
        if follower and follower.is_alive():
            follower.stop()
        print("  proxd's log: %s" % keep_logs(seed, daemons))
        raise
    stats["total_s"] = round(time.monotonic() - t0, 1)
    state = sim.state()
    history = sim.ctl("GET", "/history")
    sim.stop()
    why = {}
    for (err,) in db_query(db, "SELECT error FROM jobs WHERE state = 'failed'"):
        key = err.split(":")[0][:40]
        why[key] = why.get(key, 0) + 1
    stats["failed_why"] = why
    if password:  # failed for want of a ticket
        stats["auth_failed"] = sum(any(a in err for a in AUTH_FAILURES) for (err,) in db_query(
            db, "SELECT error FROM jobs WHERE state = 'failed'"))
    durs = db_query(db, "SELECT finished_at - created_at FROM jobs WHERE finished_at > 0")
    stats["max_job_s"] = round(max([r[0] for r in durs] or [0]) / 1000.0, 1)
    check(db, state, problems)
    if holds:
        check_holds(db, state, holds.held, problems)
    if password:
        check_tickets(daemons, stats, problems)
    if role:
        check_role(db, daemons, problems)
    # the event log tells every committed change exactly once, faults and
    # kills or not (VMIDs may come back here: quarantine = 0)
    problems.extend("events: " + p for p in eventcheck.problems(db, reuse_ok=True))
    observed = {}
    check_observed(db, history, problems, observed)
    if follower:
        check_stream(db, follower, stream_last, stats, problems)
    if recv:
        recv.down()
        check_webhook(db, recv, hook_last, stats, problems, hook_end,
                      killer.kill_times if killer else [])
        check_webhook_counts(db, recv, problems, seeks)
    stats["observed"] = ", ".join("%s %d" % kv for kv in sorted(observed.items()))
    if problems or KEEP_LOG:  # keep proxd's log for the post-mortem
        keep = keep_logs(seed, daemons)
        if problems:
            problems.append("proxd's log: %s" % keep)
    return stats, problems


def keep_logs(seed, daemons):
    """Every run of every instance's log, in one file kept after the seed's
    directory is gone; its path."""
    keep = os.path.join(tempfile.gettempdir(), "proxd-faults-seed-%d.log" % seed)
    with open(keep, "w") as out:
        for i, d in enumerate(daemons):
            for n in range(1, d.n + 1):
                if len(daemons) > 1:
                    out.write("==== %s, run %d\n" % (
                        "instance %d" % (i + 1) if i < INSTANCES else "the snapshot sync", n))
                out.write(d.log_text(n))
    return keep


def check_role(db, daemons, problems):
    """A role seed's: the documented role is enough for every path proxd
    took under the faults (cleanups, failovers, drains, reinstalls, the
    reconciler's reads): no job failed for a privilege (the faults inject no
    403), the privilege check found nothing missing, and the reconciler never
    met a VM hidden from the token."""
    for (err,) in db_query(db, "SELECT error FROM jobs WHERE state = 'failed'"):
        if "Permission check failed" in err or "403" in err:
            problems.append("role: a job failed for a privilege: %s" % err[:300])
    for d in daemons:
        for n in range(1, d.n + 1):
            text = d.log_text(n)
            for what in ("the Proxmox credentials lack", "refuses proxd a look"):
                i = text.find(what)
                if i >= 0:
                    problems.append("role: proxd's log says %r" % text[max(0, i - 100):i + 300])


def check_tickets(daemons, stats, problems):
    """A password seed's: its logins and renewals counted from proxd's logs
    (every run of every instance); some creations and jobs done (not all
    failed for want of a ticket); neither the password nor a ticket in a
    log."""
    logs = [d.log_text(n) for d in daemons for n in range(1, d.n + 1)]
    stats["logged_in"] = sum(t.count(": logged in as ") for t in logs)
    stats["renewed"] = sum(t.count(": renewed the ticket as ") for t in logs)
    stats["renew_failed"] = sum(t.count(": ticket renewal failed") for t in logs)
    if not stats["created"] or stats["done"] <= stats["created"]:
        problems.append("too little done with tickets: %d of %d creations, %d other jobs done"
                        % (stats["created"], stats["creations"],
                           stats["done"] - stats["created"]))
    if not stats["renewed"]:
        problems.append("no ticket was renewed")
    for what, text in (("the password", PASSWORD), ("a ticket", "PVE:root@pam:"),
                       ("a ticket", "PVEAuthCookie")):
        if any(text in t for t in logs):
            problems.append("%s is in proxd's log" % what)
            break


def sync_snapshots(d, port, db, problems, deadline=30):
    """The daemon's snapshot sync over every enabled VM, every job ended
    (the others stopped): proxd's Daemon d, on the seed's configuration
    (reconcile_interval 3600, or RECONCILE_S) with a pass a second and every VM in a
    pass's batch, until the snap-sync jobs it ran (done) have read every
    enabled VM's list and every job they queued (the removals of failed
    jobs' snapshots, reason "stray") has ended. A pass that began after
    that, cut in two by the stop, is finished by proxd started again on
    the seed's configuration (whose first pass queues no sync, the next
    an hour later, or RECONCILE_S). Not in time: a problem."""
    seed_conf = d.conf
    with open(seed_conf) as f:
        text = f.read()
    sync_text, n = re.subn(r"(?m)^reconcile_interval = \d+$", "reconcile_interval = 1", text)
    assert n == 1, text
    d.conf = seed_conf + ".sync"
    with open(d.conf, "w") as f:
        f.write(sync_text + "\n[snapshots]\nsync_per_pass = 1000\n")
    before = {r[0] for r in db_query(db, "SELECT id FROM jobs WHERE kind = 'snap-sync'")}
    active = "SELECT id, kind, state, step FROM jobs WHERE state IN ('queued', 'running')"

    def synced():
        read = set()
        for jid, st, req in db_query(
                db, "SELECT id, state, request FROM jobs WHERE kind = 'snap-sync'"):
            if jid not in before and st == "done":
                read.update(json.loads(req)["vmids"])
        enabled = {r[0] for r in db_query(db, "SELECT vmid FROM vms WHERE state = 'enabled'")}
        # (after the syncs: a done one's removals were queued before it ended)
        return enabled <= read and not db_query(db, active)
    d.start()
    try:
        wait_answer("http://127.0.0.1:%d/readyz" % port)
        wait_for(synced, deadline, 0.1, "a snapshot sync over every VM and its removals")
    except AssertionError as e:
        problems.append("%s: %s" % (e, db_query(db, active)))
    d.stop()
    if db_query(db, active):
        d.conf = seed_conf
        d.start()
        try:
            wait_for(lambda: not db_query(db, active), deadline, 0.1,
                     "the snapshot sync cut by the stop to end")
        except AssertionError as e:
            problems.append("%s: %s" % (e, db_query(db, active)))
        d.stop()
    d.conf = seed_conf


POOL = "\n[ippool flt]\ncidr = 10.50.0.0/24\ngateway = 10.50.0.1\nbridge = vmbr0\nquarantine = 0\n"


def check_addresses(db, state, problems):
    """Every live record with a network has its address used by it, as
    pvesim's config says; no address is used twice, by the store or on the
    nodes; none is left reserved; no used address outlives its record
    (unless a leftover of its creation remains)."""
    rows = db_query(db, "SELECT addr, state, vm_id, job FROM addr_alloc WHERE pool = 'flt'")
    live = dict(db_query(db, "SELECT id, vmid FROM vms WHERE state IN "
                             "('creating', 'enabled', 'deleting')"))
    left = {r[0] for r in db_query(db, "SELECT job FROM leftovers")}
    nets = {r[0] for r in db_query(db, "SELECT vm_id FROM vm_net")}
    used = {}
    for addr, st, vm_id, job in rows:
        v = int(addr[1:], 16)
        ip = "%d.%d.%d.%d" % (v >> 24 & 255, v >> 16 & 255, v >> 8 & 255, v & 255)
        if st == "reserved":
            problems.append("address %s left reserved (job %s)" % (ip, job))
        if st != "used":
            continue
        if vm_id not in live and job not in left:
            problems.append("address %s used by gone record %s" % (ip, vm_id))
        if vm_id in used:
            problems.append("record %s uses %s and %s" % (vm_id, used[vm_id], ip))
        used[vm_id] = ip
    confs = {v["vmid"]: v.get("conf") or {} for v in state["vms"]}
    seen = {}
    for vm_id, vmid in live.items():
        if vm_id not in nets:
            continue
        if vm_id not in used:
            problems.append("VM %d has a network but no used address" % vmid)
            continue
        got = confs.get(vmid, {}).get("ipconfig0", "")
        if not got.startswith("ip=%s/" % used[vm_id]):
            problems.append("VM %d has ipconfig0 '%s', the store %s" % (vmid, got, used[vm_id]))
    for vmid, c in confs.items():
        ip = c.get("ipconfig0", "")
        if ip.startswith("ip=10.50."):
            if ip in seen:
                problems.append("VMs %d and %d both have %s" % (seen[ip], vmid, ip))
            seen[ip] = vmid


def seen_between(timelines, lo, hi, holds):
    """Was some VM of the VMID (timelines: uid -> [(ms, node, power, sizes)],
    oldest first) alive with holds(entry) at some moment of [lo, hi]
    (wall-clock ms)?"""
    for tl in timelines.values():
        at_lo = None
        for e in tl:
            if e[0] <= lo:
                at_lo = e
            elif e[0] <= hi and e[2] != "gone" and holds(e):
                return True
        if at_lo and at_lo[2] != "gone" and holds(at_lo):
            return True
    return False


# what a drift's size ("vm" after it) may have been read from, in pvesim's
# sizes [cores, memory MiB, disk bytes, pending cores, pending memory MiB]:
# the inventory's (the disk in whole GiB, rounded up when it shrank) or, for
# a failed update's write served late, the pending list's
SIZE_SEEN = {
    "cores": lambda z, v: v in (z[0], z[3]),
    "memory_mb": lambda z, v: v in (z[1], z[4]),
    "disk_gb": lambda z, v: v in (z[2] // GiB, -(-z[2] // GiB)),
}


def gone_between(timelines, node, lo, hi):
    """Was no VM of the VMID alive on `node` at some moment of [lo, hi]?"""
    moments = [lo] + sorted(e[0] for tl in timelines.values() for e in tl if lo < e[0] <= hi)
    for x in moments:
        alive = False
        for tl in timelines.values():
            now = None
            for e in tl:
                if e[0] > x:
                    break
                now = e
            alive = alive or (now is not None and now[2] != "gone" and now[1] == node)
        if not alive:
            return True
    return False


def check_observed(db, history, problems, counts):
    """What proxd's reconciler took as changed outside proxd (its observed
    power and node events, and a VM it found gone) was so in pvesim at some
    moment between the VM's event before it and it (pvesim's history, the
    same wall clock):
    the inventory it judges by may not be older than the record's last
    change (a stop a job had just made, taken back to "running" from a
    pvestatd report from before it, with stats_lag too short). So with the
    sizes of a drift (vm.drift): each it changed, as the inventory or the
    VM's pending list had it. counts: how many of each were checked."""
    if history["dropped"]:  # the history no longer goes back to the start
        return
    by_vmid = {}
    for ms, uid, vmid, node, power, *sizes in history["history"]:
        by_vmid.setdefault(vmid, {}).setdefault(uid, []).append((ms, node, power, sizes))
    before = {}  # vmid -> (the time of its last write's event so far, that write)
    for e in eventcheck.load(db):
        # one write the store tells under two types (vm.stopped and
        # vm.drift) is one change: its second event's window is the first's
        write = (e["ts"], e["data"].get("changes"), e["data"].get("vm"))
        last = before.get(e["vmid"])
        if last and last[1] == write:
            prev = last[2]
        else:
            prev = last[0] if last else None
            before[e["vmid"]] = (e["ts"], write, prev)
        if prev is None or not e["data"].get("observed"):
            continue
        tl = by_vmid.get(e["vmid"], {})
        if e["type"] in ("vm.started", "vm.stopped", "vm.paused"):
            field, want = 2, e["data"]["vm"]["power"]
        elif e["type"] == "vm.moved":
            field, want = 1, e["data"]["vm"]["node"]
        elif e["type"] == "vm.drift":
            for f in sorted(set(SIZE_SEEN) & set(e["data"]["changes"])):
                want = e["data"]["vm"][f]
                if not seen_between(tl, prev - 20, e["ts"] + 20,
                                    lambda h: SIZE_SEEN[f](h[3], want)):
                    problems.append("event %d vm.drift of VM %d at %d: %s was not %d in pvesim "
                                    "since its event before at %d" % (
                                        e["id"], e["vmid"], e["ts"], f, want, prev))
            counts["sizes"] = counts.get("sizes", 0) + 1
            continue
        elif e["type"] in ("vm.lost", "vm.deleted"):  # the VM gone from its node
            counts["gone"] = counts.get("gone", 0) + 1
            if not gone_between(tl, e["node"], prev - 20, e["ts"] + 20):
                problems.append("event %d %s of VM %d at %d: it was on %s in pvesim all along "
                                "since its event before at %d" % (e["id"], e["type"], e["vmid"],
                                                                  e["ts"], e["node"], prev))
            continue
        else:
            continue
        # (20 ms either way: the two clocks are one, their readings are not
        # taken at the same instant as what they time)
        what = ("node", "power")[field - 1]
        counts[what] = counts.get(what, 0) + 1
        if not seen_between(tl, prev - 20, e["ts"] + 20, lambda h: h[field] == want):
            problems.append("event %d %s of VM %d at %d: %s was not %s in pvesim since its "
                            "event before at %d" % (e["id"], e["type"], e["vmid"], e["ts"],
                                                    what, want, prev))


def hook_all_in(db, recv, last):
    """Has every event up to `last` been answered 2xx by the receiver?"""
    got = {json.loads(p["body"])["id"] for p in recv.snapshot() if p["answered"]}
    return all(i in got for (i,) in db_query(db, "SELECT id FROM events WHERE id <= %d" % last))


def check_webhook(db, recv, last, stats, problems, end=None, kills=()):
    """The webhook against the event log, whatever the kills, outages and
    the receiver's 500s and late answers: every event up to `last` (the
    log's end once the jobs had ended) taken at least once; every post an
    event of the log, signed, its headers and body the same each time it
    is posted; in order: a post of event N comes only after every event
    before N was taken (posted again after a kill or a timeout: the same
    or an earlier one); one instance posting at a time (its lease): no two
    posts in flight at once before `end` (when the daemons began to stop),
    but for one its sender had given up on (proxd's 1 s timeout) or
    killed (a kill between the two)."""
    log = {i: (t, vmid) for i, t, vmid in db_query(
        db, "SELECT id, type, vmid FROM events WHERE id <= %d" % last)}
    posts = sorted(recv.snapshot(), key=lambda p: p["t"])
    bodies, taken, before = {}, set(), sorted(log)
    nbad = 0
    for p in posts:
        e = json.loads(p["body"])
        i = e["id"]
        if not verify(HOOK_SECRET, p["signature"], p["body"]):
            problems.append("webhook: post of event %d badly signed" % i)
        if p["delivery"] != "flt-%d" % i or p["event"] != e["type"]:
            problems.append("webhook: post of event %d with headers %s, %s" % (
                i, p["delivery"], p["event"]))
        if bodies.setdefault(i, p["body"]) != p["body"]:
            problems.append("webhook: event %d posted with two bodies" % i)
        if i <= last:
            if log.get(i) != (e["type"], e.get("vmid") or 0):
                problems.append("webhook: event %d posted as %s of VM %s, the log has %s" % (
                    i, e["type"], e.get("vmid"), log.get(i)))
            missing = [b for b in before if b < i and b not in taken]
            if missing and nbad < 5:
                nbad += 1
                problems.append("webhook: event %d posted before %s were taken" % (
                    i, missing[:5]))
        if p["answered"]:
            taken.add(i)
        while before and before[0] in taken:  # the oldest not yet taken first
            before.pop(0)
    both = [(a, b) for a, b in recv.overlaps(gave_up=1.0)
            if (end is None or b["t"] < end) and not any(a["t"] <= k <= b["t"] for k in kills)]
    for a, b in both[:5]:
        problems.append("webhook: posts of events %s and %s in flight at once (%.3f s apart)" % (
            json.loads(a["body"])["id"], json.loads(b["body"])["id"], b["t"] - a["t"]))
    lost = sorted(set(log) - taken)
    if lost:
        problems.append("webhook: %d events never taken: %s" % (len(lost), lost[:10]))
    stats["webhook"] = "%d events, %d posts, %d not taken at once" % (
        len(log), len(posts), sum(1 for p in posts if not p["answered"]))


def check_webhook_counts(db, recv, problems, seeks=None):
    """The webhook's row in the store (what GET /v1/webhooks and proxctl
    status tell) agrees with the log: each event up to its cursor counted
    once, delivered (none is dropped: max_age is a day), whatever kills,
    lost leases and posts made twice, and once more for each seek back that
    it lies behind (exactly when every seek's answer was read; at least,
    when one was cut); a failed post's reason recorded. After each seek
    back (after X, from was), every event in (X, was] was posted again and
    taken."""
    rows = db_query(db, "SELECT after, delivered, dropped, last_error FROM webhook_cursor"
                        " WHERE name = 'flt'")
    if not rows:
        problems.append("webhook: no cursor row")
        return
    after, delivered, dropped, last_error = rows[0]
    ids = [i for (i,) in db_query(db, "SELECT id FROM events ORDER BY id")]
    upto = sum(1 for i in ids if i <= after)
    again = 0
    posts = recv.snapshot()
    for t0, x, was in (seeks.moves if seeks else []):
        back = [i for i in ids if x < i <= was]
        again += len(back)
        taken = {json.loads(p["body"])["id"] for p in posts if p["answered"] and p["t"] >= t0}
        missed = [i for i in back if i not in taken]
        if missed:
            problems.append("webhook: seek back to %d (from %d): events %s not posted again" % (
                x, was, missed[:10]))
    exact = not seeks or not seeks.unknown
    if dropped != 0 or (delivered != upto + again if exact else delivered < upto + again):
        problems.append("webhook: cursor at event %d counts %d delivered and %d dropped; the log "
                        "has %d events up to it, %d more posted again after seeks" % (
                            after, delivered, dropped, upto, again))
    failed = sum(1 for p in recv.snapshot() if not p["answered"])
    if failed >= 3 and not last_error:
        problems.append("webhook: %d posts failed, no failure recorded" % failed)


def check_holds(db, state, held, problems):
    """Every address the admin holds is held in the store and in no VM's
    config (a hold of one a creation had reserved was refused)."""
    rows = dict(db_query(db, "SELECT addr, state FROM addr_alloc WHERE pool = 'flt'"))
    for a in sorted(held):
        key = "4%032x" % int.from_bytes(bytes(int(x) for x in a.split(".")), "big")
        if rows.get(key) != "held":
            problems.append("held address %s is %s in the store" % (a, rows.get(key)))
        for v in state["vms"]:
            if (v.get("conf") or {}).get("ipconfig0", "").startswith("ip=%s/" % a):
                problems.append("VM %d has held address %s" % (v["vmid"], a))


def check_snapshots(db, state, problems):
    """Snapshots against the jobs that made and removed them: none is left
    half made or half removed, nor a snapshot or a snapshot lock left by a
    job that failed (a failed rollback's lock excepted: PVE leaves it, an
    operator's `qm unlock`); a done creation's snapshot is there unless a
    done removal of it followed, a done removal's is gone."""
    jobs = {}
    for jid, kind, st, vmid, req, fin, err in db_query(
            db, "SELECT id, kind, state, vmid, request, finished_at, error FROM jobs "
                "WHERE kind IN ('snap-create', 'snap-delete', 'snap-rollback')"):
        jobs[jid] = {"kind": kind, "state": st, "vmid": vmid, "fin": fin, "error": err,
                     "name": json.loads(req or "{}").get("name")}
    on = {v["vmid"]: v for v in state["vms"]}
    for vmid, v in on.items():
        snaps = v.get("snapshots") or {}
        for name, sn in snaps.items():
            marks = [ln.split("=", 1)[1] for ln in (sn.get("description") or "").splitlines()
                     if ln.startswith("proxd-snapshot job=")]
            # a creation whose every removal of its half-made snapshot
            # failed says so, naming the command: told, not leaked
            told = any("could not be removed" in (jobs.get(m) or {}).get("error", "")
                       for m in marks)
            if sn.get("snapstate") and not told:
                problems.append("VM %d: snapshot %s left %s" % (vmid, name, sn["snapstate"]))
            for m in marks:
                j = jobs.get(m)
                if told:
                    continue
                if not j or j["kind"] != "snap-create" or j["state"] != "done":
                    problems.append("VM %d: snapshot %s made by job %s, which is %s" % (
                        vmid, name, m, j and (j["kind"], j["state"])))
        lk = (v.get("conf") or {}).get("lock")
        if lk in ("snapshot", "snapshot-delete"):
            problems.append("VM %d left locked (%s)" % (vmid, lk))
        if lk == "rollback" and not any(j["kind"] == "snap-rollback" and j["state"] == "failed"
                                        and j["vmid"] == vmid for j in jobs.values()):
            problems.append("VM %d locked (rollback) with no failed rollback" % vmid)
    for jid, j in jobs.items():
        if j["state"] != "done" or j["vmid"] not in on or j["kind"] == "snap-rollback":
            continue
        there = j["name"] in (on[j["vmid"]].get("snapshots") or {})
        later = [o for o in jobs.values() if o["vmid"] == j["vmid"] and o["name"] == j["name"]
                 and o["state"] == "done" and o["fin"] > j["fin"] and o["kind"] != j["kind"]
                 and o["kind"] != "snap-rollback"]
        if j["kind"] == "snap-create" and not there and not later:
            problems.append("VM %d: snapshot %s made (job %s) is not there" % (
                j["vmid"], j["name"], jid))
        if j["kind"] == "snap-delete" and there and not later:
            problems.append("VM %d: snapshot %s removed (job %s) is there" % (
                j["vmid"], j["name"], jid))


def check(db, state, problems):
    """The invariants, against pvesim's state and the database."""
    jobs = db_query(db, "SELECT id, kind, state, created_at, finished_at FROM jobs")
    ends = {r[0] for r in db_query(
        db, "SELECT job FROM job_events WHERE step IN ('done', 'failed')")}
    for jid, kind, st, created, fin in jobs:
        if st not in ("done", "failed"):
            problems.append("job %s (%s) is %s" % (jid, kind, st))
        elif jid not in ends:
            problems.append("job %s (%s) is %s without its terminal event" % (jid, kind, st))
        elif fin and (fin - created) / 1000.0 > JOB_BOUND_S:
            problems.append("job %s (%s) took %.0f s" % (jid, kind, (fin - created) / 1000.0))
    # a read changes nothing and is made again when it fails transiently: a
    # job never fails because one read did
    for jid, kind, err in db_query(db, "SELECT id, kind, error FROM jobs WHERE state = 'failed'"):
        # (an AUTH_FAILURES refusal is final by design, whatever the job
        # says after it: a reinstall's "; nothing was changed", seed 17003)
        if any(err.startswith(p) for p in READ_FAILURES) and \
                not any(a in err for a in AUTH_FAILURES):
            problems.append("job %s (%s) failed on a read: %s" % (jid, kind, err))
    check_addresses(db, state, problems)
    check_snapshots(db, state, problems)
    # every job ended: none holds a VMID or room any more
    for vmid, job in db_query(db, "SELECT vmid, job FROM vmid_alloc WHERE state = 'reserved'"):
        problems.append("VMID %d left reserved (job %s)" % (vmid, job))
    for job, node, disk in db_query(
            db, "SELECT job, node, disk FROM capacity WHERE settled_at IS NULL"):
        problems.append("a reservation of %d GiB on %s left unsettled (job %s)"
                        % (disk // GiB, node, job))
    recs = db_query(db, "SELECT vmid, node, state, power, disk_gb, job FROM vms")
    live = {}
    for vmid, node, st, power, disk, job in recs:
        if st in ("creating", "deleting"):
            problems.append("record of VM %d stuck %s (job %s)" % (vmid, st, job))
        if st == "lost":
            problems.append("record of VM %d marked lost, though nobody deletes behind proxd" % vmid)
        if st in ("creating", "enabled", "deleting"):
            if vmid in live:
                problems.append("VMID %d has two live records" % vmid)
            live[vmid] = (node, st, power, disk)
    on_nodes = {}
    for v in state["vms"]:
        if v["vmid"] >= TEMPLATE_BASE and v["vmid"] < TEMPLATE_BASE + 100:
            continue
        if v["vmid"] in on_nodes:
            problems.append("VMID %d exists twice on the nodes" % v["vmid"])
        on_nodes[v["vmid"]] = v
    for vmid, v in on_nodes.items():
        conf = v.get("conf") or {}
        if vmid not in live:
            problems.append("VM %d on %s has no live record (leaked; %s, lock %s)" % (
                vmid, v["node"], conf.get("description", ""), conf.get("lock")))
    for vmid, (node, st, power, disk) in live.items():
        v = on_nodes.get(vmid)
        if not v:
            problems.append("VM %d recorded %s on %s is on no node" % (vmid, st, node))
            continue
        if v["node"] != node:
            problems.append("VM %d recorded on %s is on %s" % (vmid, node, v["node"]))
        if v["power"] != power:
            problems.append("VM %d recorded %s is %s" % (vmid, power, v["power"]))
        scsi = (v.get("conf") or {}).get("scsi0", "")
        size = [p.split("=")[1] for p in scsi.split(",") if p.startswith("size=")]
        if size and size[0].endswith("G") and int(size[0][:-1]) != disk:
            problems.append("VM %d recorded %d GiB has %s" % (vmid, disk, size[0]))
    check_sizes(db, on_nodes, problems)


def check_sizes(db, on_nodes, problems):
    """Every live record's cores and memory are the VM's: its pending
    value when Proxmox holds one (applied at the next start), else its
    config's; its pending changes are there when Proxmox holds some; its
    OS is the one its boot disk was cloned from."""
    for vmid, cores, mem, rpend, os_name in db_query(
            db, "SELECT vmid, cores, memory_mb, pending, os FROM vms WHERE state = 'enabled'"):
        v = on_nodes.get(vmid)
        if not v:
            continue
        conf, pend = v.get("conf") or {}, v.get("pending") or {}
        # the OS its boot disk was cloned from (a reinstall swaps the disk)
        boot = volume_name(conf.get("scsi0", ""))
        cloned = (v.get("origin") or {}).get(boot)
        if cloned and cloned != os_name:
            problems.append("VM %d recorded %s has a disk of %s" % (vmid, os_name, cloned))
        rpend = json.loads(rpend) if rpend else {}
        if bool(rpend) != bool(pend):
            problems.append("VM %d recorded with changes pending %s has pending %s" % (
                vmid, rpend, pend))
        has = (int(pend.get("cores", conf.get("cores", 1))),
               int(pend.get("memory", conf.get("memory", 512))))
        if has != (cores, mem):
            problems.append("VM %d recorded %d cores, %d MiB has %d cores, %d MiB%s" % (
                vmid, cores, mem, has[0], has[1], " (pending)" if pend else ""))


def snapshot_check_sees_what_is_wrong():
    """check_snapshots on a made-up database and fleet: clean, nothing;
    each fault planted, reported."""
    import sqlite3
    tmp = tempfile.TemporaryDirectory(prefix="proxd-snapcheck-")
    db = os.path.join(tmp.name, "j.db")
    c = sqlite3.connect(db)
    with c:
        c.execute("CREATE TABLE jobs (id TEXT, kind TEXT, state TEXT, vmid INTEGER, "
                  "request TEXT, finished_at INTEGER, error TEXT)")
        for row in (("a", "snap-create", "done", 1, '{"name": "s1"}', 10, ""),
                    ("b", "snap-create", "failed", 1, '{"name": "s2"}', 20, "snapshot failed"),
                    ("c", "snap-create", "done", 1, '{"name": "s3"}', 30, ""),
                    ("d", "snap-delete", "done", 1, '{"name": "s3"}', 40, ""),
                    ("e", "snap-create", "failed", 1, '{"name": "s4"}', 50,
                     "the half-made snapshot could not be removed: `qm delsnapshot 1 s4`")):
            c.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    c.close()

    def fleet(snaps, lock=None):
        conf = {"lock": lock} if lock else {}
        return {"vms": [{"vmid": 1, "conf": conf, "snapshots": snaps}]}
    good = {"s1": {"description": "proxd-snapshot job=a"}}
    cases = [(good, None, 0),
             (dict(good, s2={"description": "proxd-snapshot job=b"}), None, 1),  # a failed job's
             (dict(s1={"description": "proxd-snapshot job=a", "snapstate": "prepare"}), None, 1),
             ({}, None, 1),  # s1 made, not there
             (dict(good, s3={"description": "proxd-snapshot job=c"}), None, 1),  # removed, there
             (good, "snapshot", 1), (good, "rollback", 1),
             # left half made by a failed job: told by e, not by b
             (dict(good, s4={"description": "proxd-snapshot job=e", "snapstate": "prepare"}),
              None, 0),
             (dict(good, s2={"description": "proxd-snapshot job=b", "snapstate": "prepare"}),
              None, 2)]
    for snaps, lk, want in cases:
        problems = []
        check_snapshots(db, fleet(snaps, lk), problems)
        assert len(problems) == want, (snaps, lk, problems)
    tmp.cleanup()


def on_one_vm(name, body):
    """body(sim, d, api, port, db, vmid) on a pvesim and a proxd of their
    own (proxd gives up on a call after 1 s, no reconciler pass of its
    own), with one VM made: the snapshot sync's cases."""
    tmp = tempfile.TemporaryDirectory(prefix="proxd-faults-%s-" % name)
    db = os.path.join(tmp.name, "proxd.db")
    conf = os.path.join(tmp.name, "proxd.conf")
    sim = Sim(time_scale=0.005)
    d = None
    try:
        port = write_config(conf, db, sim.entry, ["reconcile_interval = 3600", "quarantine = 0"],
                            proxmox_extra=["connect_timeout = 1", "timeout = 1"])
        token = proxd("token", "create", "--config", conf, "--owner", "ci", "--role",
                      "user").stdout.strip()
        d = Daemon(conf, tmp.name).start()
        api = Api("http://127.0.0.1:%d" % port, token)
        wait_answer(api.base + "/readyz")
        r = api.call("POST", "/v1/vms", {"os": "debian", "name": name, "cores": 1,
                                         "memory_mb": 512, "disk_gb": DISK_GB})
        assert r.status_code == 202, (r.status_code, r.text)
        vmid = r.json()["vmid"]
        assert api.wait_job(r.json()["job"], JOB_BOUND_S)["state"] == "done"
        body(sim, d, api, port, db, vmid)
    except Exception:
        if d:
            d.abort()
        sim.stop(check_clean=False)
        raise
    sim.stop()
    tmp.cleanup()


def stray_deletions(db):
    """The snap-delete jobs, oldest first: (state, {name, reason, job})."""
    return [(st, {k: v for k, v in json.loads(req).items() if k in ("name", "reason", "job")})
            for st, req in db_query(db, "SELECT state, request FROM jobs"
                                        " WHERE kind = 'snap-delete' ORDER BY created_at")]


def sync_removes_a_late_snapshot_of_a_failed_job():
    """What sync_snapshots is for, made on purpose: a snap-create job's
    first call hangs past proxd's timeout (late_hang), the job sees no
    snapshot, its second call's task fails and the job ends failed; the
    first call, served late, then makes the snapshot with the failed job's
    marker. check_snapshots reports it; after sync_snapshots it is gone, by
    a snap-delete job of reason "stray", and nothing is reported."""
    def body(sim, d, api, port, db, vmid):
        # the first snapshot call served once the job failed (proxd gives
        # up on it after 1 s), the second one's task failing
        sim.add_faults([{"kind": "late_hang", "method": "POST", "path": "/snapshot$",
                         "count": 1, "delay_ms": 600000},
                        {"kind": "task_error", "method": "POST", "path": "/snapshot$",
                         "count": 1, "message": "injected fault"}])
        r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, {"name": "s1"})
        assert r.status_code == 202, (r.status_code, r.text)
        j = api.wait_job(r.json()["job"], JOB_BOUND_S)
        pending = sim.ctl("GET", "/calls").get("late_pending")
        assert j["state"] == "failed" and pending == 1, (j, pending)
        assert sim.release_late() == 1
        sim.wait_late()
        d.stop()
        problems = []
        check_snapshots(db, sim.state(), problems)
        assert problems == ["VM %d: snapshot s1 made by job %s, which is ('snap-create', 'failed')"
                            % (vmid, j["id"])], problems
        problems = []
        sync_snapshots(d, port, db, problems)
        check_snapshots(db, sim.state(), problems)
        assert not problems, problems
        dels = stray_deletions(db)
        assert dels == [("done", {"name": "s1", "reason": "stray", "job": j["id"]})], dels
    on_one_vm("stray", body)


def sync_removes_a_late_snapshot_made_after_its_deletion():
    """The fault test's seed 9102 (kills, rate 0.2): a snap-create job's
    first call got no answer (here it hangs past proxd's timeout, served
    when the test says), the job saw no snapshot, called again and ended
    done; a snap-delete of that snapshot ended done; then the first call
    was served and made the snapshot again, with the done job's marker.
    Taken for that job's snapshot, it stayed for ever. After
    sync_snapshots it is gone, by a snap-delete job of reason "stray"."""
    def body(sim, d, api, port, db, vmid):
        sim.add_faults([{"kind": "late_hang", "method": "POST", "path": "/snapshot$",
                         "count": 1, "delay_ms": 600000}])
        r = api.call("POST", "/v1/vms/%d/snapshots" % vmid, {"name": "s1"})
        assert r.status_code == 202, (r.status_code, r.text)
        j = api.wait_job(r.json()["job"], JOB_BOUND_S)
        assert j["state"] == "done", j
        # (the hung call had the node marked down: asked again once it is up)
        r = wait_for(lambda: (lambda r: r if r.status_code != 503 else None)(
            api.call("DELETE", "/v1/vms/%d/snapshots/s1" % vmid)), 30, 0.2, "the node back")
        assert r.status_code == 202, (r.status_code, r.text)
        assert api.wait_job(r.json()["job"], JOB_BOUND_S)["state"] == "done"
        assert sim.release_late() == 1
        sim.wait_late()
        d.stop()
        snaps = [s for v in sim.state()["vms"] if v["vmid"] == vmid
                 for s in (v.get("snapshots") or {})]
        assert snaps == ["s1"], snaps  # the late call made it again
        problems = []
        check_snapshots(db, sim.state(), problems)
        assert len(problems) == 1 and "s1 removed" in problems[0], problems
        problems = []
        sync_snapshots(d, port, db, problems)
        check_snapshots(db, sim.state(), problems)
        assert not problems, problems
        dels = stray_deletions(db)
        assert dels[-1] == ("done", {"name": "s1", "reason": "stray", "job": j["id"]}), dels
    on_one_vm("again", body)


def webhook_check_sees_what_is_wrong():
    """check_webhook on a made-up log and receiver: events 1 to 4 taken in
    order (one post of 2 refused and made again), nothing; each fault
    planted, reported."""
    import hashlib
    import hmac
    import sqlite3
    tmp = tempfile.TemporaryDirectory(prefix="proxd-hookcheck-")
    db = os.path.join(tmp.name, "e.db")
    c = sqlite3.connect(db)
    with c:
        c.execute("CREATE TABLE events (id INTEGER, type TEXT, vmid INTEGER)")
        for row in ((1, "vm.created", 100), (2, "vm.started", 100), (3, "node.down", 0),
                    (4, "vm.stopped", 100)):
            c.execute("INSERT INTO events VALUES (?, ?, ?)", row)
    c.close()

    def post(i, typ, vmid, answered=True, secret=HOOK_SECRET, delivery=None, extra=None):
        body = json.dumps(dict({"id": i, "type": typ, "vmid": vmid}, **(extra or {}))).encode()
        sig = hmac.new(secret.encode(), b"7." + body, hashlib.sha256).hexdigest()
        return {"delivery": delivery or "flt-%d" % i, "event": typ, "body": body,
                "signature": "t=7,v1=" + sig, "answered": answered}

    class Fake(Receiver):  # posts 0.3 s apart, each answered in 0.1 s
        def __init__(self, posts):
            super().__init__(port=1)
            self.posts = [dict(p, t=0.3 * n, end=0.3 * n + p.get("took", 0.1)) for n, p in
                          enumerate(posts)]
    p1, p2, p3, p4 = (post(1, "vm.created", 100), post(2, "vm.started", 100),
                      post(3, "node.down", None), post(4, "vm.stopped", 100))
    good = [p1, dict(p2, answered=False), p2, p3, p4]
    cases = [(good, 0),
             ([p1, p2, p4], 2),  # 3 never taken, 4 posted before it
             ([p1, p3, p2, p4], 1),  # 3 before 2 was taken
             ([p1, p2, p3, p4, p2], 0),  # 2 again after a kill: in order
             ([p1, post(2, "vm.started", 100, secret="another-secret-xxxx"), p3, p4], 1),
             ([p1, p2, post(2, "vm.started", 100, extra={"x": 1}), p3, p4], 1),  # 2 bodies
             ([p1, p2, post(3, "node.up", None), p4], 1),  # not the log's event 3
             ([p1, post(2, "vm.started", 100, delivery="flt-9"), p3, p4], 1),
             # 2 answered 0.5 s after it was read: in flight with 3 (a
             # second holder), unless a kill came between the two
             ([p1, dict(p2, took=0.5), p3, p4], 1)]
    for posts, want in cases:
        problems, stats = [], {}
        check_webhook(db, Fake(posts), 4, stats, problems)
        assert len(problems) == want, (want, problems, [json.loads(p["body"])["id"]
                                                         for p in posts])
    problems = []
    check_webhook(db, Fake([p1, dict(p2, took=0.5), p3, p4]), 4, {}, problems, kills=[0.45])
    assert not problems, problems

    # check_webhook_counts: the cursor's row against the log and the seeks
    # back (posts 0.3 s apart: p2 again at 1.2 s, p3 again at 1.5 s)
    c = sqlite3.connect(db)
    with c:
        c.execute("CREATE TABLE webhook_cursor (name TEXT, after INTEGER, delivered INTEGER,"
                  " dropped INTEGER, last_error TEXT)")
    c.close()

    class Moves:
        def __init__(self, moves, unknown=0):
            self.moves, self.unknown = moves, unknown
    replayed = [p1, p2, p3, p4, p2, p3, p4]
    for row, posts, seeks, want in [
            ((4, 4, 0, ""), [p1, p2, p3, p4], None, 0),
            ((4, 3, 0, ""), [p1, p2, p3, p4], None, 1),  # one not counted
            ((4, 4, 1, ""), [p1, p2, p3, p4], None, 1),  # dropped
            ((4, 7, 0, ""), replayed, Moves([(1.1, 1, 4)]), 0),  # 2-4 again after 1.1 s
            ((4, 6, 0, ""), replayed, Moves([(1.1, 1, 4)]), 1),  # counted short
            ((4, 6, 0, ""), replayed, Moves([(1.1, 1, 4)], unknown=1), 1),  # even so
            ((4, 8, 0, ""), replayed, Moves([(1.1, 1, 4)], unknown=1), 0),  # one more: cut
            ((4, 7, 0, ""), replayed, Moves([(1.3, 1, 4)]), 1),  # 2 not posted after it
            ((4, 4, 0, ""), [p1, dict(p2, answered=False), p2, dict(p3, answered=False),
                             dict(p3, answered=False), p3, p4], None, 1)]:  # failures untold
        c = sqlite3.connect(db)
        with c:
            c.execute("DELETE FROM webhook_cursor")
            c.execute("INSERT INTO webhook_cursor VALUES ('flt', ?, ?, ?, ?)", row)
        c.close()
        problems = []
        check_webhook_counts(db, Fake(posts), problems, seeks)
        assert len(problems) == want, (row, seeks and seeks.moves, problems)


def stream_check_sees_what_is_wrong():
    """check_stream on a made-up log: the events 1, 2, 4 (3 rolled back)
    sent in order, nothing; each fault planted, reported."""
    import sqlite3
    tmp = tempfile.TemporaryDirectory(prefix="proxd-streamcheck-")
    db = os.path.join(tmp.name, "e.db")
    c = sqlite3.connect(db)
    with c:
        c.execute("CREATE TABLE events (id INTEGER, type TEXT, vmid INTEGER)")
        for row in ((1, "vm.created", 100), (2, "node.down", 0), (4, "vm.stopped", 100)):
            c.execute("INSERT INTO events VALUES (?, ?, ?)", row)
    c.close()

    class Fake:
        connects = 1

        def __init__(self, seen):
            self.seen = seen
    e1, e2, e4 = (1, "vm.created", 100), (2, "node.down", 0), (4, "vm.stopped", 100)
    cases = [([e1, e2, e4], 0), ([e1, e2, e4, (5, "vm.started", 100)], 0),  # 5: after last
             ([e1, e4], 1), ([e1, e2, e2, e4], 1), ([e2, e1, e4], 1),
             ([e1, (2, "node.up", 0), e4], 1), ([e1, e2, (3, "vm.paused", 100), e4], 1)]
    for seen, want in cases:
        problems = []
        check_stream(db, Fake(seen), 4, {}, problems)
        assert len(problems) == want, (want, problems, seen)


def main():
    run_case("the_snapshot_check_sees_what_is_wrong", snapshot_check_sees_what_is_wrong)
    run_case("the_webhook_check_sees_what_is_wrong", webhook_check_sees_what_is_wrong)
    run_case("the_stream_check_sees_what_is_wrong", stream_check_sees_what_is_wrong)
    if not PG_URL:  # (the same on PostgreSQL: its time spared)
        run_case("the_snapshot_sync_removes_a_late_snapshot_of_a_failed_job",
                 sync_removes_a_late_snapshot_of_a_failed_job)
        run_case("the_snapshot_sync_removes_a_late_snapshot_made_after_its_deletion",
                 sync_removes_a_late_snapshot_made_after_its_deletion)
    all_stats = []
    for seed in SEEDS:
        holder = {}

        def one():
            stats, problems = run_seed(seed)
            holder["stats"] = stats
            print("seed %d: %s" % (seed, json.dumps(stats, sort_keys=True)), flush=True)
            assert not problems, "seed %d:\n  %s" % (seed, "\n  ".join(problems))
        run_case("seed_%d%s%s%s%s%s%s%s%s%s%s%s%s" % (seed, "_with_creations" if CREATE else "",
                                           "_shared_pool" if seed in SHARED else
                                           "_standalone" if seed in STANDALONE and
                                           seed not in MIXED else
                                           "_mixed_fleet" if seed in STANDALONE else "",
                                           "_member_hosts" if member_hosts(seed) else "",
                                           "_lagging_stats" if seed in LAGS else "",
                                           "_reconciling" if seed in RECONCILES else "",
                                           "_clocks_off" if seed in CLOCKS else "",
                                           "_address_holds" if seed in HOLDS else "",
                                           "_%d_instances" % INSTANCES if INSTANCES > 1 else "",
                                           "_with_kills" if seed in KILLS else "",
                                           "_with_password" if seed in PASSWORD_SEEDS else
                                           "_with_the_role" if seed in ROLE_SEEDS else "",
                                           "_linked_debian" if seed in LINKED else "",
                                           "_on_postgresql" if PG_URL else ""), one)
        if "stats" in holder:
            all_stats.append(holder["stats"])
    if REPORT and all_stats:
        with open(REPORT, "a") as f:
            for s in all_stats:
                f.write(json.dumps(s, sort_keys=True) + "\n")
    finish()


if __name__ == "__main__":
    main()
