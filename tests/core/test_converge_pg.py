"""test_converge (cleanup under faults, leftovers, half-made VMs, a node's
death) again with the core's database on a private PostgreSQL server, each
test case in a fresh schema: the leftovers table and the reconciler's use of
it must hold on both backends. Apart from test_core_pg so that each stays
well inside the suite's per-test time limit."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from pglib import PrivatePG  # noqa: E402

TESTS_DIR = os.environ["TESTS_DIR"]
pg = PrivatePG()
try:
    env = dict(os.environ, PROXD_TEST_PG=pg.url)
    r = subprocess.run([os.path.join(TESTS_DIR, "core_test_converge")], env=env, timeout=280)
    print("core_test_converge on PostgreSQL: exit %d" % r.returncode, flush=True)
finally:
    pg.stop()
sys.exit(1 if r.returncode != 0 else 0)
