"""test_cancel on PostgreSQL (a private server, tests/lib/pg.py): the same
cases, the cancel recorded in PostgreSQL and read by the instance running
the job, the queued job's end and what it gives back in one PostgreSQL
transaction, racing claims that lock the row."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_cancel.py"), 1)
