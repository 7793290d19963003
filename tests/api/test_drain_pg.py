"""test_drain on PostgreSQL (a private server, tests/lib/pg.py): the same
cases, the cordon kept in PostgreSQL and seen by a second proxd on it."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_drain.py"), 1)
