/* h_tasks: task list, status, log and stop (pve-api.md §7). The node in the
 * path must be the node named in the UPID, as on a real cluster. Also the
 * cluster-wide list of recent tasks, GET /cluster/tasks. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool upid_parses(const char *u)
{
    /* UPID:node:pid:pstart:starttime:type:id:user: */
    int colons = 0;
    for (const char *p = u; *p; p++)
        colons += *p == ':';
    if (!str_starts(u, "UPID:") || colons != 8 || !str_ends(u, ":"))
        return false;
    const char *f = u + 5;
    size_t nl = strcspn(f, ":");
    if (nl == 0)
        return false;
    f += nl + 1;
    for (int i = 0; i < 3; i++) {
        size_t l = strcspn(f, ":");
        if (l < 8 || l > 9)
            return false;
        for (size_t j = 0; j < l; j++)
            if (!strchr("0123456789ABCDEFabcdef", f[j]))
                return false;
        f += l + 1;
    }
    return true;
}

/* $check_task_user: a task is its user's, and a token's task its token's
 * too (a token sees only its own tasks; a user, its tokens' as well).
 * upid_user: the UPID's user field ("user@realm" or "user@realm!token"). */
static bool own_task(struct sim_call *c, const char *upid_user, size_t n)
{
    const char *me = call_owner(c);
    if (strlen(me) == n && strncmp(me, upid_user, n) == 0)
        return true;
    const char *bang = memchr(upid_user, '!', n);
    return bang && strlen(me) == (size_t)(bang - upid_user) &&
           strncmp(me, upid_user, (size_t)(bang - upid_user)) == 0;
}

/* The UPID's user field (the 8th); the UPID parses (upid_parses) */
static const char *upid_user(const char *upid, size_t *n)
{
    const char *p = upid;
    for (int i = 0; i < 7; i++)
        p = strchr(p, ':') + 1;
    *n = strcspn(p, ":");
    return p;
}

/* Sys.Audit (DELETE: Sys.Modify) on /nodes/<node> for a task not the
 * caller's; false with the call failed (403) */
static bool task_access(struct sim_call *c, const char *upid, const char *priv)
{
    size_t n;
    const char *u = upid_user(upid, &n);
    if (own_task(c, u, n))
        return true;
    char path[96];
    snprintf(path, sizeof path, "/nodes/%s", c->node->name);
    if (call_can(c, path, priv))
        return true;
    call_perm_fail(c, path, priv);
    return false;
}

static struct sim_task *find(struct sim_call *c)
{
    const char *upid = call_str(c, "upid");
    if (!upid || !upid_parses(upid)) {
        call_param_fail(c, "upid", "unable to parse worker upid");
        return NULL;
    }
    struct sim_task *t = sim_task_find(c->s, upid);
    if (!t || t->node != c->node) {
        call_param_fail(c, "upid", "no such task");
        return NULL;
    }
    if (!task_access(c, upid, strcmp(c->verb, "DELETE") == 0 ? "Sys.Modify" : "Sys.Audit"))
        return NULL;
    return t;
}

static json_t *task_entry(struct sim_task *t, bool status_style)
{
    const char *user = t->user;
    char ubuf[128];
    const char *tokenid = NULL;
    const char *bang = strchr(user, '!');
    if (bang && status_style) {
        snprintf(ubuf, sizeof ubuf, "%.*s", (int)(bang - user), user);
        user = ubuf;
        tokenid = bang + 1;
    }
    json_t *e = json_pack("{s:s,s:s,s:i,s:i,s:I,s:s,s:s,s:s}", "upid", t->upid, "node",
                          t->node->name, "pid", t->pid, "pstart", (int)t->pstart, "starttime",
                          (json_int_t)t->starttime, "type", t->type, "id", t->id, "user", user);
    if (tokenid)
        json_object_set_new(e, "tokenid", json_string(tokenid));
    return e;
}

static void h_status(struct sim_call *c)
{
    struct sim_task *t = find(c);
    if (!t)
        return;
    c->data = task_entry(t, true);
    json_object_set_new(c->data, "status", json_string(t->running ? "running" : "stopped"));
    if (!t->running)
        json_object_set_new(c->data, "exitstatus", json_string(t->exitstatus));
}

static void h_log(struct sim_call *c)
{
    const char *upid = call_str(c, "upid");
    if (!upid || !upid_parses(upid)) {
        call_param_fail(c, "upid", "unable to parse worker upid");
        return;
    }
    if (!task_access(c, upid, "Sys.Audit")) /* before the file is looked for */
        return;
    struct sim_task *t = sim_task_find(c->s, upid);
    c->data = json_array();
    if (!t || t->node != c->node) {
        json_array_append_new(
            c->data,
            json_pack("{s:i,s:s}", "n", 1, "t", "unable to open file - No such file or directory"));
        c->extra = json_pack("{s:i}", "total", 1);
        return;
    }
    int64_t start = call_int(c, "start", 0), limit = call_int(c, "limit", 50);
    size_t n = json_array_size(t->log);
    if (n == 0) {
        json_array_append_new(c->data, json_pack("{s:i,s:s}", "n", 1, "t", "no content"));
        c->extra = json_pack("{s:i}", "total", 1);
        return;
    }
    for (size_t i = (size_t)start; i < n && (limit == 0 || (int64_t)(i - (size_t)start) < limit);
         i++)
        json_array_append_new(c->data, json_pack("{s:I,s:O}", "n", (json_int_t)(i + 1), "t",
                                                 json_array_get(t->log, i)));
    c->extra = json_pack("{s:I}", "total", (json_int_t)n);
}

static void h_stop_task(struct sim_call *c)
{
    struct sim_task *t = find(c);
    if (!t)
        return;
    sim_task_stop(c->s, t);
    c->data = json_null();
}

static bool filter(struct sim_call *c, struct sim_task *t)
{
    const char *src = call_str(c, "source");
    if (src && strcmp(src, "active") == 0 && !t->running)
        return false;
    if ((!src || strcmp(src, "archive") == 0) && t->running && src)
        return false;
    /* PVE compares the whole ID: a qmmove's "100-scsi0>101-scsi1" is not
     * VM 100's */
    int64_t vmid = call_int(c, "vmid", 0);
    char vid[24];
    snprintf(vid, sizeof vid, "%lld", (long long)vmid);
    if (vmid && strcmp(t->id, vid) != 0)
        return false;
    const char *tf = call_str(c, "typefilter");
    if (tf && strcmp(tf, t->type) != 0)
        return false;
    const char *uf = call_str(c, "userfilter");
    if (uf && !strstr(t->user, uf))
        return false;
    if (call_bool(c, "errors", false) && (t->running || strcmp(t->exitstatus, "OK") == 0))
        return false;
    int64_t since = call_int(c, "since", 0), until = call_int(c, "until", 0);
    if ((since && t->starttime < since) || (until && t->starttime > until))
        return false;
    return true;
}

static void h_list(struct sim_call *c)
{
    int64_t start = call_int(c, "start", 0), limit = call_int(c, "limit", 50);
    int64_t total = 0;
    char path[96];
    snprintf(path, sizeof path, "/nodes/%s", c->node->name);
    bool auditor = call_can(c, path, "Sys.Audit");
    c->data = json_array();
    for (struct sim_task *t = c->s->tasks; t; t = t->next) {
        if (t->node != c->node || (!t->running && !sim_task_archived(t)) || !filter(c, t) ||
            (!auditor && !own_task(c, t->user, strlen(t->user))))
            continue;
        if (total >= start && (int64_t)json_array_size(c->data) < limit) {
            json_t *e = task_entry(t, false);
            if (t->running) {
                json_object_set_new(e, "status", json_string("RUNNING"));
            } else {
                json_object_set_new(e, "status", json_string(t->exitstatus));
                json_object_set_new(e, "endtime", json_integer(t->endtime));
            }
            json_array_append_new(c->data, e);
        }
        total++;
    }
    c->extra = json_pack("{s:I}", "total", (json_int_t)total);
}

/* ---- GET /cluster/tasks ---------------------------------------------------
 * pve-manager PVE/API2/Cluster.pm `tasks`: PVE::Cluster::get_tasklist (pve-cluster
 * src/PVE/Cluster.pm) appends, node by node, the task list each node of the
 * nodelist last broadcast into pmxcfs's status store. A node broadcasts it
 * whenever a worker starts or ends (pve-common RESTEnvironment.pm fork_worker,
 * $log_task_result) and every 10 s from pvestatd (update_status): what
 * active_workers returns, the list in /var/log/pve/tasks/active. */

/* active_workers: the running tasks and, up to 25 entries in all, the finished
 * ones ($MAX_FINISHED) */
#define CLUSTER_TASKS_MAX 25
/* broadcast_tasklist drops the last entries while the list's JSON is 32 KiB
 * or more (pmxcfs's status limit) */
#define CLUSTER_TASKS_BYTES (32 * 1024)

/* One node's share: its running tasks (newest first, as s->tasks holds them)
 * and its newest finished ones by start time */
struct node_share {
    struct sim_task **run;
    size_t nrun, cap;
    struct sim_task *fin[CLUSTER_TASKS_MAX];
    int nfin;
};

/* Keep t if it is among the CLUSTER_TASKS_MAX latest started: active_workers
 * sorts the finished by starttime, newest first (on a tie, the one seen
 * first: the newer) */
static void share_finished(struct node_share *ns, struct sim_task *t)
{
    int i = ns->nfin;
    if (i == CLUSTER_TASKS_MAX && ns->fin[i - 1]->starttime >= t->starttime)
        return;
    if (i == CLUSTER_TASKS_MAX)
        i--;
    for (; i > 0 && ns->fin[i - 1]->starttime < t->starttime; i--)
        ns->fin[i] = ns->fin[i - 1];
    ns->fin[i] = t;
    if (ns->nfin < CLUSTER_TASKS_MAX)
        ns->nfin++;
}

/* One walk over every task, shared out to the nodes (a fleet's archive holds
 * many thousands). Tasks forgotten with the archive are not listed. */
static struct node_share *share_tasks(struct sim *s)
{
    struct node_share *sh = xcalloc((size_t)s->nnodes, sizeof *sh);
    for (struct sim_task *t = s->tasks; t; t = t->next) {
        struct node_share *ns = &sh[t->node->idx];
        if (!t->running) {
            if (sim_task_archived(t))
                share_finished(ns, t);
            continue;
        }
        if (ns->nrun == ns->cap) {
            ns->cap = ns->cap ? 2 * ns->cap : 16;
            ns->run = xrealloc(ns->run, ns->cap * sizeof *ns->run);
        }
        ns->run[ns->nrun++] = t;
    }
    return sh;
}

/* A task as the active file gives it back and pvestatd broadcasts it
 * (INotify.pm read_active_workers, active_workers' $check_task): the UPID's
 * fields without pstart (always deleted) and pid (deleted once it ended);
 * "saved" as the file's regex reads it, a string: "0" while the task runs,
 * "1" once its line is in the archive; endtime and status once it ended.
 * (For a moment after a start or an end PVE's list differs: a new UPID has no
 * saved yet, an end's broadcast carries saved 1 as a number; the next read of
 * the file, at the next start, end or pvestatd cycle, gives the form here.) */
static json_t *broadcast_entry(const struct sim_task *t)
{
    json_t *e =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:s}", "upid", t->upid, "node", t->node->name, "starttime",
                  (json_int_t)t->starttime, "type", t->type, "id", t->id, "user", t->user);
    if (t->running) {
        json_object_set_new(e, "pid", json_integer(t->pid));
        json_object_set_new(e, "saved", json_string("0"));
        return e;
    }
    json_object_set_new(e, "saved", json_string("1"));
    json_object_set_new(e, "endtime", json_integer(t->endtime));
    json_object_set_new(e, "status", json_string(t->exitstatus));
    return e;
}

static size_t entry_bytes(const json_t *e)
{
    return json_dumpb(e, NULL, 0, JSON_COMPACT);
}

/* The node's broadcast list: active_workers' order (the running first, in
 * the order they started, as the active file appends them; then the finished,
 * newest started first), cut to 25 unless more run, then to 32 KiB. Not kept:
 * PVE's active file forgets a finished task pushed out while many ran, and it
 * does not come back when they end; here the 25 newest are chosen afresh. */
static json_t *node_broadcast(const struct node_share *ns)
{
    json_t *list = json_array();
    size_t bytes = 2; /* "[]" */
    for (size_t i = ns->nrun; i-- > 0;)
        json_array_append_new(list, broadcast_entry(ns->run[i]));
    int nfin = CLUSTER_TASKS_MAX - (int)ns->nrun;
    for (int i = 0; i < nfin && i < ns->nfin; i++)
        json_array_append_new(list, broadcast_entry(ns->fin[i]));
    for (size_t i = 0; i < json_array_size(list); i++)
        bytes += entry_bytes(json_array_get(list, i)) + (i > 0);
    while (bytes >= CLUSTER_TASKS_BYTES) {
        size_t last = json_array_size(list) - 1;
        bytes -= entry_bytes(json_array_get(list, last)) + (last > 0);
        json_array_remove(list, last);
    }
    return list;
}

/* The API's part: a token's task gets user and tokenid apart, and without
 * Sys.Audit on / the caller sees the tasks whose user is the caller. The
 * caller is the token id for a token (PVE/HTTPServer.pm: "the token-ID is the
 * user"), compared with the user part: a token without Sys.Audit on / sees
 * none, not even its own; a user sees its own and its tokens'. */
static void cluster_add(struct sim_call *c, json_t *out, json_t *e, bool all)
{
    const char *user = json_string_value(json_object_get(e, "user"));
    const char *bang = strchr(user, '!');
    if (bang) {
        json_object_set_new(e, "tokenid", json_string(bang + 1));
        json_object_set_new(e, "user", json_stringn(user, (size_t)(bang - user)));
        user = json_string_value(json_object_get(e, "user"));
    }
    if (all || strcmp(user, call_owner(c)) == 0)
        json_array_append(out, e);
}

/* Every node of the cluster is listed, offline and blackholed ones too:
 * pmxcfs keeps a node's last broadcast when it leaves the membership
 * (status.c dfsm_confchg only marks it offline). PVE's list of such a node is
 * frozen as of its going away; pvesim keeps no record of that moment, and
 * lists what the node runs and ran now (a task that ended while its node was
 * away shows ended here, running in PVE). A standalone host's nodelist is
 * itself (get_nodelist). The nodes come in fleet order (PVE's: Perl's hash
 * order, any). */
static void h_cluster_tasks(struct sim_call *c)
{
    struct sim *s = c->s;
    bool all = call_can(c, "/", "Sys.Audit");
    struct node_share *sh = share_tasks(s);
    c->data = json_array();
    for (int i = 0; i < s->nnodes; i++) {
        if (s->o.standalone && &s->nodes[i] != c->node)
            continue;
        json_t *list = node_broadcast(&sh[i]);
        size_t k;
        json_t *e;
        json_array_foreach(list, k, e)
        {
            cluster_add(c, c->data, e, all);
        }
        json_decref(list);
    }
    for (int i = 0; i < s->nnodes; i++)
        free(sh[i].run);
    free(sh);
}

const struct sim_route sim_routes_tasks[] = {
    {"GET", "/nodes/{node}/tasks", h_list},
    {"GET", "/nodes/{node}/tasks/{upid}/status", h_status},
    {"GET", "/nodes/{node}/tasks/{upid}/log", h_log},
    {"DELETE", "/nodes/{node}/tasks/{upid}", h_stop_task},
    {"GET", "/cluster/tasks", h_cluster_tasks},
    {NULL, NULL, NULL},
};
