/* h_access: privilege checks in the request path and the access-control
 * API: GET/PUT /access/acl, GET/POST /access/roles, GET/PUT/DELETE
 * /access/roles/{roleid}, GET/POST /access/groups, GET/PUT/DELETE
 * /access/groups/{groupid}, GET /access/permissions (pve-access-control
 * API2/ACL.pm, API2/Role.pm, API2/Group.pm, API2/AccessControl.pm
 * `permissions`).
 *
 * The method's schema `permissions` is evaluated as RPCEnvironment's
 * check_api2_permissions and exec_api2_perm_check do, after authentication
 * and the API token's allowtoken check and before proxying and parameter
 * verification (manager HTTPServer.pm rest_handler): on the parameters as
 * they came, {param} substituted from them. In open mode (perm.h) every
 * call passes. Everything here runs with s->mu held. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/perm.h"
#include "sim/schema_format.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHECK_DEPTH_MAX 16 /* nesting of and/or: the schema's is 2 */

int sim_perm_world(const struct sim *s, const struct sim_node *n)
{
    return s->o.standalone && n ? n->idx : 0;
}

/* The world a call's permissions live in: its host's when standalone (a
 * standalone host has no gateway, so `local` is always set) */
static int call_world(const struct sim_call *c)
{
    return sim_perm_world(c->s, c->local ? c->local : c->node);
}

struct sim_perm *sim_perm_setup(const struct sim *s, char **err)
{
    const struct sim_opts *o = &s->o;
    struct sim_perm *p = perm_new(o->pve_version, o->standalone ? s->nnodes : 1);
    for (int i = 0; i < o->ntokens; i++) {
        const char *eq = strchr(o->tokens[i], '=');
        if (!eq || !memchr(o->tokens[i], '!', (size_t)(eq - o->tokens[i])))
            continue; /* malformed: setup_auth warns */
        char *id = xstrndup(o->tokens[i], (size_t)(eq - o->tokens[i]));
        perm_add_token(p, id, false);
        free(id);
    }
    for (int i = 0; i < o->nprivsep; i++)
        if (perm_set_privsep(p, o->privsep[i])) {
            *err = xasprintf("--token-privsep %s: no --token has that id", o->privsep[i]);
            goto fail;
        }
    for (int i = 0; i < o->nroles; i++)
        if (perm_opt_role(p, o->roles[i], err))
            goto fail;
    for (int i = 0; i < o->ngroups; i++)
        if (perm_opt_group(p, o->groups[i], err))
            goto fail;
    for (int i = 0; i < o->nacls; i++)
        if (perm_opt_acl(p, o->acls[i], err))
            goto fail;
    return p;
fail:
    perm_free(p);
    return NULL;
}

bool call_perm_open(const struct sim_call *c)
{
    return perm_open(c->s->perm, call_world(c));
}

bool call_can(struct sim_call *c, const char *path, const char *priv)
{
    if (call_perm_open(c))
        return true;
    perm_set prop;
    perm_set have = perm_privs(c->s->perm, call_world(c), c->s->pools, call_owner(c), path, &prop);
    return (have & perm_priv_bit(c->s->perm, priv)) != 0;
}

bool call_can_vm(struct sim_call *c, int vmid, const char *priv)
{
    char path[32];
    snprintf(path, sizeof path, "/vms/%d", vmid);
    return call_can(c, path, priv);
}

bool call_unrestricted(const struct sim_call *c)
{
    if (call_perm_open(c) || strcmp(call_owner((struct sim_call *)c), "root@pam") == 0)
        return true;
    /* root@pam's token without privilege separation */
    const char *id = c->tokenid;
    return id && str_starts(id, "root@pam!") && perm_token_known(c->s->perm, id) &&
           !perm_token_privsep(c->s->perm, id);
}

/* ---- the schema's check expression ---------------------------------------- */

struct ev {
    struct sim_call *c;
    json_t *params;
    const char *authid;
    int w;
    char *why; /* raised: the detail in parentheses, "" for none (owned) */
};

static int raise_exc(struct ev *x, char *what)
{
    free(x->why);
    x->why = what ? what : xstrdup("");
    return -1;
}

/* PVE::Tools::template_replace: {name} becomes the parameter's value, or
 * "-" when it is absent or false to Perl ("" and "0") */
static char *template_replace(const char *tmpl, json_t *params)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    const char *q = tmpl;
    while (*q) {
        const char *open = strchr(q, '{');
        const char *close = open ? strchr(open, '}') : NULL;
        if (!open || !close) {
            buf_add(&b, q, strlen(q));
            break;
        }
        buf_add(&b, q, (size_t)(open - q));
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(close - open - 1 < 127 ? close - open - 1 : 127),
                 open + 1);
        json_t *v = json_object_get(params, name);
        if (json_is_string(v) && *json_string_value(v) && strcmp(json_string_value(v), "0"))
            buf_add(&b, json_string_value(v), strlen(json_string_value(v)));
        else if (json_is_integer(v) && json_integer_value(v) != 0)
            buf_printf(&b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else
            buf_addc(&b, '-');
        q = close + 1;
    }
    return buf_take(&b);
}

static perm_set ev_privs(struct ev *x, const char *path)
{
    perm_set prop;
    return perm_privs(x->c->s->perm, x->w, x->c->s->pools, x->authid, path, &prop);
}

/* check_full: all of privs (or with `any`, one of them) on path */
static int ev_check_full(struct ev *x, const char *path, json_t *privs, bool any, bool noerr)
{
    perm_set have = path ? ev_privs(x, path) : 0;
    size_t i;
    json_t *pv;
    if (any) {
        json_array_foreach(privs, i, pv)
        {
            if (have &
                perm_priv_bit(x->c->s->perm, json_string_value(pv) ? json_string_value(pv) : ""))
                return 1;
        }
        if (noerr)
            return 0;
        struct buf b = BUF_INIT(BUF_UNLIMITED);
        buf_printf(&b, "%s, ", path ? path : "");
        json_array_foreach(privs, i, pv)
        {
            buf_printf(&b, "%s%s", i ? "|" : "",
                       json_string_value(pv) ? json_string_value(pv) : "");
        }
        return raise_exc(x, buf_take(&b));
    }
    json_array_foreach(privs, i, pv)
    {
        const char *name = json_string_value(pv) ? json_string_value(pv) : "";
        if (!(have & perm_priv_bit(x->c->s->perm, name))) {
            if (noerr)
                return 0;
            return raise_exc(x, xasprintf("%s, %s", path ? path : "", name));
        }
    }
    return 1;
}

/* 1: granted, 0: not (noerr), -1: raised (x->why) */
static int ev_check(struct ev *x, json_t *check, bool noerr, int depth)
{
    const char *test = json_string_value(json_array_get(check, 0));
    if (!test || depth > CHECK_DEPTH_MAX)
        return 1; /* "no permission test specified": a schema error; let it pass */
    if (strcmp(test, "and") == 0) {
        /* its parts raise on failure even inside an "or", as in PVE */
        for (size_t i = 1; i < json_array_size(check); i++) {
            int r = ev_check(x, json_array_get(check, i), false, depth + 1);
            if (r < 0)
                return r;
        }
        return 1;
    }
    if (strcmp(test, "or") == 0) {
        for (size_t i = 1; i < json_array_size(check); i++) {
            int r = ev_check(x, json_array_get(check, i), true, depth + 1);
            if (r != 0)
                return r;
        }
        return noerr ? 0 : raise_exc(x, NULL);
    }
    if (strcmp(test, "perm") == 0) {
        const char *tmpl = json_string_value(json_array_get(check, 1));
        json_t *privs = json_array_get(check, 2);
        if (!tmpl || !json_is_array(privs))
            return 1; /* "missing parameters": a schema error */
        bool any = false;
        const char *require = NULL;
        for (size_t i = 3; i + 1 < json_array_size(check); i += 2) {
            const char *k = json_string_value(json_array_get(check, i));
            json_t *v = json_array_get(check, i + 1);
            if (k && strcmp(k, "any") == 0)
                any = json_is_true(v) || (json_is_integer(v) && json_integer_value(v)) ||
                      (json_is_string(v) && strcmp(json_string_value(v), "0") &&
                       *json_string_value(v));
            else if (k && strcmp(k, "require_param") == 0)
                require = json_string_value(v);
        }
        if (require) {
            json_t *v = json_object_get(x->params, require);
            if (!v || json_is_null(v))
                return noerr ? 0 : raise_exc(x, NULL);
        }
        char *path = template_replace(tmpl, x->params);
        char *norm = perm_normalize_path(path);
        free(path);
        int r = ev_check_full(x, norm, privs, any, noerr);
        free(norm);
        return r;
    }
    if (strcmp(test, "perm-modify") == 0) {
        const char *tmpl = json_string_value(json_array_get(check, 1));
        char *path = tmpl ? template_replace(tmpl, x->params) : NULL;
        char *norm = path ? perm_normalize_path(path) : NULL;
        free(path);
        if (!norm)
            return 0; /* the handler refuses the path */
        /* check_perm_modify: Permissions.Modify, or the object type's allocation */
        json_t *privs = json_pack("[s]", "Permissions.Modify");
        if (str_starts(norm, "/storage/"))
            json_array_append_new(privs, json_string("Datastore.Allocate"));
        else if (str_starts(norm, "/vms/"))
            json_array_append_new(privs, json_string("VM.Allocate"));
        else if (str_starts(norm, "/pool/"))
            json_array_append_new(privs, json_string("Pool.Allocate"));
        int r = ev_check_full(x, norm, privs, true, noerr);
        json_decref(privs);
        free(norm);
        return r;
    }
    /* userid-param, userid-group and any other form: the user and group
     * management methods that use them are not served; allowed. */
    return 1;
}

bool sim_perm_api_check(struct sim_call *c, json_t *params, char **why)
{
    *why = NULL;
    if (!c->user || !*c->user) /* an exempt path (user => 'world') */
        return true;
    if (call_perm_open(c))
        return true;
    const char *authid = call_owner(c);
    if (strcmp(authid, "root@pam") == 0)
        return true;
    json_t *perm = schema_method_permissions(c->m);
    if (!perm) {
        *why = xstrdup("Permission check failed (user != root@pam)");
        return false;
    }
    const char *u = json_string_value(json_object_get(perm, "user"));
    if (u && strcmp(u, "all") == 0)
        return true;
    json_t *check = json_object_get(perm, "check");
    struct ev x = {.c = c, .params = params, .authid = authid, .w = call_world(c)};
    if (!json_is_array(check))
        raise_exc(&x, NULL);
    else
        ev_check(&x, check, false, 0);
    if (!x.why)
        return true;
    *why = *x.why ? xasprintf("Permission check failed (%s)", x.why)
                  : xstrdup("Permission check failed");
    free(x.why);
    return false;
}

void call_perm_fail(struct sim_call *c, const char *path, const char *privs)
{
    call_fail(c, 403, "Permission check failed (%s, %s)", path, privs);
}

/* The API changed world w's ACL or roles: the state file keeps them from
 * now on (PVE writes user.cfg), so the world must be saved. */
static void api_changed(struct sim_call *c, int w)
{
    perm_touch(c->s->perm, w);
    c->s->dirty = true;
}

/* ---- GET /access/permissions ---------------------------------------------- */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* get_effective_permissions: the default paths, the ACL's, the pools'
 * VMs'; those with no privilege left out */
static json_t *effective(struct sim *s, int w, const char *id)
{
    static const char *const defaults[] = {"/",     "/access", "/access/groups", "/nodes",
                                           "/pool", "/sdn",    "/storage",       "/vms"};
    json_t *paths = json_object();
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
        json_object_set_new(paths, defaults[i], json_true());
    json_t *acl = perm_acl_paths(s->perm, w);
    size_t i;
    json_t *v;
    json_array_foreach(acl, i, v)
    {
        json_object_set_new(paths, json_string_value(v), json_true());
    }
    json_decref(acl);
    const char *pool;
    json_t *p;
    json_object_foreach(s->pools, pool, p)
    {
        json_array_foreach(json_object_get(p, "vms"), i, v)
        {
            char path[40];
            snprintf(path, sizeof path, "/vms/%lld", (long long)json_integer_value(v));
            json_object_set_new(paths, path, json_true());
        }
    }
    size_t n = json_object_size(paths), k = 0;
    const char **keys = xcalloc(n ? n : 1, sizeof *keys);
    const char *key;
    json_object_foreach(paths, key, v)
    {
        keys[k++] = key;
    }
    qsort(keys, n, sizeof *keys, str_cmp);
    json_t *res = json_object();
    for (k = 0; k < n; k++) {
        perm_set prop, have = perm_privs(s->perm, w, s->pools, id, keys[k], &prop);
        if (have)
            json_object_set_new(res, keys[k], perm_set_json(s->perm, have, prop));
    }
    free(keys);
    json_decref(paths);
    return res;
}

static void h_permissions(struct sim_call *c)
{
    struct sim *s = c->s;
    const char *authid = call_owner(c);
    const char *userid = call_str(c, "userid");
    if (!userid)
        userid = authid;
    const char *bang = strchr(userid, '!');
    bool self = strcmp(userid, authid) == 0;
    bool owned = bang && strlen(authid) == (size_t)(bang - userid) &&
                 strncmp(userid, authid, (size_t)(bang - userid)) == 0;
    if (!self && !owned && !call_can(c, "/access", "Sys.Audit")) {
        call_perm_fail(c, "/access", "Sys.Audit");
        return;
    }
    /* open mode: as root@pam's, so that a client sees nothing missing */
    const char *id = call_perm_open(c) ? "root@pam" : userid;
    int w = call_world(c);
    const char *path = call_str(c, "path");
    if (path && *path) {
        perm_set prop, have = perm_privs(s->perm, w, s->pools, id, path, &prop);
        c->data = json_object();
        json_object_set_new(c->data, path, perm_set_json(s->perm, have, prop));
        return;
    }
    c->data = effective(s, w, id);
}

/* ---- /access/acl ---------------------------------------------------------- */

static bool perm_modify_any(struct sim_call *c, const char *path)
{
    if (call_can(c, path, "Permissions.Modify"))
        return true;
    if (str_starts(path, "/storage/"))
        return call_can(c, path, "Datastore.Allocate");
    if (str_starts(path, "/vms/"))
        return call_can(c, path, "VM.Allocate");
    if (str_starts(path, "/pool/"))
        return call_can(c, path, "Pool.Allocate");
    return false;
}

static void h_acl_read(struct sim_call *c)
{
    json_t *all = perm_acl_list(c->s->perm, call_world(c));
    bool audit = call_can(c, "/access", "Sys.Audit");
    c->data = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        if (audit || perm_modify_any(c, json_string_value(json_object_get(e, "path"))))
            json_array_append(c->data, e);
    }
    json_decref(all);
}

static void h_acl_update(struct sim_call *c)
{
    struct sim *s = c->s;
    const char *users = call_str(c, "users"), *tokens = call_str(c, "tokens"),
               *groups = call_str(c, "groups"), *roles = call_str(c, "roles");
    if (!((users && *users) || (tokens && *tokens) || (groups && *groups))) {
        const char *m = "either 'users', 'groups' or 'tokens' is required.";
        call_param_fail(c, "users", "%s", m);
        call_param_fail(c, "groups", "%s", m);
        call_param_fail(c, "tokens", "%s", m);
        return;
    }
    bool del = call_bool(c, "delete", false);
    const char *raw = call_str(c, "path");
    char *path = perm_normalize_path(raw);
    json_t *rl = json_array(), *ul = json_array(), *tl = json_array(), *gl = json_array();
    if (!path || (!del && !perm_check_path(path))) {
        call_param_fail(c, "path", "invalid ACL path '%s'", raw ? raw : "");
        goto out;
    }
    bool propagate = call_bool(c, "propagate", true);
    int w = call_world(c);
    schema_split_list(roles ? roles : "", strlen(roles ? roles : ""), rl);
    schema_split_list(users ? users : "", strlen(users ? users : ""), ul);
    schema_split_list(tokens ? tokens : "", strlen(tokens ? tokens : ""), tl);
    schema_split_list(groups ? groups : "", strlen(groups ? groups : ""), gl);
    /* everything is checked before the change is written, as the
     * config is written once at the end of the locked section */
    perm_set mine = 0, mine_prop = 0;
    bool modify = call_perm_open(c);
    if (!modify) {
        mine = perm_privs(s->perm, w, s->pools, call_owner(c), path, &mine_prop);
        modify = (mine & perm_priv_bit(s->perm, "Permissions.Modify")) != 0;
    }
    size_t i;
    json_t *v;
    json_array_foreach(rl, i, v)
    {
        const char *role = json_string_value(v);
        perm_set rp;
        if (!perm_role_get(s->perm, w, role, &rp)) {
            call_fail(c, 500, "ACL update failed: role '%s' does not exist", role);
            goto out;
        }
        if (!modify) {
            const char *verb = del ? "remove" : "add";
            if ((rp & mine) != rp) {
                call_param_fail(c, "role",
                                "Cannot %s role '%s' - requires 'Permissions.Modify' or superset "
                                "of privileges.",
                                verb, role);
                goto out;
            }
            if (propagate && !del && (rp & mine_prop) != rp) {
                call_param_fail(c, "role",
                                "Cannot %s role '%s' with propagation - requires "
                                "'Permissions.Modify' or propagated superset of privileges.",
                                verb, role);
                goto out;
            }
            if (strcmp(role, "NoAccess") == 0) {
                call_param_fail(c, "role", "Cannot %s role '%s' - requires 'Permissions.Modify'",
                                verb, role);
                goto out;
            }
        }
        size_t j;
        json_t *u;
        json_array_foreach(gl, j, u)
        {
            if (!perm_group_exists(s->perm, w, json_string_value(u))) {
                call_fail(c, 500, "ACL update failed: group '%s' does not exist",
                          json_string_value(u));
                goto out;
            }
        }
        json_array_foreach(ul, j, u)
        {
            if (!perm_user_known(s->perm, json_string_value(u))) {
                call_fail(c, 500, "ACL update failed: user '%s' does not exist",
                          json_string_value(u));
                goto out;
            }
        }
        json_array_foreach(tl, j, u)
        {
            const char *t = json_string_value(u), *b = strchr(t, '!');
            if (!b) {
                call_fail(c, 500,
                          "ACL update failed: '%s' is not a valid token ID - not able to split "
                          "into user and token parts",
                          t);
                goto out;
            }
            if (!perm_token_known(s->perm, t)) {
                call_fail(c, 500, "ACL update failed: no such token '%s' for user '%.*s'", b + 1,
                          (int)(b - t), t);
                goto out;
            }
        }
    }
    api_changed(c, w);
    json_array_foreach(rl, i, v)
    {
        static const enum perm_ug types[] = {PERM_GROUP, PERM_USER, PERM_TOKEN};
        for (int pass = 0; pass < 3; pass++) {
            size_t j;
            json_t *u;
            json_array_foreach(pass == 0 ? gl : pass == 1 ? ul : tl, j, u)
            {
                char *err = NULL;
                if (perm_acl_set(s->perm, w, path, types[pass], json_string_value(u),
                                 json_string_value(v), propagate, del, &err)) {
                    call_fail(c, 500, "ACL update failed: %s", err);
                    free(err);
                    goto out;
                }
            }
        }
    }
    sim_world_touch(s); /* cached answers (/cluster/resources) are stale */
    c->data = json_null();
out:
    json_decref(rl);
    json_decref(ul);
    json_decref(tl);
    json_decref(gl);
    free(path);
}

/* ---- /access/roles -------------------------------------------------------- */

static void h_roles(struct sim_call *c)
{
    c->data = perm_roles_list(c->s->perm, call_world(c));
}

/* The schema's pve-priv-list knows the privileges of both releases; PVE's,
 * those of the release it is: false when privs names another's (answered). */
static bool privs_of_release(struct sim_call *c, const char *privs)
{
    json_t *pl = json_array();
    schema_split_list(privs ? privs : "", strlen(privs ? privs : ""), pl);
    bool ok = true;
    size_t i;
    json_t *v;
    json_array_foreach(pl, i, v)
    {
        if (!perm_priv_bit(c->s->perm, json_string_value(v))) {
            call_param_fail(c, "privs", "invalid format - invalid privilege '%s'\n",
                            json_string_value(v));
            ok = false;
            break;
        }
    }
    json_decref(pl);
    return ok;
}

static void h_role_create(struct sim_call *c)
{
    const char *role = call_str(c, "roleid");
    if (!role)
        role = "";
    if (strncasecmp(role, "PVE", 3) == 0) {
        call_param_fail(c, "roleid",
                        "cannot use role ID starting with the (case-insensitive) 'PVE' namespace");
        return;
    }
    const char *privs = call_str(c, "privs");
    if (!privs_of_release(c, privs))
        return;
    char *err = NULL;
    if (perm_role_add(c->s->perm, call_world(c), role, privs, &err)) {
        call_fail(c, 500, "create role failed: %s", err);
        free(err);
        return;
    }
    api_changed(c, call_world(c));
    c->data = json_null();
}

static void h_role_read(struct sim_call *c)
{
    const char *role = call_str(c, "roleid");
    perm_set privs;
    if (!role || !perm_role_get(c->s->perm, call_world(c), role, &privs)) {
        call_fail(c, 500, "role '%s' does not exist", role ? role : "");
        return;
    }
    c->data = json_object();
    for (int i = 0; perm_priv_name(i); i++)
        if (privs & ((perm_set)1 << i))
            json_object_set_new(c->data, perm_priv_name(i), json_integer(1));
}

/* PUT /access/roles/{roleid}: the built-in roles are refused before the
 * config is locked (no "update role failed: "); without append the
 * privileges are replaced (none given: the role is left without any) */
static void h_role_update(struct sim_call *c)
{
    const char *role = call_str(c, "roleid"), *privs = call_str(c, "privs");
    if (!role)
        role = "";
    if (!privs_of_release(c, privs))
        return;
    int w = call_world(c);
    if (perm_role_special(c->s->perm, w, role)) {
        call_fail(c, 500, "auto-generated role '%s' cannot be modified", role);
        return;
    }
    char *err = NULL;
    if (perm_role_update(c->s->perm, w, role, privs, call_bool(c, "append", false), &err)) {
        call_fail(c, 500, "update role failed: %s", err);
        free(err);
        return;
    }
    api_changed(c, w);
    sim_world_touch(c->s);
    c->data = json_null();
}

/* DELETE /access/roles/{roleid}: the role's ACL entries go with it, as PVE
 * reads user.cfg again without the entries naming a role it lacks */
static void h_role_delete(struct sim_call *c)
{
    const char *role = call_str(c, "roleid");
    if (!role)
        role = "";
    int w = call_world(c);
    if (perm_role_special(c->s->perm, w, role)) {
        call_fail(c, 500, "auto-generated role '%s' cannot be deleted", role);
        return;
    }
    char *err = NULL;
    if (perm_role_del(c->s->perm, w, role, &err)) {
        call_fail(c, 500, "delete role failed: %s", err);
        free(err);
        return;
    }
    api_changed(c, w);
    sim_world_touch(c->s);
    c->data = json_null();
}

/* ---- /access/groups ------------------------------------------------------- */

/* The groups on whose /access/groups/<group> the caller has User.Modify,
 * Sys.Audit or Group.Allocate */
static void h_groups(struct sim_call *c)
{
    static const char *const privs[] = {"User.Modify", "Sys.Audit", "Group.Allocate"};
    json_t *all = perm_groups_list(c->s->perm, call_world(c));
    c->data = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        char *path =
            xasprintf("/access/groups/%s", json_string_value(json_object_get(e, "groupid")));
        bool any = false;
        for (size_t k = 0; k < sizeof privs / sizeof *privs && !any; k++)
            any = call_can(c, path, privs[k]);
        if (any)
            json_array_append(c->data, e);
        free(path);
    }
    json_decref(all);
}

static const char *groupid(struct sim_call *c)
{
    const char *g = call_str(c, "groupid");
    return g ? g : "";
}

static void h_group_create(struct sim_call *c)
{
    char *err = NULL;
    int w = call_world(c);
    if (perm_group_add(c->s->perm, w, groupid(c), call_str(c, "comment"), &err)) {
        call_fail(c, 500, "create group failed: %s", err);
        free(err);
        return;
    }
    api_changed(c, w);
    c->data = json_null();
}

static void h_group_read(struct sim_call *c)
{
    c->data = perm_group_get(c->s->perm, call_world(c), groupid(c));
    if (!c->data)
        call_fail(c, 500, "group '%s' does not exist", groupid(c));
}

/* PUT /access/groups/{groupid}: the comment when given ("" removes it) */
static void h_group_update(struct sim_call *c)
{
    char *err = NULL;
    int w = call_world(c);
    const char *g = groupid(c), *comment = call_str(c, "comment");
    if (comment ? perm_group_set_comment(c->s->perm, w, g, comment, &err) != 0
                : !perm_group_exists(c->s->perm, w, g)) {
        call_fail(c, 500, "update group failed: group '%s' does not exist", g);
        free(err);
        return;
    }
    api_changed(c, w);
    c->data = json_null();
}

/* DELETE /access/groups/{groupid}: the group, its members and its ACL
 * entries (delete_group_acl) */
static void h_group_delete(struct sim_call *c)
{
    char *err = NULL;
    int w = call_world(c);
    if (perm_group_del(c->s->perm, w, groupid(c), &err)) {
        call_fail(c, 500, "delete group failed: %s", err);
        free(err);
        return;
    }
    api_changed(c, w);
    sim_world_touch(c->s);
    c->data = json_null();
}

const struct sim_route sim_routes_access[] = {
    {"GET", "/access/permissions", h_permissions},
    {"GET", "/access/acl", h_acl_read},
    {"PUT", "/access/acl", h_acl_update},
    {"GET", "/access/roles", h_roles},
    {"POST", "/access/roles", h_role_create},
    {"GET", "/access/roles/{roleid}", h_role_read},
    {"PUT", "/access/roles/{roleid}", h_role_update},
    {"DELETE", "/access/roles/{roleid}", h_role_delete},
    {"GET", "/access/groups", h_groups},
    {"POST", "/access/groups", h_group_create},
    {"GET", "/access/groups/{groupid}", h_group_read},
    {"PUT", "/access/groups/{groupid}", h_group_update},
    {"DELETE", "/access/groups/{groupid}", h_group_delete},
    {NULL, NULL, NULL},
};

/* ---- checks inside handlers ------------------------------------------------ */

bool call_vm_allocate(struct sim_call *c, int vmid, const char *pool)
{
    if (pool) {
        char path[160];
        snprintf(path, sizeof path, "/pool/%s", pool);
        if (call_can(c, path, "VM.Allocate"))
            return true;
    }
    if (call_can_vm(c, vmid, "VM.Allocate"))
        return true;
    char path[32];
    snprintf(path, sizeof path, "/vms/%d", vmid);
    call_perm_fail(c, path, "VM.Allocate");
    return false;
}

bool call_storage_visible(struct sim_call *c, const char *sid)
{
    char path[96];
    snprintf(path, sizeof path, "/storage/%.64s", sid);
    return call_can(c, path, "Datastore.Audit") || call_can(c, path, "Datastore.AllocateSpace");
}

bool call_storage_space(struct sim_call *c, const char *sid, size_t len)
{
    char path[96];
    snprintf(path, sizeof path, "/storage/%.*s", (int)(len < 64 ? len : 64), sid);
    if (call_can(c, path, "Datastore.AllocateSpace"))
        return true;
    call_perm_fail(c, path, "Datastore.AllocateSpace");
    return false;
}

bool call_storage_new_volumes(struct sim_call *c, const char *const *keys_prefix)
{
    if (call_perm_open(c))
        return true;
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        bool disk = false;
        for (int i = 0; keys_prefix[i] && !disk; i++) {
            size_t pl = strlen(keys_prefix[i]);
            disk = strncmp(k, keys_prefix[i], pl) == 0 &&
                   (k[pl] == 0 ? strcmp(keys_prefix[i], "rootfs") == 0 ||
                                     strcmp(keys_prefix[i], "efidisk0") == 0 ||
                                     strcmp(keys_prefix[i], "tpmstate0") == 0
                               : strspn(k + pl, "0123456789") == strlen(k + pl));
        }
        const char *sv = json_string_value(v);
        if (!disk || !sv || strstr(sv, "media=cdrom"))
            continue;
        /* a new volume: "[STORAGE:]SIZE" (check_storage_access); existing
         * volumes (check_volume_access) are not checked */
        size_t vl = strcspn(sv, ",");
        const char *colon = memchr(sv, ':', vl);
        const char *size = colon ? colon + 1 : sv;
        size_t sl = vl - (size_t)(size - sv);
        if (!colon || sl == 0 || strspn(size, "0123456789.") != sl)
            continue;
        if (!call_storage_space(c, sv, (size_t)(colon - sv)))
            return false;
    }
    return true;
}
