"""The in-process core tests (test_create: every OS, failover from each
failing step, all nodes failing, VMID collisions, bad input;
test_concurrency: 200 creations at once; test_control: power matrix,
shutdown timeouts, deletion, updates and resizes on PVE 7/8/9, refusals,
moves, drift and the reconciler; test_control_faults: control jobs under
placed faults) run again with the core's database on a
private PostgreSQL server, each test case in a fresh schema."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
from pglib import PrivatePG  # noqa: E402

TESTS_DIR = os.environ["TESTS_DIR"]
pg = PrivatePG()
failed = []
try:
    names = ("core_test_create", "core_test_concurrency", "core_test_control",
             "core_test_control_faults")
    for name in names:
        env = dict(os.environ, PROXD_TEST_PG=pg.url)
        r = subprocess.run([os.path.join(TESTS_DIR, name)], env=env, timeout=280)
        print("%s on PostgreSQL: exit %d" % (name, r.returncode), flush=True)
        if r.returncode != 0:
            failed.append(name)
finally:
    pg.stop()
print("%d passed, %d failed" % (len(names) - len(failed), len(failed)), flush=True)
sys.exit(1 if failed else 0)
