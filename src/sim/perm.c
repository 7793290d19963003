/* perm: privileges, roles and ACLs (see perm.h). The role tables are
 * derived as pve-access-control's create_roles derives them from its
 * privilege groups: per category, an admin role (admin, user and audit
 * privileges), a user role (user and audit, when the category has user
 * privileges), PVEAdmin (every category's admin role but Mapping.Modify),
 * PVEAuditor (every audit privilege), PVETemplateUser, NoAccess and
 * Administrator (every privilege). The groups differ between releases:
 * 8.x has VM.Monitor; 9.x replaced it with the VM.GuestAgent.* privileges
 * and added VM.Replicate. */
#include "sim/perm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/xalloc.h"

#define PERM_MAX_ACL 4096  /* ACL entries per world */
#define PERM_MAX_ROLES 256 /* roles per world, built-in ones included */
#define PERM_MAX_TOKENS 64
#define PERM_MAX_USERS 256
#define PERM_NAME_MAX 64    /* role names */
#define PERM_ID_MAX 128     /* user and token ids */
#define PERM_PATH_MAX 256   /* ACL paths */
#define PERM_MAX_GROUPS 256 /* groups per world */

enum level { L_ROOT, L_ADMIN, L_USER, L_AUDIT };
enum { R8 = 1, R9 = 2, RALL = R8 | R9 };

/* pve-access-control's $privgroups, both releases in one table */
static const struct privdef {
    const char *cat, *name;
    enum level level;
    int rel;
} privdefs[] = {
    {"VM", "VM.Config.Disk", L_ADMIN, RALL},
    {"VM", "VM.Config.CPU", L_ADMIN, RALL},
    {"VM", "VM.Config.Memory", L_ADMIN, RALL},
    {"VM", "VM.Config.Network", L_ADMIN, RALL},
    {"VM", "VM.Config.HWType", L_ADMIN, RALL},
    {"VM", "VM.Config.Options", L_ADMIN, RALL},
    {"VM", "VM.Allocate", L_ADMIN, RALL},
    {"VM", "VM.Clone", L_ADMIN, RALL},
    {"VM", "VM.GuestAgent.Unrestricted", L_ADMIN, R9},
    {"VM", "VM.Migrate", L_ADMIN, RALL},
    {"VM", "VM.Monitor", L_ADMIN, R8},
    {"VM", "VM.Replicate", L_ADMIN, R9},
    {"VM", "VM.Snapshot", L_ADMIN, RALL},
    {"VM", "VM.Snapshot.Rollback", L_ADMIN, RALL},
    {"VM", "VM.Config.CDROM", L_USER, RALL},
    {"VM", "VM.Config.Cloudinit", L_USER, RALL},
    {"VM", "VM.Console", L_USER, RALL},
    {"VM", "VM.Backup", L_USER, RALL},
    {"VM", "VM.GuestAgent.FileRead", L_USER, R9},
    {"VM", "VM.GuestAgent.FileSystemMgmt", L_USER, R9},
    {"VM", "VM.GuestAgent.FileWrite", L_USER, R9},
    {"VM", "VM.PowerMgmt", L_USER, RALL},
    {"VM", "VM.Audit", L_AUDIT, RALL},
    {"VM", "VM.GuestAgent.Audit", L_AUDIT, R9},
    {"Sys", "Sys.PowerMgmt", L_ROOT, RALL},
    {"Sys", "Sys.Modify", L_ROOT, RALL},
    {"Sys", "Sys.Incoming", L_ROOT, RALL},
    {"Sys", "Sys.AccessNetwork", L_ROOT, RALL},
    {"Sys", "Sys.Console", L_ADMIN, RALL},
    {"Sys", "Sys.Syslog", L_ADMIN, RALL},
    {"Sys", "Sys.Audit", L_AUDIT, RALL},
    {"Datastore", "Datastore.Allocate", L_ADMIN, RALL},
    {"Datastore", "Datastore.AllocateTemplate", L_ADMIN, RALL},
    {"Datastore", "Datastore.AllocateSpace", L_USER, RALL},
    {"Datastore", "Datastore.Audit", L_AUDIT, RALL},
    {"SDN", "SDN.Allocate", L_ADMIN, RALL},
    {"SDN", "SDN.Audit", L_ADMIN, RALL}, /* in admin and audit, as the source has it */
    {"SDN", "SDN.Use", L_USER, RALL},
    {"SDN", "SDN.Audit", L_AUDIT, RALL},
    {"User", "Realm.Allocate", L_ROOT, RALL},
    {"User", "User.Modify", L_ADMIN, RALL},
    {"User", "Group.Allocate", L_ADMIN, RALL},
    {"User", "Realm.AllocateUser", L_ADMIN, RALL},
    {"Pool", "Pool.Allocate", L_ADMIN, RALL},
    {"Pool", "Pool.Audit", L_USER, RALL},
    {"Pool", "Pool.Audit", L_AUDIT, RALL},
    {"Mapping", "Mapping.Modify", L_ADMIN, RALL},
    {"Mapping", "Mapping.Use", L_USER, RALL},
    {"Mapping", "Mapping.Audit", L_AUDIT, RALL},
    {NULL, "Permissions.Modify", L_ROOT, RALL}, /* in no group */
};
#define NPRIVDEFS (sizeof privdefs / sizeof *privdefs)
static const char *const cats[] = {"VM", "Sys", "Datastore", "SDN", "User", "Pool", "Mapping"};

/* the privilege names, each once, in privdefs' order: bit i */
static const char *const priv_names[] = {
    "VM.Config.Disk",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Allocate",
    "VM.Clone",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.Monitor",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
    "VM.Config.CDROM",
    "VM.Config.Cloudinit",
    "VM.Console",
    "VM.Backup",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.PowerMgmt",
    "VM.Audit",
    "VM.GuestAgent.Audit",
    "Sys.PowerMgmt",
    "Sys.Modify",
    "Sys.Incoming",
    "Sys.AccessNetwork",
    "Sys.Console",
    "Sys.Syslog",
    "Sys.Audit",
    "Datastore.Allocate",
    "Datastore.AllocateTemplate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Realm.Allocate",
    "User.Modify",
    "Group.Allocate",
    "Realm.AllocateUser",
    "Pool.Allocate",
    "Pool.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Mapping.Audit",
    "Permissions.Modify",
};
#define NPRIVS ((int)(sizeof priv_names / sizeof *priv_names))
_Static_assert(sizeof priv_names / sizeof *priv_names <= 64, "perm_set holds every privilege");

struct role {
    char name[PERM_NAME_MAX];
    perm_set privs;
    bool special; /* built in */
};

struct acl_entry {
    char *path; /* normalized */
    char *ugid; /* a group's without its '@' */
    enum perm_ug type;
    char role[PERM_NAME_MAX];
    bool prop;
};

/* a group of user.cfg: its members are users, each at most once */
struct group {
    char name[PERM_NAME_MAX];
    char *comment; /* NULL: none */
    char **members;
    int nmembers;
};

struct world {
    struct role *roles; /* built-in ones first */
    int nroles;
    struct acl_entry *acl;
    int nacl;
    struct group *groups;
    int ngroups;
    /* changed through the API (or loaded from a state file that was): from
     * then on the state file, not the flags, is what a restart starts from */
    bool kept;
};

struct tok {
    char id[PERM_ID_MAX];
    bool privsep;
};

struct sim_perm {
    int rel; /* R8 or R9 */
    perm_set valid;
    struct world *w;
    int nworlds;
    struct tok toks[PERM_MAX_TOKENS];
    int ntoks;
    char *users[PERM_MAX_USERS];
    int nusers;
};

const char *perm_priv_name(int i)
{
    return i >= 0 && i < NPRIVS ? priv_names[i] : NULL;
}

static int priv_index(const char *name)
{
    for (int i = 0; i < NPRIVS; i++)
        if (strcmp(priv_names[i], name) == 0)
            return i;
    return -1;
}

perm_set perm_priv_bit(const struct sim_perm *p, const char *name)
{
    int i = priv_index(name);
    return i < 0 ? 0 : ((perm_set)1 << i) & p->valid;
}

perm_set perm_all(const struct sim_perm *p)
{
    return p->valid;
}

static void role_put(struct world *w, const char *name, perm_set privs, bool special)
{
    for (int i = 0; i < w->nroles; i++)
        if (strcmp(w->roles[i].name, name) == 0) {
            w->roles[i].privs |= privs;
            return;
        }
    w->roles = xrealloc(w->roles, (size_t)(w->nroles + 1) * sizeof *w->roles);
    struct role *r = &w->roles[w->nroles++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->privs = privs;
    r->special = special;
}

/* create_roles, for the release */
static void builtin_roles(struct sim_perm *p, struct world *w)
{
    role_put(w, "NoAccess", 0, true);
    role_put(w, "Administrator", p->valid, true);
    for (size_t c = 0; c < sizeof cats / sizeof *cats; c++) {
        perm_set admin = 0, user = 0, audit = 0;
        for (size_t i = 0; i < NPRIVDEFS; i++) {
            const struct privdef *d = &privdefs[i];
            if (!d->cat || strcmp(d->cat, cats[c]) || !(d->rel & p->rel))
                continue;
            perm_set bit = (perm_set)1 << priv_index(d->name);
            if (d->level == L_ADMIN)
                admin |= bit;
            else if (d->level == L_USER)
                user |= bit;
            else if (d->level == L_AUDIT)
                audit |= bit;
        }
        char name[PERM_NAME_MAX];
        snprintf(name, sizeof name, "PVE%sAdmin", cats[c]);
        role_put(w, name, admin | user | audit, true);
        perm_set pveadmin = admin | user | audit;
        if (strcmp(cats[c], "Mapping") == 0) /* only Administrator and PVEMappingAdmin */
            pveadmin &= ~((perm_set)1 << priv_index("Mapping.Modify"));
        role_put(w, "PVEAdmin", pveadmin, true);
        if (user) {
            snprintf(name, sizeof name, "PVE%sUser", cats[c]);
            role_put(w, name, user | audit, true);
        }
        role_put(w, "PVEAuditor", audit, true);
    }
    role_put(w, "PVETemplateUser",
             ((perm_set)1 << priv_index("VM.Clone")) | ((perm_set)1 << priv_index("VM.Audit")),
             true);
}

struct sim_perm *perm_new(int pve_version, int nworlds)
{
    struct sim_perm *p = xcalloc(1, sizeof *p);
    p->rel = pve_version >= 9 ? R9 : R8;
    for (size_t i = 0; i < NPRIVDEFS; i++)
        if (privdefs[i].rel & p->rel)
            p->valid |= (perm_set)1 << priv_index(privdefs[i].name);
    p->nworlds = nworlds > 0 ? nworlds : 1;
    p->w = xcalloc((size_t)p->nworlds, sizeof *p->w);
    for (int i = 0; i < p->nworlds; i++)
        builtin_roles(p, &p->w[i]);
    return p;
}

static void acl_clear(struct world *w)
{
    for (int j = 0; j < w->nacl; j++) {
        free(w->acl[j].path);
        free(w->acl[j].ugid);
    }
    free(w->acl);
    w->acl = NULL;
    w->nacl = 0;
}

static void group_free(struct group *g)
{
    for (int i = 0; i < g->nmembers; i++)
        free(g->members[i]);
    free(g->members);
    free(g->comment);
}

static void groups_clear(struct world *w)
{
    for (int i = 0; i < w->ngroups; i++)
        group_free(&w->groups[i]);
    free(w->groups);
    w->groups = NULL;
    w->ngroups = 0;
}

void perm_free(struct sim_perm *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nworlds; i++) {
        acl_clear(&p->w[i]);
        groups_clear(&p->w[i]);
        free(p->w[i].roles);
    }
    free(p->w);
    for (int i = 0; i < p->nusers; i++)
        free(p->users[i]);
    free(p);
}

/* ---- users and tokens ---------------------------------------------------- */

static const struct tok *tok_find(const struct sim_perm *p, const char *id)
{
    for (int i = 0; i < p->ntoks; i++)
        if (strcmp(p->toks[i].id, id) == 0)
            return &p->toks[i];
    return NULL;
}

bool perm_token_known(const struct sim_perm *p, const char *tokenid)
{
    return tok_find(p, tokenid) != NULL;
}

static void user_add(struct sim_perm *p, const char *userid, size_t n)
{
    for (int i = 0; i < p->nusers; i++)
        if (strlen(p->users[i]) == n && strncmp(p->users[i], userid, n) == 0)
            return;
    if (p->nusers < PERM_MAX_USERS)
        p->users[p->nusers++] = xstrndup(userid, n);
}

bool perm_user_known(const struct sim_perm *p, const char *userid)
{
    if (strcmp(userid, "root@pam") == 0)
        return true;
    for (int i = 0; i < p->nusers; i++)
        if (strcmp(p->users[i], userid) == 0)
            return true;
    return false;
}

void perm_add_token(struct sim_perm *p, const char *tokenid, bool privsep)
{
    const char *bang = strchr(tokenid, '!');
    if (!bang || strlen(tokenid) >= PERM_ID_MAX || p->ntoks >= PERM_MAX_TOKENS ||
        tok_find(p, tokenid))
        return;
    struct tok *t = &p->toks[p->ntoks++];
    snprintf(t->id, sizeof t->id, "%s", tokenid);
    t->privsep = privsep;
    user_add(p, tokenid, (size_t)(bang - tokenid));
}

int perm_set_privsep(struct sim_perm *p, const char *tokenid)
{
    for (int i = 0; i < p->ntoks; i++)
        if (strcmp(p->toks[i].id, tokenid) == 0) {
            p->toks[i].privsep = true;
            return 0;
        }
    return -1;
}

bool perm_token_privsep(const struct sim_perm *p, const char *tokenid)
{
    const struct tok *t = tok_find(p, tokenid);
    return t && t->privsep;
}

/* ---- paths ----------------------------------------------------------- */

char *perm_normalize_path(const char *path)
{
    if (!path || !*path)
        return NULL;
    size_t n = strlen(path);
    char *r = xmalloc(n + 2), *o = r;
    if (path[0] != '/')
        *o++ = '/';
    for (const char *q = path; *q; q++) {
        if (*q == '/' && o > r && o[-1] == '/')
            continue; /* s|/+|/|g */
        *o++ = *q;
    }
    if (o - r > 1 && o[-1] == '/') /* s|/$|| */
        o--;
    *o = 0;
    for (const char *q = r; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_' || ch == '/')) {
            free(r);
            return NULL;
        }
    }
    return r;
}

/* the path's components: how many, and each one's start and length */
#define PERM_MAX_DEPTH 16
struct comps {
    int n;
    const char *s[PERM_MAX_DEPTH];
    size_t len[PERM_MAX_DEPTH];
};

static void split_path(const char *path, struct comps *c)
{
    c->n = 0;
    const char *q = path;
    while (*q) {
        while (*q == '/')
            q++;
        if (!*q)
            break;
        size_t l = strcspn(q, "/");
        if (c->n == PERM_MAX_DEPTH) { /* deeper than any ACL path: an unmatchable tail */
            c->len[PERM_MAX_DEPTH - 1] = (size_t)-1;
            break;
        }
        c->s[c->n] = q;
        c->len[c->n++] = l;
        q += l;
    }
}

static bool name_chars(const char *s, size_t n, bool dot_dash_us)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') ||
                  (dot_dash_us && (ch == '.' || ch == '-' || ch == '_'));
        if (!ok)
            return false;
    }
    return true;
}

static bool comp_is(const struct comps *c, int i, const char *lit)
{
    return c->len[i] == strlen(lit) && strncmp(c->s[i], lit, c->len[i]) == 0;
}

bool perm_check_path(const char *path)
{
    if (!path || path[0] != '/')
        return false;
    if (strcmp(path, "/") == 0)
        return true;
    for (const char *q = path; *q; q++) /* one slash between components, none at the end */
        if (*q == '/' && (q[1] == '/' || q[1] == 0))
            return false;
    struct comps c;
    split_path(path, &c);
    if (c.n == 0 || c.len[c.n - 1] == (size_t)-1)
        return false;
    for (int i = 1; i < c.n; i++)
        if (!name_chars(c.s[i], c.len[i], true))
            return false;
    if (comp_is(&c, 0, "access"))
        return c.n == 1 || ((comp_is(&c, 1, "groups") || comp_is(&c, 1, "realm")) && c.n <= 3);
    if (comp_is(&c, 0, "nodes") || comp_is(&c, 0, "storage"))
        return c.n <= 2;
    if (comp_is(&c, 0, "pool"))
        return c.n <= 4;
    if (comp_is(&c, 0, "mapping"))
        return c.n <= 3;
    if (comp_is(&c, 0, "vms")) {
        if (c.n == 1)
            return true;
        if (c.n != 2 || c.len[1] < 3 || c.s[1][0] == '0')
            return false;
        for (size_t i = 0; i < c.len[1]; i++)
            if (c.s[1][i] < '0' || c.s[1][i] > '9')
                return false;
        return true;
    }
    if (comp_is(&c, 0, "sdn")) {
        static const char *const leaves[] = {"controllers",  "dns",        "fabrics", "ipams",
                                             "prefix-lists", "route-maps", NULL};
        if (c.n == 1)
            return true;
        for (int i = 0; leaves[i]; i++)
            if (comp_is(&c, 1, leaves[i]))
                return c.n == 2 || (c.n == 3 && name_chars(c.s[2], c.len[2],
                                                           strcmp(leaves[i], "controllers") == 0));
        if (comp_is(&c, 1, "zones")) {
            if (c.n <= 4)
                return true;
            if (c.n != 5 || c.len[4] > 4 || c.s[4][0] == '0')
                return false;
            for (size_t i = 0; i < c.len[4]; i++)
                if (c.s[4][i] < '0' || c.s[4][i] > '9')
                    return false;
            return true;
        }
        return false;
    }
    return false;
}

/* ---- roles of an id on a path (AccessControl `roles`) ----------------- */

struct hit {
    const char *role;
    bool prop;
};
struct hits {
    struct hit *h;
    int n;
};

static void hits_add(struct hits *hs, const char *role, bool prop)
{
    for (int i = 0; i < hs->n; i++)
        if (strcmp(hs->h[i].role, role) == 0) {
            hs->h[i].prop = hs->h[i].prop || prop; /* a hash: the last set wins; either is fine */
            return;
        }
    hs->h = xrealloc(hs->h, (size_t)(hs->n + 1) * sizeof *hs->h);
    hs->h[hs->n++] = (struct hit){role, prop};
}

static const struct hit *hits_get(const struct hits *hs, const char *role)
{
    for (int i = 0; i < hs->n; i++)
        if (strcmp(hs->h[i].role, role) == 0)
            return &hs->h[i];
    return NULL;
}

/* Is e's path the first `depth` components of c? */
static bool entry_on(const struct acl_entry *e, const struct comps *c, int *depth)
{
    struct comps ec;
    split_path(e->path, &ec);
    if (ec.n > c->n)
        return false;
    for (int i = 0; i < ec.n; i++)
        if (ec.len[i] != c->len[i] || strncmp(ec.s[i], c->s[i], ec.len[i]) != 0)
            return false;
    *depth = ec.n;
    return true;
}

static const struct group *group_find(const struct world *w, const char *name)
{
    for (int i = 0; i < w->ngroups; i++)
        if (strcmp(w->groups[i].name, name) == 0)
            return &w->groups[i];
    return NULL;
}

static bool group_has(const struct group *g, const char *user)
{
    for (int i = 0; g && i < g->nmembers; i++)
        if (strcmp(g->members[i], user) == 0)
            return true;
    return false;
}

/* Does entry e name id, a token's only as itself, a user's as itself or
 * through a group of which it is a member? *group: through a group. */
static bool entry_names(const struct world *w, const struct acl_entry *e, const char *id,
                        bool token, bool *group)
{
    *group = e->type == PERM_GROUP;
    if (e->type == PERM_GROUP)
        return !token && group_has(group_find(w, e->ugid), id);
    return (e->type == PERM_TOKEN) == token && strcmp(e->ugid, id) == 0;
}

/* The roles of id on path, as `roles` walks "/", "/a", "/a/b", ...: at
 * each level the entries that count (all on the path itself, a parent's
 * when they propagate) overwrite the set, the id's own entries there
 * (a token's, or a user's) and else its groups' (a user's own always
 * override its groups'); what the deepest such level gave is left. */
static void roles_of(const struct world *w, const char *id, const char *path, struct hits *out)
{
    struct comps c;
    split_path(path, &c);
    bool token = strchr(id, '!') != NULL;
    int own = -1, grp = -1; /* the deepest level with the id's own entries, its groups' */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < w->nacl; i++) {
            const struct acl_entry *e = &w->acl[i];
            int d;
            bool group;
            if (!entry_names(w, e, id, token, &group) || !entry_on(e, &c, &d) ||
                (d != c.n && !e->prop))
                continue;
            if (pass == 0 && group && d > grp)
                grp = d;
            else if (pass == 0 && !group && d > own)
                own = d;
            else if (pass == 1 && (group ? grp > own && d == grp : own >= grp && d == own))
                hits_add(out, e->role, e->prop);
        }
    const struct hit *na = hits_get(out, "NoAccess");
    if (na) {
        struct hit keep = *na;
        out->n = 1;
        out->h[0] = keep;
    }
}

static const struct role *role_find(const struct world *w, const char *name)
{
    for (int i = 0; i < w->nroles; i++)
        if (strcmp(w->roles[i].name, name) == 0)
            return &w->roles[i];
    return NULL;
}

const char *perm_pool_of(json_t *pools, long long vmid)
{
    const char *id;
    json_t *p;
    json_object_foreach(pools, id, p)
    {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(p, "vms"), i, v)
        {
            if (json_integer_value(v) == vmid)
                return id;
        }
    }
    return NULL;
}

/* compile_acl_path without the token intersection: the id's own roles
 * (and its VM's pool's) as privileges */
static perm_set own_privs(const struct sim_perm *p, const struct world *w, json_t *pools,
                          const char *id, const char *path, perm_set *prop)
{
    struct hits hs = {0};
    roles_of(w, id, path, &hs);
    struct comps c;
    split_path(path, &c);
    if (pools && c.n == 2 && comp_is(&c, 0, "vms") && !hits_get(&hs, "NoAccess")) {
        char num[32];
        snprintf(num, sizeof num, "%.*s", (int)(c.len[1] < 20 ? c.len[1] : 20), c.s[1]);
        char *end;
        long long vmid = strtoll(num, &end, 10);
        const char *pool = *end ? NULL : perm_pool_of(pools, vmid);
        if (pool) {
            char *pp = xasprintf("/pool/%s", pool);
            struct hits ph = {0};
            roles_of(w, id, pp, &ph);
            free(pp);
            if (hits_get(&ph, "NoAccess")) { /* a pool's NoAccess trumps the VM's own roles */
                hs.n = 0;
                hits_add(&hs, "NoAccess", false);
            } else {
                for (int i = 0; i < ph.n; i++)
                    if (!hits_get(&hs, ph.h[i].role))
                        hits_add(&hs, ph.h[i].role, false);
            }
            free(ph.h);
        }
    }
    perm_set privs = 0;
    *prop = 0;
    for (int i = 0; i < hs.n; i++) {
        const struct role *r = role_find(w, hs.h[i].role);
        if (!r)
            continue;
        privs |= r->privs;
        if (hs.h[i].prop)
            *prop |= r->privs;
    }
    free(hs.h);
    privs &= p->valid;
    *prop &= privs;
    return privs;
}

perm_set perm_privs(const struct sim_perm *p, int w, json_t *pools, const char *authid,
                    const char *path, perm_set *prop)
{
    *prop = 0;
    if (strcmp(authid, "root@pam") == 0) {
        *prop = p->valid;
        return p->valid;
    }
    if (!path || w < 0 || w >= p->nworlds)
        return 0;
    const struct world *wd = &p->w[w];
    const char *bang = strchr(authid, '!');
    if (!bang)
        return strchr(authid, '@') ? own_privs(p, wd, pools, authid, path, prop) : 0;
    const struct tok *t = tok_find(p, authid);
    if (!t)
        return 0;
    char owner[PERM_ID_MAX];
    snprintf(owner, sizeof owner, "%.*s", (int)(bang - authid), authid);
    perm_set uprop, user = perm_privs(p, w, pools, owner, path, &uprop);
    if (!t->privsep) {
        *prop = uprop;
        return user;
    }
    perm_set own = own_privs(p, wd, pools, authid, path, prop);
    if (strcmp(owner, "root@pam") != 0) { /* intersected with the user's */
        own &= user;
        *prop &= own & uprop;
    }
    return own;
}

json_t *perm_set_json(const struct sim_perm *p, perm_set privs, perm_set prop)
{
    json_t *o = json_object();
    for (int i = 0; i < NPRIVS; i++) {
        perm_set bit = (perm_set)1 << i;
        if (privs & bit & p->valid)
            json_object_set_new(o, priv_names[i], json_integer(prop & bit ? 1 : 0));
    }
    return o;
}

bool perm_open(const struct sim_perm *p, int w)
{
    return w < 0 || w >= p->nworlds || p->w[w].nacl == 0;
}

/* ---- ACL entries ----------------------------------------------------- */

static const char *const ug_names[] = {
    [PERM_USER] = "user", [PERM_GROUP] = "group", [PERM_TOKEN] = "token"};

/* Every entry of this type and ugid (NULL: any) and role (NULL: any) out,
 * as delete_group_acl does (and a role's entries go when user.cfg is read
 * again after the role was deleted). How many there were. */
static int acl_remove(struct world *w, enum perm_ug type, const char *ugid, const char *role)
{
    int k = 0, n = w->nacl;
    for (int i = 0; i < n; i++) {
        struct acl_entry *e = &w->acl[i];
        if ((!ugid || (e->type == type && strcmp(e->ugid, ugid) == 0)) &&
            (!role || strcmp(e->role, role) == 0)) {
            free(e->path);
            free(e->ugid);
            continue;
        }
        w->acl[k++] = *e;
    }
    w->nacl = k;
    return n - k;
}

/* iterate_acl_tree's order: depth first, children sorted by name */
static int path_cmp(const char *a, const char *b)
{
    struct comps ca, cb;
    split_path(a, &ca);
    split_path(b, &cb);
    for (int i = 0; i < ca.n && i < cb.n; i++) {
        size_t l = ca.len[i] < cb.len[i] ? ca.len[i] : cb.len[i];
        int r = strncmp(ca.s[i], cb.s[i], l);
        if (r)
            return r;
        if (ca.len[i] != cb.len[i])
            return ca.len[i] < cb.len[i] ? -1 : 1;
    }
    return ca.n - cb.n;
}

static int entry_cmp(const void *x, const void *y)
{
    const struct acl_entry *a = x, *b = y;
    int r = path_cmp(a->path, b->path);
    if (r)
        return r;
    if (a->type != b->type) /* users, groups, tokens */
        return a->type < b->type ? -1 : 1;
    r = strcmp(a->ugid, b->ugid);
    return r ? r : strcmp(a->role, b->role);
}

int perm_acl_set(struct sim_perm *p, int w, const char *path, enum perm_ug type, const char *ugid,
                 const char *role, bool propagate, bool del, char **err)
{
    struct world *wd = &p->w[w];
    if (!role_find(wd, role)) {
        *err = xasprintf("role '%s' does not exist", role);
        return -1;
    }
    for (int i = 0; i < wd->nacl; i++) {
        struct acl_entry *e = &wd->acl[i];
        if (e->type != type || strcmp(e->path, path) || strcmp(e->ugid, ugid) ||
            strcmp(e->role, role))
            continue;
        if (del) {
            free(e->path);
            free(e->ugid);
            wd->acl[i] = wd->acl[--wd->nacl];
        } else {
            e->prop = propagate;
        }
        goto out;
    }
    if (del)
        return 0;
    if (wd->nacl >= PERM_MAX_ACL) {
        *err = xasprintf("too many ACL entries (pvesim keeps %d)", PERM_MAX_ACL);
        return -1;
    }
    wd->acl = xrealloc(wd->acl, (size_t)(wd->nacl + 1) * sizeof *wd->acl);
    struct acl_entry *e = &wd->acl[wd->nacl++];
    e->path = xstrdup(path);
    e->ugid = xstrdup(ugid);
    e->type = type;
    snprintf(e->role, sizeof e->role, "%s", role);
    e->prop = propagate;
out:
    qsort(wd->acl, (size_t)wd->nacl, sizeof *wd->acl, entry_cmp);
    return 0;
}

json_t *perm_acl_list(const struct sim_perm *p, int w)
{
    json_t *a = json_array();
    const struct world *wd = &p->w[w];
    for (int i = 0; i < wd->nacl; i++) {
        const struct acl_entry *e = &wd->acl[i];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s,s:i}", "path", e->path, "type",
                                           ug_names[e->type], "ugid", e->ugid, "roleid", e->role,
                                           "propagate", e->prop ? 1 : 0));
    }
    return a;
}

json_t *perm_acl_paths(const struct sim_perm *p, int w)
{
    json_t *a = json_array();
    json_array_append_new(a, json_string("/"));
    const struct world *wd = &p->w[w];
    for (int i = 0; i < wd->nacl; i++) {
        struct comps c;
        split_path(wd->acl[i].path, &c);
        for (int d = 1; d <= c.n; d++) { /* the entry's path and its parents */
            char *pp = xasprintf("/%.*s", (int)(c.s[d - 1] + c.len[d - 1] - c.s[0]), c.s[0]);
            bool have = false;
            for (size_t k = 0; k < json_array_size(a) && !have; k++)
                have = strcmp(json_string_value(json_array_get(a, k)), pp) == 0;
            if (!have)
                json_array_append_new(a, json_string(pp));
            free(pp);
        }
    }
    return a;
}

/* ---- roles ----------------------------------------------------------- */

bool perm_role_get(const struct sim_perm *p, int w, const char *role, perm_set *privs)
{
    const struct role *r = role_find(&p->w[w], role);
    if (r && privs)
        *privs = r->privs;
    return r != NULL;
}

static int role_cmp(const void *x, const void *y)
{
    return strcmp(((const struct role *)x)->name, ((const struct role *)y)->name);
}

json_t *perm_roles_list(const struct sim_perm *p, int w)
{
    const struct world *wd = &p->w[w];
    struct role *sorted = xmalloc((size_t)wd->nroles * sizeof *sorted);
    memcpy(sorted, wd->roles, (size_t)wd->nroles * sizeof *sorted);
    qsort(sorted, (size_t)wd->nroles, sizeof *sorted, role_cmp);
    json_t *a = json_array();
    for (int i = 0; i < wd->nroles; i++) {
        /* privileges joined sorted, as `join(',', sort keys ...)` */
        const char *names[64];
        int n = 0;
        for (int b = 0; b < NPRIVS; b++)
            if (sorted[i].privs & ((perm_set)1 << b))
                names[n++] = priv_names[b];
        for (int x = 1; x < n; x++) /* insertion sort: at most 48 names */
            for (int y = x; y > 0 && strcmp(names[y - 1], names[y]) > 0; y--) {
                const char *t = names[y];
                names[y] = names[y - 1];
                names[y - 1] = t;
            }
        size_t len = 1;
        for (int x = 0; x < n; x++)
            len += strlen(names[x]) + 1;
        char *privs = xmalloc(len), *o = privs;
        *o = 0;
        for (int x = 0; x < n; x++)
            o += sprintf(o, "%s%s", x ? "," : "", names[x]);
        json_array_append_new(a, json_pack("{s:s,s:s,s:i}", "roleid", sorted[i].name, "privs",
                                           privs, "special", sorted[i].special ? 1 : 0));
        free(privs);
    }
    free(sorted);
    return a;
}

/* split_list: names separated by commas, semicolons or white space */
static int privs_parse(const struct sim_perm *p, const char *list, perm_set *out, char **err)
{
    *out = 0;
    const char *q = list ? list : "";
    while (*q) {
        size_t skip = strspn(q, ",; \t\n\r\f");
        q += skip;
        if (!*q)
            break;
        size_t l = strcspn(q, ",; \t\n\r\f");
        char name[PERM_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)(l < sizeof name - 1 ? l : sizeof name - 1), q);
        perm_set bit = l < sizeof name ? perm_priv_bit(p, name) : 0;
        if (!bit) {
            *err = xasprintf("invalid privilege '%.*s'", (int)(l > 200 ? 200 : l), q);
            return -1;
        }
        *out |= bit;
        q += l;
    }
    return 0;
}

int perm_role_add(struct sim_perm *p, int w, const char *role, const char *privs, char **err)
{
    struct world *wd = &p->w[w];
    if (role_find(wd, role)) {
        *err = xasprintf("role '%s' already exists", role);
        return -1;
    }
    if (strlen(role) >= PERM_NAME_MAX || wd->nroles >= PERM_MAX_ROLES) {
        *err =
            xasprintf("role '%.*s' cannot be kept (pvesim keeps %d roles of up to %d characters)",
                      PERM_NAME_MAX, role, PERM_MAX_ROLES, PERM_NAME_MAX - 1);
        return -1;
    }
    perm_set set;
    if (privs_parse(p, privs, &set, err))
        return -1;
    role_put(wd, role, set, false);
    return 0;
}

int perm_role_update(struct sim_perm *p, int w, const char *role, const char *privs, bool append,
                     char **err)
{
    struct role *r = (struct role *)role_find(&p->w[w], role);
    if (!r) {
        *err = xasprintf("role '%s' does not exist", role);
        return -1;
    }
    perm_set set;
    if (privs_parse(p, privs, &set, err))
        return -1;
    r->privs = append ? r->privs | set : set;
    return 0;
}

int perm_role_del(struct sim_perm *p, int w, const char *role, char **err)
{
    struct world *wd = &p->w[w];
    const struct role *r = role_find(wd, role);
    if (!r) {
        *err = xasprintf("role '%s' does not exist", role);
        return -1;
    }
    int i = (int)(r - wd->roles);
    memmove(&wd->roles[i], &wd->roles[i + 1], (size_t)(wd->nroles - i - 1) * sizeof *wd->roles);
    wd->nroles--;
    acl_remove(wd, PERM_USER, NULL, role);
    return 0;
}

bool perm_role_special(const struct sim_perm *p, int w, const char *role)
{
    const struct role *r = role_find(&p->w[w], role);
    return r && r->special;
}

/* ---- groups ----------------------------------------------------------- */

static int group_cmp(const void *x, const void *y)
{
    return strcmp(((const struct group *)x)->name, ((const struct group *)y)->name);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* PVE keeps a comment only when Perl finds it true ("" and "0" are not) */
static char *comment_dup(const char *comment)
{
    return comment && *comment && strcmp(comment, "0") ? xstrdup(comment) : NULL;
}

static void group_member_add(struct group *g, const char *user)
{
    if (group_has(g, user) || g->nmembers >= PERM_MAX_USERS)
        return;
    g->members = xrealloc(g->members, (size_t)(g->nmembers + 1) * sizeof *g->members);
    g->members[g->nmembers++] = xstrdup(user);
    qsort(g->members, (size_t)g->nmembers, sizeof *g->members, str_cmp);
}

bool perm_group_exists(const struct sim_perm *p, int w, const char *group)
{
    return group_find(&p->w[w], group) != NULL;
}

static void group_entry(const struct group *g, json_t *o)
{
    if (g->comment)
        json_object_set_new(o, "comment", json_string(g->comment));
}

json_t *perm_groups_list(const struct sim_perm *p, int w)
{
    const struct world *wd = &p->w[w];
    json_t *a = json_array();
    for (int i = 0; i < wd->ngroups; i++) {
        const struct group *g = &wd->groups[i];
        size_t len = 1;
        for (int m = 0; m < g->nmembers; m++)
            len += strlen(g->members[m]) + 1;
        char *users = xmalloc(len), *o = users;
        *o = 0;
        for (int m = 0; m < g->nmembers; m++)
            o += sprintf(o, "%s%s", m ? "," : "", g->members[m]);
        json_t *e = json_pack("{s:s,s:s}", "groupid", g->name, "users", users);
        free(users);
        group_entry(g, e);
        json_array_append_new(a, e);
    }
    return a;
}

json_t *perm_group_get(const struct sim_perm *p, int w, const char *group)
{
    const struct group *g = group_find(&p->w[w], group);
    if (!g)
        return NULL;
    json_t *members = json_array();
    for (int m = 0; m < g->nmembers; m++)
        json_array_append_new(members, json_string(g->members[m]));
    json_t *o = json_pack("{s:o}", "members", members);
    group_entry(g, o);
    return o;
}

int perm_group_add(struct sim_perm *p, int w, const char *group, const char *comment, char **err)
{
    struct world *wd = &p->w[w];
    if (group_find(wd, group)) {
        *err = xasprintf("group '%s' already exists", group);
        return -1;
    }
    if (strlen(group) >= PERM_NAME_MAX || wd->ngroups >= PERM_MAX_GROUPS) {
        *err =
            xasprintf("group '%.*s' cannot be kept (pvesim keeps %d groups of up to %d characters)",
                      PERM_NAME_MAX, group, PERM_MAX_GROUPS, PERM_NAME_MAX - 1);
        return -1;
    }
    wd->groups = xrealloc(wd->groups, (size_t)(wd->ngroups + 1) * sizeof *wd->groups);
    struct group *g = &wd->groups[wd->ngroups++];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", group);
    g->comment = comment_dup(comment);
    qsort(wd->groups, (size_t)wd->ngroups, sizeof *wd->groups, group_cmp);
    return 0;
}

int perm_group_set_comment(struct sim_perm *p, int w, const char *group, const char *comment,
                           char **err)
{
    struct group *g = (struct group *)group_find(&p->w[w], group);
    if (!g) {
        *err = xasprintf("group '%s' does not exist", group);
        return -1;
    }
    free(g->comment);
    g->comment = comment_dup(comment);
    return 0;
}

int perm_group_del(struct sim_perm *p, int w, const char *group, char **err)
{
    struct world *wd = &p->w[w];
    const struct group *g = group_find(wd, group);
    if (!g) {
        *err = xasprintf("group '%s' does not exist", group);
        return -1;
    }
    acl_remove(wd, PERM_GROUP, group, NULL);
    int i = (int)(g - wd->groups);
    group_free(&wd->groups[i]);
    memmove(&wd->groups[i], &wd->groups[i + 1], (size_t)(wd->ngroups - i - 1) * sizeof *wd->groups);
    wd->ngroups--;
    return 0;
}

/* ---- start-up options ----------------------------------------------------- */

int perm_opt_role(struct sim_perm *p, const char *spec, char **err)
{
    const char *colon = strchr(spec, ':');
    size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
    if (!colon || !name_chars(spec, nl, true) || nl >= PERM_NAME_MAX) {
        *err = xasprintf("--role '%s': expected NAME:PRIV[,PRIV...], NAME of letters, digits, "
                         "'.', '-', '_'",
                         spec);
        return -1;
    }
    char name[PERM_NAME_MAX];
    snprintf(name, sizeof name, "%.*s", (int)nl, spec);
    if (strncasecmp(name, "PVE", 3) == 0) {
        *err = xasprintf("--role '%s': cannot use role ID starting with the (case-insensitive) "
                         "'PVE' namespace",
                         spec);
        return -1;
    }
    for (int i = 0; i < p->nworlds; i++) {
        char *e = NULL;
        if (perm_role_add(p, i, name, colon + 1, &e)) {
            *err = xasprintf("--role '%s': %s", spec, e);
            free(e);
            return -1;
        }
    }
    return 0;
}

/* A user id a group may have as a member: user@realm, no token's */
static bool member_ok(const char *u, size_t n)
{
    const char *at = memchr(u, '@', n);
    return n > 0 && n < PERM_ID_MAX && at && at != u && at + 1 < u + n && !memchr(u, '!', n) &&
           !memchr(u, ':', n) && !memchr(u, ' ', n);
}

int perm_opt_group(struct sim_perm *p, const char *spec, char **err)
{
    const char *colon = strchr(spec, ':');
    size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
    if (!name_chars(spec, nl, true) || nl >= PERM_NAME_MAX) {
        *err = xasprintf("--group '%s': expected NAME[:USER[,USER...]], NAME of letters, digits, "
                         "'.', '-', '_'",
                         spec);
        return -1;
    }
    char name[PERM_NAME_MAX];
    snprintf(name, sizeof name, "%.*s", (int)nl, spec);
    for (const char *q = colon ? colon + 1 : ""; *q;) {
        size_t l = strcspn(q, ",");
        if (l && !member_ok(q, l)) {
            *err = xasprintf("--group '%s': '%.*s' is no user id (user@realm)", spec, (int)l, q);
            return -1;
        }
        q += l + (q[l] == ',');
    }
    for (int i = 0; i < p->nworlds; i++) {
        struct world *wd = &p->w[i];
        char *e = NULL;
        if (!group_find(wd, name) && perm_group_add(p, i, name, NULL, &e)) {
            *err = xasprintf("--group '%s': %s", spec, e);
            free(e);
            return -1;
        }
        struct group *g = (struct group *)group_find(wd, name);
        for (const char *q = colon ? colon + 1 : ""; *q;) {
            size_t l = strcspn(q, ",");
            if (l) {
                char *u = xstrndup(q, l);
                group_member_add(g, u);
                user_add(p, u, l);
                free(u);
            }
            q += l + (q[l] == ',');
        }
    }
    return 0;
}

int perm_opt_acl(struct sim_perm *p, const char *spec, char **err)
{
    char *copy = xstrdup(spec), *parts[5] = {0};
    int n = 0;
    for (char *q = copy, *tok; n < 5 && (tok = strsep(&q, ":")) != NULL;)
        parts[n++] = tok;
    int rc = -1;
    char *path = NULL;
    if (n < 3 || n > 4 || (n == 4 && strcmp(parts[3], "nopropagate") != 0)) {
        *err = xasprintf("--acl '%s': expected PATH:UGID:ROLE[,ROLE...][:nopropagate]", spec);
        goto out;
    }
    path = perm_normalize_path(parts[0]);
    if (!path || !perm_check_path(path)) {
        *err = xasprintf("--acl '%s': invalid ACL path '%s'", spec, parts[0]);
        goto out;
    }
    const char *ugid = parts[1];
    enum perm_ug type = ugid[0] == '@' ? PERM_GROUP : strchr(ugid, '!') ? PERM_TOKEN : PERM_USER;
    const char *at = strchr(ugid, '@');
    if (type == PERM_GROUP) {
        if (!group_find(&p->w[0], ++ugid)) {
            *err = xasprintf("--acl '%s': no --group '%s'", spec, ugid);
            goto out;
        }
    } else if (strlen(ugid) >= PERM_ID_MAX || !at || at == ugid) {
        *err = xasprintf("--acl '%s': '%s' is no user id (user@realm), token id "
                         "(user@realm!name) or group (@name)",
                         spec, ugid);
        goto out;
    }
    if (type == PERM_TOKEN && !tok_find(p, ugid)) {
        *err = xasprintf("--acl '%s': no --token '%s'", spec, ugid);
        goto out;
    }
    if (type == PERM_USER)
        user_add(p, ugid, strlen(ugid));
    for (char *q = parts[2], *role; (role = strsep(&q, ",")) != NULL;) {
        if (!*role)
            continue;
        for (int i = 0; i < p->nworlds; i++) {
            char *e = NULL;
            if (perm_acl_set(p, i, path, type, ugid, role, n == 3, false, &e)) {
                *err = xasprintf("--acl '%s': %s", spec, e);
                free(e);
                goto out;
            }
        }
    }
    rc = 0;
out:
    free(path);
    free(copy);
    return rc;
}

/* ---- the state file ------------------------------------------------------ */

int perm_nworlds(const struct sim_perm *p)
{
    return p->nworlds;
}

void perm_touch(struct sim_perm *p, int w)
{
    if (w >= 0 && w < p->nworlds)
        p->w[w].kept = true;
}

json_t *perm_world_state(const struct sim_perm *p, int w)
{
    if (w < 0 || w >= p->nworlds || !p->w[w].kept)
        return NULL;
    json_t *all = perm_roles_list(p, w), *custom = json_array(), *r;
    size_t i;
    json_array_foreach(all, i, r)
    {
        if (json_integer_value(json_object_get(r, "special")))
            continue; /* the release's own: made at every start */
        json_object_del(r, "special");
        json_array_append(custom, r);
    }
    json_decref(all);
    json_t *groups = json_array();
    const struct world *wd = &p->w[w];
    for (int g = 0; g < wd->ngroups; g++) {
        json_t *e = perm_group_get(p, w, wd->groups[g].name);
        json_object_set_new(e, "groupid", json_string(wd->groups[g].name));
        json_array_append_new(groups, e);
    }
    return json_pack("{s:o,s:o,s:o}", "roles", custom, "groups", groups, "acl",
                     perm_acl_list(p, w));
}

/* Custom roles out: built-in ones stay, as every start makes them. */
static void roles_clear_custom(struct world *w)
{
    int k = 0;
    for (int i = 0; i < w->nroles; i++)
        if (w->roles[i].special)
            w->roles[k++] = w->roles[i];
    w->nroles = k;
}

/* A saved role's privileges: those the served release knows (a state saved
 * under another --pve-version may name others: dropped, not the role). */
static perm_set privs_known(const struct sim_perm *p, const char *role, const char *list)
{
    perm_set set = 0;
    for (const char *q = list; *q;) {
        size_t l = strcspn(q, ",");
        char name[PERM_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)(l < sizeof name ? l : sizeof name - 1), q);
        perm_set bit = perm_priv_bit(p, name);
        if (!bit && l)
            log_warn("sim", "state: role '%s': privilege '%s' left out (not in this release)", role,
                     name);
        set |= bit;
        q += l + (q[l] == ',');
    }
    return set;
}

static void load_role(struct sim_perm *p, struct world *w, json_t *r)
{
    const char *name = json_string_value(json_object_get(r, "roleid"));
    const char *privs = json_string_value(json_object_get(r, "privs"));
    if (!name || !*name || strlen(name) >= PERM_NAME_MAX || role_find(w, name) ||
        w->nroles >= PERM_MAX_ROLES) {
        log_warn("sim", "state: role '%s' left out", name ? name : "");
        return;
    }
    role_put(w, name, privs_known(p, name, privs ? privs : ""), false);
}

/* A saved entry's propagate: 1 or 0 as GET /access/acl has it (a boolean
 * too); absent, PVE's default: it propagates */
static bool saved_propagate(json_t *e)
{
    json_t *v = json_object_get(e, "propagate");
    if (json_is_boolean(v))
        return json_is_true(v);
    return !json_is_integer(v) || json_integer_value(v) != 0;
}

/* One saved group: its name checked as --group's, its members as users */
static void load_group(struct sim_perm *p, int w, json_t *g)
{
    const char *name = json_string_value(json_object_get(g, "groupid"));
    char *err = NULL;
    if (!name || !name_chars(name, strlen(name), true) ||
        perm_group_add(p, w, name, json_string_value(json_object_get(g, "comment")), &err)) {
        log_warn("sim", "state: group '%s' left out%s%s", name ? name : "?", err ? ": " : "",
                 err ? err : "");
        free(err);
        return;
    }
    struct group *gr = (struct group *)group_find(&p->w[w], name);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(g, "members"), i, m)
    {
        const char *u = json_string_value(m);
        if (!u || !member_ok(u, strlen(u))) {
            log_warn("sim", "state: group '%s': member '%s' left out", name, u ? u : "?");
            continue;
        }
        group_member_add(gr, u);
        user_add(p, u, strlen(u));
    }
}

/* One saved ACL entry, checked as an --acl is (a token no --token gives now
 * cannot be named: PVE drops a deleted token's entries too; nor a group
 * that is not there). */
static void load_entry(struct sim_perm *p, int w, json_t *e)
{
    const char *path = json_string_value(json_object_get(e, "path"));
    const char *ugid = json_string_value(json_object_get(e, "ugid"));
    const char *role = json_string_value(json_object_get(e, "roleid"));
    const char *type = json_string_value(json_object_get(e, "type"));
    bool token = type && strcmp(type, "token") == 0;
    bool user = type && strcmp(type, "user") == 0;
    bool group = type && strcmp(type, "group") == 0;
    char *norm = perm_normalize_path(path);
    const char *at = ugid ? strchr(ugid, '@') : NULL;
    char *err = NULL;
    bool id_ok = group ? ugid && group_find(&p->w[w], ugid)
                       : (token || user) && at && at != ugid && strlen(ugid) < PERM_ID_MAX &&
                             (!token || tok_find(p, ugid));
    if (!norm || !perm_check_path(norm) || !id_ok || !role ||
        perm_acl_set(p, w, norm,
                     group   ? PERM_GROUP
                     : token ? PERM_TOKEN
                             : PERM_USER,
                     ugid, role, saved_propagate(e), false, &err)) {
        log_warn("sim", "state: ACL entry %s:%s:%s left out%s%s", path ? path : "?",
                 ugid ? ugid : "?", role ? role : "?", err ? ": " : "", err ? err : "");
        free(err);
        free(norm);
        return;
    }
    if (user)
        user_add(p, ugid, strlen(ugid)); /* PUT /access/acl may name the user again */
    free(norm);
}

void perm_world_load(struct sim_perm *p, int w, json_t *saved)
{
    if (w < 0 || w >= p->nworlds || !json_is_object(saved))
        return;
    struct world *wd = &p->w[w];
    acl_clear(wd);
    roles_clear_custom(wd);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(saved, "roles"), i, v) load_role(p, wd, v);
    /* a state file from before groups were kept: the flags' groups hold */
    json_t *groups = json_object_get(saved, "groups");
    if (json_is_array(groups)) {
        groups_clear(wd);
        json_array_foreach(groups, i, v) load_group(p, w, v);
    }
    json_array_foreach(json_object_get(saved, "acl"), i, v) load_entry(p, w, v);
    wd->kept = true;
}
