# The two commands the README promises: `make demo` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh), then build with CMake.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build asan test demo bench format clean

all: build

deps:
	@sh scripts/deps.sh

build: deps
	@cmake -S . -B build/.release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTDIR=$(CURDIR)/build $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/.release -j $(JOBS)

asan: deps
	@cmake -S . -B build/.asan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=ON -DOUTDIR=$(CURDIR)/build/asan $(CMAKE_FLAGS) >/dev/null
	@cmake --build build/.asan -j $(JOBS)

# The whole suite runs against the sanitizer build.
test: asan
	@cd build/.asan && ctest --output-on-failure -j $(JOBS) --timeout 300

demo: build
	@bash scripts/demo.sh

# Creation benchmark against pvesim (reports its targets, never fails the
# build); results also in bench/results/create.txt.
bench: build
	@/usr/bin/python3 bench/bench_create.py

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
