#!/usr/bin/env bash
# Make the old-format store fixtures of tests/store (test_migrate.c): a
# database of each kind written by the previous release's store (08db344,
# the last with one schema per backend), dumped as SQL text.
#
#   scripts/gen-store-fixtures.sh [REV]      (default REV: 08db344)
#
# 1. The store of REV (src/store, src/common) is taken with `git archive`
#    into a temporary directory and built with scripts/store-fixture-gen.c,
#    which writes a known set of rows through store.h.
# 2. SQLite: the program fills a new file; `sqlite3 .dump` writes
#    tests/store/fixtures/old-sqlite.sql.
# 3. PostgreSQL: a private server (initdb + pg_ctl, 127.0.0.1 only, as the
#    postgres user when run as root) in the temporary directory; the program
#    fills its database; `pg_dump --inserts` writes
#    tests/store/fixtures/old-pg.sql, with the schema name and psql's
#    meta-commands taken out so the test can load it into any schema.
# Needs: git, cc, sqlite3, PostgreSQL server binaries, libsqlite3/libpq/
# jansson headers (scripts/deps.sh installs them). Reads nothing outside
# the repository; the test reads only the fixtures.
set -euo pipefail

REV=${1:-08db344}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tests/store/fixtures
TMP=$(mktemp -d /tmp/proxd-fixtures-XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=""

cleanup() {
    if [ -n "$PGPORT" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$OUT" "$TMP/src"
git -C "$ROOT" archive "$REV" src/store src/common | tar -x -C "$TMP/src"
cc -std=gnu17 -O1 -I"$TMP/src/src" -o "$TMP/gen" "$ROOT/scripts/store-fixture-gen.c" \
    "$TMP"/src/src/store/*.c "$TMP"/src/src/common/{util,xalloc,buf,log,jsonw}.c \
    $(pkg-config --cflags --libs sqlite3 libpq jansson) -lpthread

# SQLite
"$TMP/gen" "sqlite:$TMP/old.db"
{
    echo "-- made by scripts/gen-store-fixtures.sh from the store of $REV: do not edit"
    sqlite3 "$TMP/old.db" .dump
} >"$OUT/old-sqlite.sql"

# PostgreSQL
mkdir -p "$TMP/pg"
[ "$(id -u)" = 0 ] && chown postgres "$TMP" "$TMP/pg"
as_pg "$PGBIN/initdb" -D "$TMP/pg" -U proxd -A trust -E UTF8 --no-sync >/dev/null
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/server.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories='' -c fsync=off" \
    start >/dev/null
"$TMP/gen" "postgresql://proxd@127.0.0.1:$PGPORT/postgres"
{
    echo "-- made by scripts/gen-store-fixtures.sh from the store of $REV: do not edit"
    "$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U proxd --inserts --no-owner --no-privileges \
        --no-comments --schema=public postgres |
        grep -v -e '^\\' -e "set_config('search_path'" -e '^CREATE SCHEMA' -e '^--' |
        sed -e 's/public\.//g' | cat -s
} >"$OUT/old-pg.sql"
echo "wrote $OUT/old-sqlite.sql and $OUT/old-pg.sql"
