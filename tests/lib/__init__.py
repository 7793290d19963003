"""The one test library of proxd's Python tests and benchmarks.

    lib.env     where the built binaries are, the test credentials
    lib.ports   free loopback ports (one, or a block for pvesim)
    lib.wait    wait_for: poll a condition with a deadline
    lib.cases   the case runner: independent cases, a summary, an exit code
    lib.sim     a pvesim started on free ports, ready once its port map is out
    lib.fleet   simulated fleets: a large one as pvesim's start files, one
                on a shared pool, the pool's use (sampled)
    lib.faults  pvesim fault rules: a random mix of every kind
    lib.proxd   proxd: configurations, the daemon (start, kill, stop), its CLI
    lib.pg      a private PostgreSQL server (also a CLI for the C tests)
    lib.db      read (and poke) proxd's database behind its back

ctest sets PYTHONPATH to tests/ (CMakeLists.txt); by hand:
`PYTHONPATH=tests python3 tests/sim/test_smoke.py`."""
