"""test_cancel_clone on PostgreSQL (a private server, tests/lib/pg.py): a
creation cancelled mid-clone through another instance than its runner
ends within seconds, the cancel's commit telling the runner through
PostgreSQL's NOTIFY (LISTEN on the runner's own session) where SQLite's run
uses the -jobs file. The file's other cases (the cancel in the runner's own
instance, the reinstall's), whose store calls are the same on both
databases, run on PostgreSQL in `make test-full` only
(lib.pg.case_full_on_pg)."""
import os

from lib.pg import rerun_script

rerun_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_cancel_clone.py"), 1)
