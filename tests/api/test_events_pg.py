"""test_events on PostgreSQL: three private servers (lib.pg), one for the
main proxd, one for the retention case, one for the two instances sharing a
database (where the commit-ordered ids and the webhook lease matter most)."""
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
                                                      "test_events.py")], env=env).returncode
finally:
    for p in pgs:
        p.stop()
sys.exit(rc)
