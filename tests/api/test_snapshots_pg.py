"""test_snapshots on PostgreSQL: one private server (lib.pg) per part of the
test that runs (each part needs a database of its own): in `make test` the
first part only (the limits, two instances on one database), all three in
the full run (`make test-full`, PROXD_TEST_FULL=1); test_snapshots.py says
why."""
import os

from lib.pg import full_run, rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_snapshots.py"),
             3 if full_run() else 1)
