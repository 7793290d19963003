/* store_token: API tokens (store.h "API tokens"): only a keyed hash of the
 * secret is stored. Each public function is one transaction; lists are
 * the caller's to free.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

#define TOKEN_COLS "id, owner, role, hash, created_at, revoked"
static const char SQL_TOKEN_INSERT[] = "INSERT INTO tokens (" TOKEN_COLS ")"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                                       " ON CONFLICT (id) DO NOTHING";
static const char SQL_TOKEN_GET[] = "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?1";
static const char SQL_TOKEN_LIST[] = "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_at, id";
static const char SQL_TOKEN_REVOKE[] = "UPDATE tokens SET revoked = 1 WHERE id = ?1";

static int row_to_token(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct token_rec *t = elem;
    memset(t, 0, sizeof *t);
    DB_COL_FIELD(st, 0, t->id);
    DB_COL_FIELD(st, 1, t->owner);
    DB_COL_FIELD(st, 2, t->role);
    DB_COL_FIELD(st, 3, t->hash);
    t->created_at = db_col_i64(st, 4);
    t->revoked = db_col_i64(st, 5) != 0;
    return STORE_OK;
}

struct token_ctx {
    const char *id;
    const struct token_rec *in;
    struct token_rec *out;
};

static int token_insert_fn(db_conn *c, void *ctx, struct store_error *err)
{
    const struct token_rec *t = ((struct token_ctx *)ctx)->in;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_TOKEN_INSERT, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, t->id);
    DB_BIND_FIELD(st, 2, t->owner);
    DB_BIND_FIELD(st, 3, t->role);
    DB_BIND_FIELD(st, 4, t->hash);
    db_bind_i64(st, 5, t->created_at ? t->created_at : wall_ms());
    db_bind_i64(st, 6, t->revoked);
    rc = db_run(st, err, "storing a token");
    if (rc == STORE_OK && db_changes(st) == 0)
        rc = store_fail(err, STORE_E_CONFLICT, "token id '%.32s' exists", t->id);
    db_done(st);
    return rc;
}

static bool token_role_ok(const char *role)
{
    return strcmp(role, "admin") == 0 || strcmp(role, "user") == 0;
}

int store_token_insert(store *s, const struct token_rec *t, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && t, "store_token_insert: NULL argument");
    STORE_CHECK(t->id[0] && t->owner[0] && t->hash[0],
                "token id, owner and hash must not be empty");
    STORE_CHECK(token_role_ok(t->role), "token role must be admin or user, not '%.16s'", t->role);
    struct token_ctx k = {.in = t};
    return db_tx(s->db, DB_WRITE, token_insert_fn, &k, err);
}

static int token_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_TOKEN_GET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading a token");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", k->id);
    if (rc == STORE_OK)
        row_to_token(st, k->out, err);
    db_done(st);
    return rc;
}

int store_token_get(store *s, const char *id, struct token_rec *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id && out, "store_token_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct token_ctx k = {.id = id, .out = out};
    return db_tx(s->db, DB_READ, token_get_fn, &k, err);
}

int store_token_list(store *s, struct token_rec **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_token_list: NULL argument");
    const struct store_read r = {SQL_TOKEN_LIST, "listing tokens", NULL,
                                 NULL,           sizeof **out,     row_to_token};
    return store_read_all(s, &r, (void **)out, n, err);
}

static int token_revoke_fn(db_conn *c, void *ctx, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_TOKEN_REVOKE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, ctx);
    rc = db_run(st, err, "revoking a token");
    if (rc == STORE_OK && db_changes(st) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", (const char *)ctx);
    db_done(st);
    return rc;
}

int store_token_revoke(store *s, const char *id, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id, "store_token_revoke: NULL argument");
    return db_tx(s->db, DB_WRITE, token_revoke_fn, (void *)id, err);
}
