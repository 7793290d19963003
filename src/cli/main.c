/* proxctl: proxd's command-line client.
 *
 * The server address and token come from, in order: --server/--token,
 * PROXD_URL/PROXD_TOKEN, then the config file (--config, $PROXCTL_CONFIG or
 * ~/.config/proxctl/config) with lines "server = URL" and "token = T". */
#include "cli/cli.h"
#include "common/util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: proxctl [--server URL] [--token TOKEN] [--config FILE] [--json] COMMAND\n"
               "commands:\n"
               "  vm create --os OS --name NAME [--cores N] [--memory 2G] [--disk 40G]\n"
               "            [--ssh-key FILE]... [--owner WHO] [--no-wait]\n"
               "  vm create --from FILE|-     one creation per JSON line, queued, not followed\n"
               "  vm list [--owner WHO] [--state S] [--node N] [--os OS]\n"
               "  vm show VMID\n"
               "  vm start|shutdown|stop|pause|resume|reboot|delete VMID [--no-wait]\n"
               "  vm set VMID [--cores N] [--memory SIZE]     vm resize VMID --disk SIZE\n"
               "  vm reinstall VMID --os OS [--ssh-key FILE]... [--password-file FILE|-]\n"
               "  job list [--state S] [--kind K] [--vmid N] [--owner O] [--limit N]\n"
               "  job show ID | job watch ID | job cancel ID [--no-wait]\n"
               "  node list | os list\n"
               "  node cordon|uncordon NODE | node drain NODE [--no-wait]\n"
               "  ippool list | ippool show NAME\n"
               "  ippool hold NAME ADDRESS [--note TEXT] | ippool unhold NAME ADDRESS\n"
               "  ippool add-range NAME FIRST-LAST [--reserved]\n"
               "  events [--after ID] [--type TYPE] [--follow]\n"
               "  webhook list                each webhook's delivery: holder, waiting, failures\n"
               "  webhook seek NAME --after ID   post again after ID, or pass over up to it\n"
               "  webhook forget NAME         drop the cursor of a webhook no instance has\n"
               "  status [--hours N] [--webhook-age S]\n"
               "                              what needs attention (exit 1 when anything does)\n"
               "environment: PROXD_URL, PROXD_TOKEN, PROXCTL_CONFIG\n"
               "exit codes: 0 ok, 1 operation failed, 2 bad input, 3 not found, 4 not authorised,\n"
               "            5 server or network error, 6 conflict or quota\n");
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

/* Read "key = value" lines; only keys still unset are taken. */
static int read_config(struct cli *c, const char *path, bool must)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (must) {
            fprintf(stderr, "proxctl: cannot read config '%s'\n", path);
            return -1;
        }
        return 0;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        trim(line);
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#' || *p == ';')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            fprintf(stderr, "proxctl: %s:%d: expected 'key = value'\n", path, lineno);
            fclose(f);
            return -1;
        }
        *eq = '\0';
        char *k = p, *v = eq + 1;
        trim(k);
        v += strspn(v, " \t");
        if (strcmp(k, "server") == 0 && !c->server[0])
            snprintf(c->server, sizeof c->server, "%s", v);
        else if (strcmp(k, "token") == 0 && !c->token[0])
            snprintf(c->token, sizeof c->token, "%s", v);
        else if (strcmp(k, "server") != 0 && strcmp(k, "token") != 0) {
            fprintf(stderr, "proxctl: %s:%d: unknown key '%s' (server, token)\n", path, lineno, k);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    struct cli c = {0};
    const char *config = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            c.json = true;
        } else if ((strcmp(a, "--server") == 0 || strcmp(a, "--token") == 0 ||
                    strcmp(a, "--config") == 0) &&
                   i + 1 < argc) {
            const char *v = argv[++i];
            if (a[2] == 's')
                snprintf(c.server, sizeof c.server, "%s", v);
            else if (a[2] == 't')
                snprintf(c.token, sizeof c.token, "%s", v);
            else
                config = v;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "proxctl: unknown option '%s'\n", a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!c.server[0] && getenv("PROXD_URL"))
        snprintf(c.server, sizeof c.server, "%s", getenv("PROXD_URL"));
    if (!c.token[0] && getenv("PROXD_TOKEN"))
        snprintf(c.token, sizeof c.token, "%s", getenv("PROXD_TOKEN"));
    if (!config)
        config = getenv("PROXCTL_CONFIG");
    char home_cfg[1024];
    if (config) {
        if (read_config(&c, config, true))
            return EXIT_USAGE;
    } else if (getenv("HOME")) {
        snprintf(home_cfg, sizeof home_cfg, "%s/.config/proxctl/config", getenv("HOME"));
        if (read_config(&c, home_cfg, false))
            return EXIT_USAGE;
    }
    if (!c.server[0])
        snprintf(c.server, sizeof c.server, "http://127.0.0.1:8080");
    size_t sl = strlen(c.server);
    while (sl && c.server[sl - 1] == '/')
        c.server[--sl] = '\0';
    c.tty = isatty(STDOUT_FILENO);
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    curl_global_init(CURL_GLOBAL_ALL);
    int rc;
    const char *cmd = argv[i];
    if (strcmp(cmd, "vm") == 0)
        rc = cmd_vm(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "job") == 0)
        rc = cmd_job(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "node") == 0)
        rc = cmd_node(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "os") == 0)
        rc = cmd_os(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "ippool") == 0)
        rc = cmd_ippool(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "webhook") == 0)
        rc = cmd_webhook(&c, argc - i - 1, argv + i + 1);
    else if (strcmp(cmd, "status") == 0)
        rc = cmd_status(&c, argc - i, argv + i); /* argv[0]: "status", for getopt */
    else if (strcmp(cmd, "events") == 0)
        rc = cmd_events(&c, argc - i, argv + i); /* argv[0]: "events", for getopt */
    else {
        fprintf(stderr, "proxctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = EXIT_USAGE;
    }
    cli_close(&c);
    curl_global_cleanup();
    return rc;
}
