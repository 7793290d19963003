#!/bin/sh
# Run one test binary of the release build under valgrind (the sanitizer build
# cannot run there): no memory errors, no definite or indirect leaks.
# Skipped (exit 77) when the binary was not built (make test builds it).
bin="$1"
[ -x "$bin" ] || { echo "skipped: $bin not built"; exit 77; }
exec valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --error-exitcode=1 --track-fds=no "$bin"
