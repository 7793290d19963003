/* cmd: proxctl's commands over proxd's /v1 API. */
#include "cli/cli.h"
#include "common/buf.h"
#include "common/jsonw.h"
#include "common/xalloc.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A list answer may be an array or an object holding one. */
static json_t *items(json_t *ans, const char *key)
{
    if (json_is_array(ans))
        return ans;
    json_t *a = json_object_get(ans, key);
    if (!a)
        a = json_object_get(ans, "items");
    return json_is_array(a) ? a : NULL;
}

static int usage_vm(void)
{
    fprintf(stderr,
            "usage: proxctl vm create --from FILE|-\n"
            "       proxctl vm create --os OS --name NAME [--cores N] [--memory SIZE] "
            "[--disk SIZE]\n"
            "                         [--ssh-key FILE]... [--owner WHO] [--no-wait|--wait-guest]\n"
            "       proxctl vm list [--owner WHO] [--state S] [--node N] [--os OS]\n"
            "       proxctl vm show VMID\n"
            "       proxctl vm start|stop|pause|resume|reboot|delete VMID [--no-wait]\n"
            "       proxctl vm start|reboot VMID --wait-guest\n"
            "       proxctl vm shutdown VMID [--timeout S] [--force] [--no-wait]\n"
            "       proxctl vm set VMID [--cores N] [--memory SIZE] [--no-wait]\n"
            "       proxctl vm resize VMID --disk SIZE [--no-wait]\n"
            "       proxctl vm reinstall VMID --os OS [--ssh-key FILE]... "
            "[--password-file FILE|-]\n"
            "                         [--no-wait|--wait-guest]\n"
            "       proxctl vm snapshot list VMID [--refresh]\n"
            "       proxctl vm snapshot create VMID NAME [--description TEXT] [--ram]\n"
            "       proxctl vm snapshot delete|rollback VMID NAME [--no-wait]\n"
            "SIZE: 2G, 512M, 40G (memory defaults to MiB, disk to GiB)\n");
    return EXIT_USAGE;
}

static char *read_key(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b = BUF_INIT(16384);
    char tmp[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(tmp, 1, sizeof tmp, f)) > 0)
        ok = buf_add(&b, tmp, n) == BUF_OK;
    fclose(f);
    if (!ok) {
        buf_release(&b);
        return NULL;
    }
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.data[--b.len] = '\0';
    return buf_take(&b);
}

/* --no-wait returns when the job is queued: nothing to wait for after. */
static bool wait_flags_ok(const struct cli *c)
{
    if (c->quiet && c->wait_guest) {
        fprintf(stderr, "proxctl: --no-wait and --wait-guest: one or the other\n");
        return false;
    }
    return true;
}

static int vm_create(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"os", 1, 0, 'o'},    {"name", 1, 0, 'n'},
                                      {"cores", 1, 0, 'c'}, {"memory", 1, 0, 'm'},
                                      {"disk", 1, 0, 'd'},  {"ssh-key", 1, 0, 'k'},
                                      {"owner", 1, 0, 'u'}, {"no-wait", 0, 0, 'W'},
                                      {"from", 1, 0, 'F'},  {"wait-guest", 0, 0, 'G'},
                                      {0, 0, 0, 0}};
    json_t *body = json_object(), *keys = json_array();
    int opt, rc = EXIT_USAGE;
    int64_t v;
    const char *from = NULL;
    bool single = false;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        single = single || (opt != 'F' && opt != 'W');
        switch (opt) {
        case 'F':
            from = optarg;
            break;
        case 'G':
            c->wait_guest = true;
            break;
        case 'o':
            json_object_set_new(body, "os", json_string(optarg));
            break;
        case 'n':
            json_object_set_new(body, "name", json_string(optarg));
            break;
        case 'u':
            json_object_set_new(body, "owner", json_string(optarg));
            break;
        case 'W':
            c->quiet = true;
            break;
        case 'c':
            if (!cli_int("--cores", optarg, 0, INT32_MAX, &v))
                goto out;
            json_object_set_new(body, "cores", json_integer(v));
            break;
        case 'm':
            if (!cli_size_mb(optarg, &v)) {
                fprintf(stderr, "proxctl: --memory: '%s' is not a size like 2G or 2048\n", optarg);
                goto out;
            }
            json_object_set_new(body, "memory_mb", json_integer(v));
            break;
        case 'd':
            if (!cli_size_gb(optarg, &v)) {
                fprintf(stderr, "proxctl: --disk: '%s' is not a size like 40G\n", optarg);
                goto out;
            }
            json_object_set_new(body, "disk_gb", json_integer(v));
            break;
        case 'k': {
            char *k = read_key(optarg);
            if (!k) {
                fprintf(stderr, "proxctl: --ssh-key: cannot read '%s'\n", optarg);
                goto out;
            }
            json_array_append_new(keys, json_string(k));
            free(k);
            break;
        }
        default:
            rc = usage_vm();
            goto out;
        }
    }
    if (from && (single || optind < argc)) {
        fprintf(stderr, "proxctl: vm create --from takes every request from the file: no "
                        "other option with it\n");
        goto out;
    }
    if (!wait_flags_ok(c))
        goto out;
    if (from) {
        rc = cmd_create_from(c, from);
        goto out;
    }
    if (optind < argc) {
        fprintf(stderr, "proxctl: vm create: unexpected '%s'\n", argv[optind]);
        goto out;
    }
    if (!json_object_get(body, "os") || !json_object_get(body, "name")) {
        fprintf(stderr, "proxctl: vm create needs --os and --name\n");
        goto out;
    }
    if (json_array_size(keys))
        json_object_set(body, "ssh_keys", keys);
    json_t *ans = NULL;
    long st = cli_call(c, "POST", "/v1/vms", body, &ans);
    rc = cli_accepted(c, st, ans, NULL);
out:
    json_decref(keys);
    json_decref(body);
    return rc;
}

/* The first address of a record's network, or "-". */
static const char *first_address(json_t *v)
{
    json_t *a = json_array_get(json_object_get(json_object_get(v, "network"), "addresses"), 0);
    const char *s = json_string_value(json_object_get(a, "address"));
    return s ? s : "-";
}

/* The vm list table: each column as wide as its widest value (a name,
 * owner or node cut to a fixed width made two owners look alike). */
enum { VM_COLS = 11 };
static const char *const vm_heads[VM_COLS] = {
    "VMID", "NAME", "OS", "OWNER", "NODE", "STATE", "POWER", "CORES", "MEMORY", "DISK", "ADDRESS"};

/* A text cell: whole when it fits, else cut on a character boundary and
 * marked "..." (snprintf's cut could split a UTF-8 character in two). */
static void text_cell(char cell[160], const char *s)
{
    size_t n = strlen(s);
    if (n < 160) {
        memcpy(cell, s, n + 1);
        return;
    }
    size_t keep = jsonw_utf8_fit(s, n, 160 - 4);
    memcpy(cell, s, keep);
    memcpy(cell + keep, "...", 4);
}

static void vm_cells(json_t *v, char cells[VM_COLS][160])
{
    snprintf(cells[0], 160, "%lld", cli_num(v, "vmid"));
    text_cell(cells[1], cli_str(v, "name"));
    text_cell(cells[2], cli_str(v, "os"));
    text_cell(cells[3], cli_str(v, "owner"));
    text_cell(cells[4], cli_str(v, "node"));
    text_cell(cells[5], cli_str(v, "state"));
    text_cell(cells[6], cli_str(v, "power"));
    snprintf(cells[7], 160, "%lld", cli_num(v, "cores"));
    snprintf(cells[8], 160, "%lldM", cli_num(v, "memory_mb"));
    snprintf(cells[9], 160, "%lldG", cli_num(v, "disk_gb"));
    text_cell(cells[10], first_address(v));
}

static void vm_line(char cells[VM_COLS][160], const int *w)
{
    for (int i = 0; i < VM_COLS; i++) {
        bool num = i >= 7 && i <= 9; /* cores, memory, disk: right-aligned */
        if (i == VM_COLS - 1)
            printf("%s\n", cells[i]);
        else
            printf(num ? "%*s " : "%-*s ", w[i], cells[i]);
    }
}

static void vm_table(json_t *all)
{
    int w[VM_COLS];
    char cells[VM_COLS][160];
    for (int i = 0; i < VM_COLS; i++)
        w[i] = (int)strlen(vm_heads[i]);
    size_t n;
    json_t *v;
    json_array_foreach(all, n, v)
    {
        vm_cells(v, cells);
        for (int i = 0; i < VM_COLS; i++)
            if ((int)strlen(cells[i]) > w[i])
                w[i] = (int)strlen(cells[i]);
    }
    for (int i = 0; i < VM_COLS; i++)
        snprintf(cells[i], 160, "%s", vm_heads[i]);
    vm_line(cells, w);
    json_array_foreach(all, n, v)
    {
        vm_cells(v, cells);
        vm_line(cells, w);
    }
}

/* vm show: the network block, one line per address. */
static void net_show(json_t *v)
{
    json_t *n = json_object_get(v, "network");
    if (!json_is_object(n))
        return;
    printf("%-11s %s on %s", "mac", cli_str(n, "mac"), cli_str(n, "bridge"));
    if (cli_num(n, "vlan"))
        printf(" vlan %lld", cli_num(n, "vlan"));
    printf("\n");
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(n, "addresses"), i, a)
    {
        printf("%-11s %s/%lld", "address", cli_str(a, "address"), cli_num(a, "prefix"));
        if (json_is_string(json_object_get(a, "gateway")))
            printf(" gw %s", cli_str(a, "gateway"));
        if (json_is_string(json_object_get(a, "pool")))
            printf(" (pool %s)", cli_str(a, "pool"));
        printf("\n");
    }
    printf("%-11s %s\n", "confirmed",
           json_is_true(json_object_get(n, "confirmed")) ? cli_str(n, "seen_at") : "no");
}

#define VM_LIST_MAX 100000 /* records a listing shows at the most */

static int vm_list(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"owner", 1, 0, 'u'},
                                      {"state", 1, 0, 's'},
                                      {"node", 1, 0, 'n'},
                                      {"os", 1, 0, 'o'},
                                      {0, 0, 0, 0}};
    struct buf q = BUF_INIT(2048);
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        const char *k = opt == 'u' ? "owner" : opt == 's' ? "state" : opt == 'n' ? "node" : "os";
        if (opt == '?') {
            buf_release(&q);
            return usage_vm();
        }
        if (!cli_query_add(&q, k, optarg)) {
            buf_release(&q);
            return EXIT_USAGE;
        }
    }
    json_t *all = json_array();
    char first[2200];
    snprintf(first, sizeof first, "/v1/vms?limit=100%s", buf_str(&q));
    int rc = cli_pages(c, first, "vms", "after", VM_LIST_MAX, all);
    buf_release(&q);
    if (rc == EXIT_OK) {
        if (c->json)
            cli_print_json(all);
        else
            vm_table(all);
    }
    json_decref(all);
    return rc;
}

static int vm_show(struct cli *c, const char *vmid)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/vms/%s", vmid);
    json_t *v = NULL;
    int rc = cli_request(c, "GET", path, NULL, 200, &v);
    if (rc == EXIT_OK && !cli_json_out(c, v)) {
        const char *keys[] = {"vmid",        "name",       "os",         "owner",     "node",
                              "node_status", "node_error", "state",      "power",     "cores",
                              "memory_mb",   "disk_gb",    "created_at", "updated_at"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            json_t *x = json_object_get(v, keys[i]);
            if (json_is_string(x))
                printf("%-11s %s\n", keys[i], json_string_value(x));
            else if (x && !json_is_null(x))
                printf("%-11s %lld\n", keys[i], (long long)json_number_value(x));
        }
        net_show(v);
        json_t *g = json_object_get(v, "guest");
        if (json_is_object(g)) { /* a running VM's last start: is its guest up? */
            const char *d = json_string_value(json_object_get(g, "detail"));
            printf("%-11s %s (%s job %s)%s%s\n", "guest", cli_str(g, "state"), cli_str(g, "kind"),
                   cli_str(g, "job"), d && *d ? ": " : "", d && *d ? d : "");
        }
        if (strcmp(cli_str(v, "node_status"), "down") == 0)
            printf("note        its node is down: power and state are as last known, and\n"
                   "            actions are refused until the node answers again\n");
        json_t *p = json_object_get(v, "pending");
        if (json_object_size(p)) {
            char *s = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
            printf("%-11s %s (applies at the next reboot or stop)\n", "pending", s);
            free(s);
        }
    }
    json_decref(v);
    return rc;
}

/* The one VMID of a command, after its options (getopt moved them first):
 * a path segment of its own, so a number. Another argument is refused:
 * "vm delete 101 102" deleted 101 and said nothing of 102. NULL when
 * refused (said). */
static const char *one_vmid(int argc, char **argv)
{
    int64_t v;
    if (optind != argc - 1) {
        if (optind < argc - 1)
            fprintf(stderr, "proxctl: one VMID at a time: unexpected '%s'\n", argv[optind + 1]);
        else
            fprintf(stderr, "proxctl: a VMID is required\n");
        return NULL;
    }
    return cli_int("VMID", argv[optind], 1, 999999999, &v) ? argv[optind] : NULL;
}

static int vm_op(struct cli *c, const char *op, int argc, char **argv)
{
    static const struct option o[] = {{"timeout", 1, 0, 't'},    {"force", 0, 0, 'f'},
                                      {"cores", 1, 0, 'c'},      {"memory", 1, 0, 'm'},
                                      {"disk", 1, 0, 'd'},       {"no-wait", 0, 0, 'W'},
                                      {"wait-guest", 0, 0, 'G'}, {0, 0, 0, 0}};
    json_t *body = json_object();
    int opt, rc = EXIT_USAGE;
    int64_t v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        switch (opt) {
        case 't': /* seconds: "5m" was 5 */
            if (!cli_int("--timeout", optarg, 0, INT32_MAX, &v))
                goto out;
            json_object_set_new(body, "timeout", json_integer(v));
            break;
        case 'f':
            json_object_set_new(body, "force", json_true());
            break;
        case 'c':
            if (!cli_int("--cores", optarg, 0, INT32_MAX, &v))
                goto out;
            json_object_set_new(body, "cores", json_integer(v));
            break;
        case 'W':
            c->quiet = true;
            break;
        case 'G':
            if (strcmp(op, "start") != 0 && strcmp(op, "reboot") != 0) {
                fprintf(stderr, "proxctl: --wait-guest is for vm create, start, reboot and "
                                "reinstall\n");
                goto out;
            }
            c->wait_guest = true;
            break;
        case 'm':
            if (!cli_size_mb(optarg, &v)) {
                fprintf(stderr, "proxctl: --memory: '%s' is not a size like 4G\n", optarg);
                goto out;
            }
            json_object_set_new(body, "memory_mb", json_integer(v));
            break;
        case 'd':
            if (!cli_size_gb(optarg, &v)) {
                fprintf(stderr, "proxctl: --disk: '%s' is not a size like 50G\n", optarg);
                goto out;
            }
            json_object_set_new(body, "disk_gb", json_integer(v));
            break;
        default:
            rc = usage_vm();
            goto out;
        }
    }
    const char *vmid = one_vmid(argc, argv);
    if (!vmid || !wait_flags_ok(c))
        goto out;
    char path[128];
    const char *method = "POST";
    if (strcmp(op, "delete") == 0) {
        method = "DELETE";
        snprintf(path, sizeof path, "/v1/vms/%s", vmid);
    } else if (strcmp(op, "set") == 0) {
        method = "PATCH";
        snprintf(path, sizeof path, "/v1/vms/%s", vmid);
    } else {
        snprintf(path, sizeof path, "/v1/vms/%s/%s", vmid, op);
    }
    json_t *ans = NULL;
    long st = cli_call(c, method, path, json_object_size(body) ? body : NULL, &ans);
    rc = cli_accepted(c, st, ans, NULL);
out:
    json_decref(body);
    return rc;
}

/* vm reinstall VMID --os OS [--ssh-key FILE]... [--password-file FILE|-]:
 * the password is read from a file (or stdin), never from the command line
 * where other users' `ps` would show it. */
static int vm_reinstall(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {
        {"os", 1, 0, 'o'},      {"ssh-key", 1, 0, 'k'},    {"password-file", 1, 0, 'p'},
        {"no-wait", 0, 0, 'W'}, {"wait-guest", 0, 0, 'G'}, {0, 0, 0, 0}};
    json_t *body = json_object(), *keys = json_array();
    int opt, rc = EXIT_USAGE;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        char *k;
        switch (opt) {
        case 'o':
            json_object_set_new(body, "os", json_string(optarg));
            break;
        case 'G':
            c->wait_guest = true;
            break;
        case 'W':
            c->quiet = true;
            break;
        case 'k':
        case 'p':
            k = read_key(strcmp(optarg, "-") == 0 ? "/dev/stdin" : optarg);
            if (!k) {
                fprintf(stderr, "proxctl: --%s: cannot read '%s'\n",
                        opt == 'k' ? "ssh-key" : "password-file", optarg);
                goto out;
            }
            if (opt == 'k')
                json_array_append_new(keys, json_string(k));
            else
                json_object_set_new(body, "password", json_string(k));
            free(k);
            break;
        default:
            rc = usage_vm();
            goto out;
        }
    }
    const char *vmid = one_vmid(argc, argv);
    if (!vmid || !wait_flags_ok(c))
        goto out;
    if (!json_object_get(body, "os")) {
        fprintf(stderr, "proxctl: vm reinstall: --os is required\n");
        goto out;
    }
    if (json_array_size(keys))
        json_object_set(body, "ssh_keys", keys);
    char path[128];
    snprintf(path, sizeof path, "/v1/vms/%s/reinstall", vmid);
    json_t *ans = NULL;
    long st = cli_call(c, "POST", path, body, &ans);
    rc = cli_accepted(c, st, ans, NULL);
out:
    json_decref(body);
    json_decref(keys);
    return rc;
}

int cmd_vm(struct cli *c, int argc, char **argv)
{
    if (argc < 1)
        return usage_vm();
    const char *sub = argv[0];
    if (strcmp(sub, "create") == 0)
        return vm_create(c, argc, argv);
    if (strcmp(sub, "list") == 0)
        return vm_list(c, argc, argv);
    if (strcmp(sub, "show") == 0 && argc == 2)
        return vm_show(c, argv[1]);
    if (strcmp(sub, "snapshot") == 0)
        return cmd_snapshot(c, argc - 1, argv + 1);
    if (strcmp(sub, "reinstall") == 0)
        return vm_reinstall(c, argc, argv);
    static const char *const ops[] = {"start",  "shutdown", "stop",   "pause", "resume",
                                      "reboot", "set",      "resize", "delete"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (strcmp(sub, ops[i]) == 0)
            return vm_op(c, sub, argc, argv);
    return usage_vm();
}

/* "[#####-----]" for used of total. */
static void capbar(long long used, long long total, char *out, size_t len)
{
    int w = 10, full = total > 0 ? (int)(used * w / total) : 0;
    if (full > w)
        full = w;
    size_t k = 0;
    out[k++] = '[';
    for (int i = 0; i < w && k + 2 < len; i++)
        out[k++] = i < full ? '#' : '-';
    out[k++] = ']';
    out[k] = '\0';
}

int cmd_node(struct cli *c, int argc, char **argv)
{
    if (argc >= 1 && (strcmp(argv[0], "cordon") == 0 || strcmp(argv[0], "uncordon") == 0 ||
                      strcmp(argv[0], "drain") == 0))
        return cmd_node_maint(c, argc, argv);
    if (argc != 1 || strcmp(argv[0], "list") != 0) {
        fprintf(stderr, "usage: proxctl node list | node cordon|uncordon NODE |"
                        " node drain NODE [--no-wait]\n");
        return EXIT_USAGE;
    }
    json_t *ans = NULL;
    int rc = cli_request(c, "GET", "/v1/nodes", NULL, 200, &ans);
    if (rc != EXIT_OK)
        return rc;
    if (cli_json_out(c, ans)) {
        json_decref(ans);
        return EXIT_OK;
    }
    printf("%-8s %-8s %-30s %-30s %4s  %s\n", "NODE", "HEALTH", "MEMORY (GiB)", "STORAGE (GiB)",
           "VMS", "CORDON");
    size_t i;
    json_t *n;
    json_array_foreach(items(ans, "nodes"), i, n)
    {
        json_t *mem = json_object_get(n, "memory_mb"), *dsk = json_object_get(n, "disk_gb");
        long long mt = cli_num(mem, "total") / 1024,
                  mu = (cli_num(mem, "used") + cli_num(mem, "reserved")) / 1024;
        long long dt = cli_num(dsk, "total"), du = cli_num(dsk, "used") + cli_num(dsk, "reserved");
        char mb[16], db[16], ms[64], ds[64];
        capbar(mu, mt, mb, sizeof mb);
        capbar(du, dt, db, sizeof db);
        snprintf(ms, sizeof ms, "%s %lld/%lld", mb, mu, mt);
        snprintf(ds, sizeof ds, "%s %lld/%lld", db, du, dt);
        char cord[96] = "-";
        if (json_is_true(json_object_get(n, "cordoned")))
            snprintf(cord, sizeof cord, "cordoned by %s", cli_str(n, "cordoned_by"));
        printf("%-8s %-8s %-30s %-30s %4lld  %s\n", cli_str(n, "name"), cli_str(n, "health"), ms,
               ds, cli_num(n, "vms"), cord);
        /* a node down: why, under its row (what an operator looks for first) */
        const char *why = json_string_value(json_object_get(n, "last_error"));
        const char *at = json_string_value(json_object_get(n, "probe_at"));
        if (strcmp(cli_str(n, "health"), "down") == 0 && why)
            printf("%-8s why: %s%s%s%s\n", "", why, at ? " (asked again at " : "", at ? at : "",
                   at ? ")" : "");
        /* what proxd's Proxmox credentials lack there (admins see it) */
        json_t *pv = json_object_get(n, "privileges");
        size_t k;
        json_t *m;
        json_array_foreach(json_object_get(pv, "missing"), k, m)
            printf("%-8s lacks: %s on %s (%s)\n", "", cli_str(m, "privilege"), cli_str(m, "path"),
                   cli_str(m, "for"));
        const char *perr = json_string_value(json_object_get(pv, "error"));
        if (perr)
            printf("%-8s privileges not read: %s\n", "", perr);
    }
    json_decref(ans);
    return EXIT_OK;
}

int cmd_os(struct cli *c, int argc, char **argv)
{
    if (argc != 1 || strcmp(argv[0], "list") != 0) {
        fprintf(stderr, "usage: proxctl os list\n");
        return EXIT_USAGE;
    }
    json_t *ans = NULL;
    int rc = cli_request(c, "GET", "/v1/os", NULL, 200, &ans);
    if (rc != EXIT_OK)
        return rc;
    if (!cli_json_out(c, ans)) {
        printf("%-10s %-13s %9s %11s %-6s %s\n", "OS", "RANGE", "USED", "QUARANTINED", "CLONE",
               "NODES");
        size_t i;
        json_t *o;
        json_array_foreach(items(ans, "os"), i, o)
        {
            json_t *r = json_object_get(o, "range");
            /* a quarantined ID is allocated but no VM has it: counted as used, a deleted
             * VM's range looked in use. A proxd without "quarantined" says 0. */
            long long q = cli_num(r, "quarantined");
            char range[32], used[32];
            snprintf(range, sizeof range, "%lld-%lld", cli_num(r, "lo"), cli_num(r, "hi"));
            snprintf(used, sizeof used, "%lld/%lld", cli_num(r, "allocated") - q,
                     cli_num(r, "size"));
            struct buf nodes = BUF_INIT(1024);
            size_t k;
            json_t *nn;
            json_array_foreach(json_object_get(o, "nodes"), k, nn)
                buf_printf(&nodes, "%s%s", k ? "," : "", json_string_value(nn));
            const char *clone = cli_str(o, "clone"); /* "" from a proxd without it */
            printf("%-10s %-13s %9s %11lld %-6s %s\n", cli_str(o, "name"), range, used, q,
                   clone[0] ? clone : "full", buf_str(&nodes));
            buf_release(&nodes);
        }
    }
    json_decref(ans);
    return EXIT_OK;
}
