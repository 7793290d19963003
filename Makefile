# The two commands the README promises: `make demo` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh), then build with CMake.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# Tests at three times the cores and one: most of a test's time is waiting
# on pvesim's tasks, probes and leases (CI, 2 cores: -j2 818 s with the cores
# ~35% busy, -j4 512 s; later, with more tests, -j4 817 s and -j5 737 s with
# the cores ~88% busy; with the tests' CPU cut by a fifth (2026-12-07), -j5
# 687 s and -j7 637 s of ctest, the cores ~86% and ~90% busy); they wait on
# conditions with deadlines, so load only slows them.
TEST_JOBS ?= $(shell echo $$(( $(JOBS) * 3 + 1 )))
CMAKE_FLAGS ?=

.PHONY: all deps build asan tsan test test-full test-tsan demo bench soak format clean install

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B build/.release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTDIR=$(CURDIR)/build $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/.release -j $(JOBS) --target pvesim proxd proxctl -- --no-print-directory -s

asan: deps
	@cmake -S . -B build/.asan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=ON -DOUTDIR=$(CURDIR)/build/asan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/.asan -j $(JOBS) -- --no-print-directory -s

# The whole suite runs against the sanitizer build; libpve's tests also run
# under valgrind, from the release build.
test: asan build
	@cmake --build build/.release -j $(JOBS) --target pve_test_encode pve_test_task \
	  pve_test_clone_once -- --no-print-directory -s
	@cd build/.asan && ctest --output-on-failure -j $(TEST_JOBS) --timeout 300 --repeat until-pass:2

# Every PostgreSQL run of the test suites (make test runs those whose
# outcome depends on the database: concurrency, conditional writes, keeper,
# delete race, two instances on one database), about 5 minutes more.
test-full: asan build
	@cd build/.asan && PROXD_TEST_FULL=1 ctest --output-on-failure -j $(TEST_JOBS) --timeout 300 \
	  --repeat until-pass:2

# The threaded parts (proxd's HTTP server, streams, webhooks, the store
# under concurrent writers, the job runners) under ThreadSanitizer: a build of
# its own in build/tsan, and the tests that exercise them. Not part of make test
# (TSan and ASan cannot share a build; it adds ~10 minutes). test_backpressure
# is left out: its memory bounds read VmRSS, which TSan's shadow memory inflates.
TSAN_TESTS ?= api/test_http|api/test_unit|api/test_api$$|api/test_hardening|api/test_events$$|store/test_store|core/test_create$$|core/test_fleet$$
tsan: deps
	@cmake -S . -B build/.tsan -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
	  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DOUTDIR=$(CURDIR)/build/tsan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/.tsan -j $(JOBS) -- --no-print-directory -s

test-tsan: tsan
	@cd build/.tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j $(JOBS) \
	  --timeout 600 -R '$(TSAN_TESTS)'

demo: build
	@bash scripts/demo.sh

# Creation benchmark against pvesim, then the API benchmark, then pvesim at
# fleet scale (all report their targets, never fail the build); results also
# in bench/results/create.txt, api.txt, idle_conns.txt and sim.txt; then the
# CPU of one Proxmox call back to back and spaced out (callcost.txt), the
# cost of a job claim with many jobs queued (claim.txt), the
# instructions per creation at real speed and fast (instr.txt), and one
# reconciler pass over 10,000 VMs (reconcile.txt, appended).
bench: build
	@cmake --build build/.release -j $(JOBS) --target bench_callcost bench_wakecost bench_claimcost -- --no-print-directory -s
	@/usr/bin/python3 bench/bench_create.py
	@bash bench/bench_api.sh || echo "bench_api.sh did not complete (see above)"
	@/usr/bin/python3 bench/bench_idle_conns.py || echo "bench_idle_conns.py did not complete (see above)"
	@/usr/bin/python3 bench/bench_sim.py || echo "bench_sim.py did not complete (see above)"
	@/usr/bin/python3 bench/bench_callcost.py || echo "bench_callcost.py did not complete (see above)"
	@/usr/bin/python3 bench/bench_claim.py || echo "bench_claim.py did not complete (see above)"
	@/usr/bin/python3 bench/bench_instr.py || echo "bench_instr.py did not complete (see above)"
	@/usr/bin/python3 bench/bench_reconcile.py || echo "bench_reconcile.py did not complete (see above)"

# The randomized fault test, longer (many seeds, more VMs and jobs, with and
# without creations under faults), against the release build; figures in
# bench/results/soak.txt. Exit status 1 when a promise broke.
soak: build
	@bash bench/soak.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

PREFIX ?= /usr/local
DESTDIR ?=
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8 \
	  $(DESTDIR)$(PREFIX)/share/pvesim/pve-apidoc $(DESTDIR)$(PREFIX)/share/doc/proxd \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 build/proxd build/proxctl build/pvesim $(DESTDIR)$(PREFIX)/bin/
	install -m 644 docs/man/proxctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 docs/man/proxd.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 docs/man/proxd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 build/share/pve-apidoc/*.json $(DESTDIR)$(PREFIX)/share/pvesim/pve-apidoc/
	install -m 644 docs/proxd.conf.example docs/openapi.yaml README.md $(DESTDIR)$(PREFIX)/share/doc/proxd/ 2>/dev/null || \
	  install -m 644 docs/proxd.conf.example README.md $(DESTDIR)$(PREFIX)/share/doc/proxd/
	sed 's#/usr/local#$(PREFIX)#g' dist/proxd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/proxd.service
	install -m 644 dist/proxd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/

clean:
	rm -rf build
