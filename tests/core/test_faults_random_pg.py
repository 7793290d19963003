"""test_faults_random with two proxd instances sharing the work and their
database on PostgreSQL (a private server, tests/lib/pg.py; a database per
seed): the same random jobs under the same random faults, the API calls
spread over both instances, and the same invariants checked against
pvesim's state and the database (every job ends; no VMID, address or
room left held; no VM leaked, doubled or recorded wrong). Seeds 55 (local
storage) and 66 (the shared pool); FAULT_* as in test_faults_random."""
import os

from lib.pg import rerun_script

os.environ.setdefault("FAULT_INSTANCES", "2")
os.environ.setdefault("FAULT_SEEDS", "55,66")
os.environ.setdefault("FAULT_SHARED_SEEDS", "66")
rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_faults_random.py"), 1)
