/* store_stats: job counts and durations per (kind, state) for metrics
 * (store.h "statistics"). One read; the array is the caller's to free.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include <stdint.h>

const int64_t store_duration_bounds[STORE_DURATION_BUCKETS] = {1000,   5000,    15000,    60000,
                                                               300000, 1800000, INT64_MAX};

/* Durations are bucketed in SQL so that metrics never load every job. */
#define DUR "(finished_at - created_at)"
#define BUCKET(i)                                                                                  \
    "sum(CASE WHEN finished_at > 0 AND " DUR " <= CAST(?" #i " AS BIGINT) THEN 1 ELSE 0 END), "
static const char SQL_JOB_STATS[] =
    "SELECT kind, state, count(*), coalesce(sum(CASE WHEN finished_at > 0 THEN " DUR
    " END), 0), " BUCKET(1) BUCKET(2) BUCKET(3) BUCKET(4) BUCKET(5)
        BUCKET(6) "sum(CASE WHEN finished_at > 0 THEN 1 ELSE 0 END)"
                  " FROM jobs GROUP BY kind, state ORDER BY kind, state";

static int row_to_stat(db_stmt *st, void *elem, struct store_error *err)
{
    struct job_stat *j = elem;
    const char *state = db_col_text(st, 1);
    int sv = job_state_parse(state);
    if (sv < 0) /* the CHECK constraint rules this out */
        return store_fail(err, STORE_E_DB, "unknown job state '%s'", state ? state : "");
    DB_COL_FIELD(st, 0, j->kind);
    j->state = (enum job_state)sv;
    j->count = db_col_i64(st, 2);
    j->duration_sum_ms = db_col_i64(st, 3);
    for (int i = 0; i < STORE_DURATION_BUCKETS; i++)
        j->buckets[i] = db_col_i64(st, 4 + i);
    return STORE_OK;
}

static void bind_bounds(db_stmt *st, const void *arg)
{
    (void)arg;
    for (int i = 0; i < STORE_DURATION_BUCKETS - 1; i++)
        db_bind_i64(st, i + 1, store_duration_bounds[i]);
}

int store_job_stats(store *s, struct job_stat **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_job_stats: NULL argument");
    const struct store_read r = {SQL_JOB_STATS, "counting jobs", bind_bounds,
                                 NULL,          sizeof **out,    row_to_stat};
    return store_read_all(s, &r, (void **)out, n, err);
}
