"""test_faults_random with two proxd instances sharing the work and their
database on PostgreSQL (a private server, tests/lib/pg.py; a database per
seed): the same random jobs under the same random faults, the API calls
spread over both instances, and the same invariants checked against
pvesim's state and the database (every job ends; no VMID, address or
room left held; no VM leaked, doubled or recorded wrong). Seeds 55 (local
storage), 66 (the shared pool) and 99 (local storage, one instance or the
other killed with SIGKILL every 1 to 4 s and started again while the other
goes on, the database cut off now and then: both instances lose it
at once, as in a failover, and a node off the network now and then); 55 logs in with the password (tickets, as FAULT_PASSWORD_SEEDS
says in test_faults_random), so each instance renews and logs in on its
own under the faults; 66 calls with a privilege-separated token holding
only the operator guide's role (FAULT_ROLE_SEEDS); the jobs' leases last 5 s (job_lease), shorter than
the longest outages; FAULT_* as in test_faults_random."""
import os

from lib.pg import rerun_script

os.environ.setdefault("FAULT_INSTANCES", "2")
os.environ.setdefault("FAULT_SEEDS", "55,66,99")
os.environ.setdefault("FAULT_KILL_SEEDS", "99")
os.environ.setdefault("FAULT_SHARED_SEEDS", "66")
os.environ.setdefault("FAULT_PASSWORD_SEEDS", "55")
os.environ.setdefault("FAULT_OUTAGE_SEEDS", "99")
os.environ.setdefault("FAULT_NODE_SEEDS", "99")
os.environ.setdefault("FAULT_SEEK_SEEDS", "99")
os.environ.setdefault("FAULT_ROLE_SEEDS", "66")
# leases of 5 s, which the outages (up to 6 s) outlast: the instances must
# leave each other's live jobs alone when the database comes back
os.environ.setdefault("FAULT_JOB_LEASE", "5")
# 8 VMs a seed, not 10: two ASan proxd instances per seed, and the suite's
# time on 2 cores (14m15s in all with 10, the reinstalls, cancels and drains)
os.environ.setdefault("FAULT_VMS", "8")
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_faults_random.py"), 1)
