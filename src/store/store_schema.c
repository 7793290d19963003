/* store_schema: the one schema of both databases, and its migrations.
 *
 * The schema is written once, with db.h's dialect tokens where the SQL
 * really differs ({ID}: an auto-increment key, {I64}: a 64-bit integer,
 * {SEQ_TYPE}: the jobs' insertion number, {STRICT}), so SQLite and
 * PostgreSQL have the same tables, columns and indexes by construction.
 *
 * Versions. Until release 08db344 each backend had its own list (SQLite
 * versions 1-6, PostgreSQL 1-2) and the two had drifted: PostgreSQL's jobs
 * had a `seq` column for insertion order (SQLite used the rowid), and
 * SQLite's VM listing indexes lacked the trailing id and its jobs_active
 * index the seq. The unified list starts at version 7. A new database gets
 * the schema of version 7 at once; a database of the previous release (at
 * its backend's last version) is brought to the same schema in place by
 * LEGACY below, keeping its rows. Older versions are refused with a clear
 * message: open them once with release 08db344 first.
 * Append new steps to MIGRATIONS; never edit a released one. Each runs in
 * the transaction that holds the migration lock, so of several processes
 * opening one database at once, one migrates and the others find it done. */
#include "store/store_int.h"

#include "common/util.h"

#include <stdio.h>
#include <string.h>

#define SCHEMA_FIRST 7 /* the version of MIGRATIONS[0] */

static const char SCHEMA_7[] =
    "CREATE TABLE vms ("
    "  id {ID},"
    "  vmid INTEGER NOT NULL,"
    "  os TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL DEFAULT '',"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  node TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('creating', 'enabled', 'failed', 'deleting', 'deleted', 'lost')),"
    "  power TEXT NOT NULL DEFAULT 'unknown',"
    "  cores INTEGER NOT NULL DEFAULT 0,"
    "  memory_mb {I64} NOT NULL DEFAULT 0,"
    "  disk_gb {I64} NOT NULL DEFAULT 0,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '',"
    "  pending TEXT,"
    "  created_at {I64} NOT NULL,"
    "  updated_at {I64} NOT NULL"
    "){STRICT};"
    "CREATE INDEX vms_vmid ON vms (vmid);"
    /* At most one live record per VMID; gone records stay for audit. */
    "CREATE UNIQUE INDEX vms_live_vmid ON vms (vmid)"
    "  WHERE state NOT IN ('deleted', 'failed', 'lost');"
    /* Every filter of a VM listing has an index that ends with the id, so
     * a page walks it in id order from the cursor. */
    "CREATE INDEX vms_owner ON vms (owner, id);"
    "CREATE INDEX vms_node ON vms (node, id);"
    "CREATE INDEX vms_os ON vms (os, id);"
    "CREATE INDEX vms_state ON vms (state, id);"
    ""
    "CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),"
    "  vmid INTEGER NOT NULL DEFAULT 0," /* 0: not tied to a VM */
    "  owner TEXT NOT NULL DEFAULT '',"
    "  step TEXT NOT NULL DEFAULT '',"
    "  node TEXT NOT NULL DEFAULT '',"
    "  upid TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  request TEXT,"
    "  attempts TEXT,"
    "  error TEXT NOT NULL DEFAULT '',"
    "  lease_owner TEXT NOT NULL DEFAULT '',"
    "  lease_until {I64} NOT NULL DEFAULT 0,"
    "  created_at {I64} NOT NULL,"
    "  updated_at {I64} NOT NULL,"
    "  finished_at {I64} NOT NULL DEFAULT 0,"
    "  seq {SEQ_TYPE}" /* insertion order, for ties on created_at */
    "){STRICT};"
    /* Partial indexes over the unfinished jobs, which claim scans. */
    "CREATE INDEX jobs_active ON jobs (created_at, seq) WHERE state IN ('queued', 'running');"
    "CREATE INDEX jobs_vmid_active ON jobs (vmid, created_at)"
    "  WHERE state IN ('queued', 'running');"
    "CREATE INDEX jobs_kind_state ON jobs (kind, state);"
    ""
    "CREATE TABLE job_events ("
    "  job TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  seq {I64} NOT NULL,"
    "  ts {I64} NOT NULL,"
    "  step TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  message TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job, seq)"
    "){STRICT};"
    ""
    "CREATE TABLE vmid_alloc ("
    "  vmid INTEGER PRIMARY KEY,"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'used', 'foreign', 'quarantine')),"
    "  job TEXT NOT NULL DEFAULT '',"
    "  until {I64} NOT NULL DEFAULT 0," /* quarantine end, unix ms */
    "  updated_at {I64} NOT NULL"
    "){STRICT};"
    ""
    "CREATE TABLE capacity ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  mem {I64} NOT NULL,"
    "  disk {I64} NOT NULL,"
    "  created_at {I64} NOT NULL,"
    "  settled_at {I64}" /* a creation's reservation outlives it, see store.h */
    "){STRICT};"
    "CREATE INDEX capacity_node ON capacity (node);"
    ""
    "CREATE TABLE idem ("
    "  owner TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  answer TEXT NOT NULL,"
    "  created_at {I64} NOT NULL,"
    "  PRIMARY KEY (owner, key)"
    "){STRICT};"
    ""
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL,"
    "  role TEXT NOT NULL CHECK (role IN ('admin', 'user')),"
    "  hash TEXT NOT NULL,"
    "  created_at {I64} NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    "){STRICT};"
    "CREATE TABLE kv ("
    "  name TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  created_at {I64} NOT NULL"
    "){STRICT};"
    ""
    "CREATE TABLE clone_slots ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  taken_at {I64} NOT NULL"
    "){STRICT};"
    "CREATE INDEX clone_slots_node ON clone_slots (node);"
    ""
    /* half-made VMs of creations, left for the reconciler to remove */
    "CREATE TABLE leftovers ("
    "  vmid INTEGER NOT NULL,"
    "  node TEXT NOT NULL,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  created_at {I64} NOT NULL,"
    "  PRIMARY KEY (vmid, node)"
    "){STRICT};";

/* Version 8: IP address pools (docs/design/ippool.md section 2). Addresses
 * are ippool_addr_key() texts ("4"/"6" + 32 hex digits, byte order = address
 * order), so both backends compare and sort them as plain text. The key is
 * global, not per pool: two pools can never hand out one address. */
static const char SCHEMA_8_ADDR[] =
    "CREATE TABLE addr_alloc ("
    "  addr TEXT PRIMARY KEY,"
    "  pool TEXT NOT NULL," /* '' for a foreign address */
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('reserved', 'used', 'quarantine', 'foreign', 'held')),"
    "  job TEXT NOT NULL DEFAULT '',"   /* the creation that reserved it */
    "  vm_id {I64} NOT NULL DEFAULT 0," /* vms.id once bound */
    "  vmid INTEGER NOT NULL DEFAULT 0,"
    "  until {I64} NOT NULL DEFAULT 0," /* quarantine end, unix ms */
    "  note TEXT NOT NULL DEFAULT '',"  /* held: who and why; foreign: where seen */
    "  updated_at {I64} NOT NULL"
    "){STRICT};"
    "CREATE INDEX addr_alloc_pool ON addr_alloc (pool, addr);"
    "CREATE INDEX addr_alloc_vm ON addr_alloc (vm_id) WHERE vm_id <> 0;"
    "CREATE INDEX addr_alloc_job ON addr_alloc (job) WHERE state = 'reserved';"
    ""
    /* the network identity of a VM record (one NIC: net0) */
    "CREATE TABLE vm_net ("
    "  vm_id {I64} PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,"
    "  mac TEXT NOT NULL,"
    "  bridge TEXT NOT NULL,"
    "  vlan INTEGER NOT NULL DEFAULT 0,"
    "  ipconfig0 TEXT NOT NULL,"
    "  nameserver TEXT NOT NULL DEFAULT '',"
    "  searchdomain TEXT NOT NULL DEFAULT '',"
    "  live INTEGER NOT NULL DEFAULT 1," /* 0 once released: the MAC may come back */
    "  seen_at {I64} NOT NULL DEFAULT 0,"
    "  seen TEXT"
    "){STRICT};"
    "CREATE UNIQUE INDEX vm_net_live_mac ON vm_net (mac) WHERE live = 1;"
    ""
    /* where each pool's last hand-out ended, so addresses rotate */
    "CREATE TABLE addr_cursor (pool TEXT PRIMARY KEY, addr TEXT NOT NULL){STRICT};"
    ""
    /* ranges added at run time, merged with the configured ones */
    "CREATE TABLE addr_range ("
    "  id {ID},"
    "  pool TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('ranges', 'reserved')),"
    "  first TEXT NOT NULL,"
    "  last TEXT NOT NULL,"
    "  created_by TEXT NOT NULL DEFAULT '',"
    "  created_at {I64} NOT NULL"
    "){STRICT};";

/* Version 9: the event log (store_event.c), the cursors of its webhooks
 * and the node health that node.up/node.down events are edges of. Event
 * ids only grow (SQLite: AUTOINCREMENT, never reused after a prune;
 * PostgreSQL: a sequence taken under the event-log lock, see
 * store_event.c), so `id > after` pages never skip a committed row. */
static const char SCHEMA_9_EVENTS[] =
    "CREATE TABLE events ("
    "  id {ID},"
    "  ts {I64} NOT NULL,"
    "  type TEXT NOT NULL,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  vmid INTEGER NOT NULL DEFAULT 0,"
    "  node TEXT NOT NULL DEFAULT '',"
    "  job TEXT NOT NULL DEFAULT '',"
    "  data TEXT NOT NULL"
    "){STRICT};"
    "CREATE INDEX events_owner ON events (owner, id);"
    "CREATE INDEX events_ts ON events (ts);"
    ""
    "CREATE TABLE webhook_cursor ("
    "  name TEXT PRIMARY KEY,"
    "  after {I64} NOT NULL DEFAULT 0," /* the last event handled */
    "  lease_owner TEXT NOT NULL DEFAULT '',"
    "  lease_until {I64} NOT NULL DEFAULT 0,"
    "  delivered {I64} NOT NULL DEFAULT 0,"
    "  dropped {I64} NOT NULL DEFAULT 0,"
    "  updated_at {I64} NOT NULL"
    "){STRICT};"
    ""
    "CREATE TABLE node_health ("
    "  node TEXT PRIMARY KEY,"
    "  up INTEGER NOT NULL,"
    "  changed_at {I64} NOT NULL"
    "){STRICT};";

/* Version 10: the job list walks jobs newest first (store_job_list.c) and
 * the history prune finds finished jobs by age (store_history.c). */
static const char SCHEMA_10_JOBS[] =
    "CREATE INDEX jobs_seq ON jobs (seq);"
    "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('done', 'failed');";

/* Version 11: a reservation's disk may be on a shared storage (Ceph,
 * NFS): `pool` names it ("cluster/storage") and its disk counts against
 * the pool, from whichever node (store_capacity.c); NULL: the node's own. */
static const char SCHEMA_11_POOL[] =
    "ALTER TABLE capacity ADD COLUMN pool TEXT;"
    "CREATE INDEX capacity_pool ON capacity (pool) WHERE pool IS NOT NULL;";

/* Version 12: a job's cancel (store_job_cancel): when it was asked (unix
 * ms, 0: never) and by whom; the runner reads it at each checkpoint. */
static const char SCHEMA_12_CANCEL[] =
    "ALTER TABLE jobs ADD COLUMN cancel_at {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE jobs ADD COLUMN cancel_by TEXT NOT NULL DEFAULT '';";

/* Version 13: the tasks proxd's calls started, known to every instance
 * (store_task.c): a lost answer's lookup skips them. */
static const char SCHEMA_13_TASKS[] = "CREATE TABLE tasks_seen ("
                                      "  upid TEXT PRIMARY KEY,"
                                      "  at {I64} NOT NULL"
                                      "){STRICT};"
                                      "CREATE INDEX tasks_seen_at ON tasks_seen (at);";

/* Version 14: a leftover holds the room its creation had reserved
 * (store_leftover_add with a room): memory on its node, disk on its node's
 * own storage or its shared pool, counted until the inventory shows the VM
 * (held_at, as a settled reservation) or, when the VM may still be made,
 * until the leftover is done (pending). */
static const char SCHEMA_14_LEFT_ROOM[] =
    "ALTER TABLE leftovers ADD COLUMN mem {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE leftovers ADD COLUMN disk {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE leftovers ADD COLUMN pool TEXT;"
    "ALTER TABLE leftovers ADD COLUMN held_at {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE leftovers ADD COLUMN pending {I64} NOT NULL DEFAULT 0;";

/* Version 15: a webhook's last failed post (store_webhook_failed) and last
 * dropped event, so that any instance can tell why its events wait or were
 * lost (GET /v1/webhooks), and the
 * count of its cursor's seeks (store_webhook_seek), which the holder's
 * writes name, with the last one's time. */
static const char SCHEMA_15_HOOK_ERROR[] =
    "ALTER TABLE webhook_cursor ADD COLUMN last_error TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE webhook_cursor ADD COLUMN last_error_at {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE webhook_cursor ADD COLUMN gen {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE webhook_cursor ADD COLUMN last_dropped_at {I64} NOT NULL DEFAULT 0;"
    "ALTER TABLE webhook_cursor ADD COLUMN seek_at {I64} NOT NULL DEFAULT 0;";

/* Version 16: the outcome of each guest check (store_guest.c): a done
 * creation, start, reboot or reinstall has one row once its guest agent
 * answered, or did not, written with its event; those done before are
 * marked skipped. */
static const char SCHEMA_16_GUEST[] =
    "CREATE TABLE guest_checks ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  state TEXT NOT NULL CHECK (state IN ('ready', 'silent', 'skipped')),"
    "  at {I64} NOT NULL,"
    "  detail TEXT NOT NULL DEFAULT ''"
    "){STRICT};"
    /* the jobs of a database that had no checks are not asked about now,
     * days later: their guests came up long since, or never will */
    "INSERT INTO guest_checks (job, state, at, detail)"
    "  SELECT id, 'skipped', finished_at, 'done before proxd checked guests' FROM jobs"
    "  WHERE state = 'done' AND kind IN ('create', 'start', 'reboot', 'reinstall');"
    /* a VM's last start, which GET /v1/vms/{vmid} shows the guest of */
    "CREATE INDEX jobs_vmid_done ON jobs (vmid, finished_at) WHERE state = 'done';";

/* Migration i brings the schema from version SCHEMA_FIRST + i - 1 to
 * SCHEMA_FIRST + i; MIGRATIONS[0] makes a new database. */
static const char *const MIGRATIONS[] = {
    SCHEMA_7,         SCHEMA_8_ADDR,   SCHEMA_9_EVENTS,     SCHEMA_10_JOBS,       SCHEMA_11_POOL,
    SCHEMA_12_CANCEL, SCHEMA_13_TASKS, SCHEMA_14_LEFT_ROOM, SCHEMA_15_HOOK_ERROR, SCHEMA_16_GUEST};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))
#define SCHEMA_LAST (SCHEMA_FIRST + NMIGRATIONS - 1)

/* A database of the previous release, at its backend's last version, to
 * the schema of version 7: what drifted is made the same, rows are kept. */
static const struct {
    const char *driver;
    int version;
    const char *sql;
} LEGACY[] = {
    {"sqlite", 6,
     /* insertion order was the rowid: it becomes seq, the same numbers,
      * and new jobs keep getting the rowid SQLite gives them ({JOB_SEQ}) */
     "ALTER TABLE jobs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;"
     "UPDATE jobs SET seq = rowid;"
     "DROP INDEX jobs_active;"
     "CREATE INDEX jobs_active ON jobs (created_at, seq) WHERE state IN ('queued', 'running');"
     "DROP INDEX vms_node;"
     "CREATE INDEX vms_node ON vms (node, id);"
     "DROP INDEX vms_os;"
     "CREATE INDEX vms_os ON vms (os, id);"
     "DROP INDEX vms_state;"
     "CREATE INDEX vms_state ON vms (state, id);"},
    /* PostgreSQL's schema was the unified one already: only its version
     * number changes. */
    {"postgresql", 2, ""},
};

static const char SQL_VERSION_TABLE[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  version INTEGER PRIMARY KEY, applied_at {I64} NOT NULL){STRICT}";
static const char SQL_VERSION_GET[] = "SELECT coalesce(max(version), 0) FROM schema_version";
static const char SQL_VERSION_ADD[] = "INSERT INTO schema_version (version, applied_at) "
                                      "VALUES (?1, ?2)";

static int version_add(db_conn *c, int v, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VERSION_ADD, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, v);
    db_bind_i64(st, 2, wall_ms());
    rc = db_run(st, err, "recording schema version");
    db_done(st);
    return rc;
}

static int version_get(db_conn *c, int *v, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VERSION_GET, &st, err);
    if (rc)
        return rc;
    bool row = false;
    rc = db_step(st, &row, err, "reading schema_version");
    *v = row ? (int)db_col_i64(st, 0) : 0;
    db_done(st);
    return rc;
}

/* A database made before the unified list: to version SCHEMA_FIRST. */
static int from_legacy(db_conn *c, const char *driver, int version, struct store_error *err)
{
    for (size_t i = 0; i < sizeof LEGACY / sizeof LEGACY[0]; i++) {
        if (strcmp(LEGACY[i].driver, driver) != 0)
            continue;
        if (version != LEGACY[i].version)
            return store_fail(err, STORE_E_INVALID,
                              "database schema version %d is older than this proxd migrates "
                              "(%s %d): open it once with release 08db344 first",
                              version, driver, LEGACY[i].version);
        int rc = db_exec(c, LEGACY[i].sql, err);
        return rc ? rc : version_add(c, SCHEMA_FIRST, err);
    }
    return store_fail(err, STORE_E_INVALID, "no legacy schema for %s", driver);
}

static int migrate_fn(db_conn *c, void *ctx, struct store_error *err)
{
    const char *driver = ctx;
    int version = 0;
    int rc = db_lock(c, DB_LOCK_MIGRATE, "schema", err);
    if (rc || (rc = db_exec(c, SQL_VERSION_TABLE, err)) || (rc = version_get(c, &version, err)))
        return rc;
    if (version > SCHEMA_LAST)
        return store_fail(err, STORE_E_INVALID,
                          "database schema version %d is newer than this proxd knows (%d)", version,
                          SCHEMA_LAST);
    if (version > 0 && version < SCHEMA_FIRST) {
        if ((rc = from_legacy(c, driver, version, err)))
            return rc;
        version = SCHEMA_FIRST;
    }
    for (int v = version ? version + 1 : SCHEMA_FIRST; v <= SCHEMA_LAST; v++) {
        rc = db_exec(c, MIGRATIONS[v - SCHEMA_FIRST], err);
        if (rc && err) {
            char first[sizeof err->message - 32];
            snprintf(first, sizeof first, "%.*s", (int)sizeof first - 1, err->message);
            snprintf(err->message, sizeof err->message, "schema migration %d: %s", v, first);
        }
        if (rc)
            return rc;
        if ((rc = version_add(c, v, err)))
            return rc;
    }
    return STORE_OK;
}

int store_schema_migrate(db *d, struct store_error *err)
{
    return db_tx(d, DB_WRITE, migrate_fn, (void *)db_name(d), err);
}
