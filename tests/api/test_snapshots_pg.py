"""test_snapshots on PostgreSQL: three private servers (pglib), one per
part of the test (each part needs a database of its own)."""
import os
import subprocess
import sys

from lib.pg import PrivatePG

pgs = []
try:
    for _ in range(3):
        pgs.append(PrivatePG())
    env = dict(os.environ, PROXD_TEST_DB=pgs[0].url, PROXD_TEST_DB2=pgs[1].url,
               PROXD_TEST_DB3=pgs[2].url)
    rc = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "test_snapshots.py")], env=env).returncode
finally:
    for p in pgs:
        p.stop()
sys.exit(rc)
