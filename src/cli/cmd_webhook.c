/* cmd_webhook: proxctl webhook list: each webhook's delivery as the store
 * has it (GET /v1/webhooks, admins): who delivers it, the events waiting
 * and the oldest one's age, the totals and the last failed post.
 * proxctl webhook seek NAME --after ID: move its cursor (back: post again;
 * forward: pass over). proxctl webhook forget NAME: drop the cursor of a
 * webhook no instance has any more. */
#include "cli/cli.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: proxctl webhook list\n"
                    "       proxctl webhook seek NAME --after ID\n"
                    "       proxctl webhook forget NAME\n");
    return EXIT_USAGE;
}

static void print_row(json_t *w)
{
    const char *err = json_string_value(json_object_get(w, "last_error"));
    printf("%-16.16s %-24.24s %10lld %8lld %10.0f %10lld %8lld  %s%s\n", cli_str(w, "name"),
           cli_str(w, "holder"), cli_num(w, "after"), cli_num(w, "behind"),
           json_number_value(json_object_get(w, "oldest_waiting_s")), cli_num(w, "delivered"),
           cli_num(w, "dropped"), cli_str(w, "last_error_at"),
           json_is_true(json_object_get(w, "configured")) ? "" : " (not configured here)");
    if (err && *err)
        printf("%-16s last failure: %.200s\n", "", err);
}

static int hook_list(struct cli *c)
{
    json_t *ans = NULL;
    int rc = cli_request(c, "GET", "/v1/webhooks", NULL, 200, &ans);
    if (rc != EXIT_OK || cli_json_out(c, ans)) {
        json_decref(ans);
        return rc;
    }
    json_t *arr = json_object_get(ans, "webhooks");
    printf("%-16s %-24s %10s %8s %10s %10s %8s  %s\n", "NAME", "HOLDER", "CURSOR", "WAITING",
           "OLDEST(s)", "DELIVERED", "DROPPED", "LAST FAILURE");
    size_t i;
    json_t *w;
    json_array_foreach(arr, i, w) print_row(w);
    if (!json_array_size(arr))
        printf("(no webhooks)\n");
    json_decref(ans);
    return EXIT_OK;
}

static bool name_ok(const char *name)
{
    if (*name && strlen(name) <= 32 && !strpbrk(name, "/?#% "))
        return true;
    fprintf(stderr, "proxctl: NAME: '%.40s' is not a webhook's name\n", name);
    return false;
}

static int hook_forget(struct cli *c, const char *name)
{
    if (!name_ok(name))
        return EXIT_USAGE;
    char path[96];
    snprintf(path, sizeof path, "/v1/webhooks/%s", name);
    json_t *ans = NULL;
    int rc = cli_request(c, "DELETE", path, NULL, 204, &ans);
    json_decref(ans);
    if (rc == EXIT_OK && !c->json)
        printf("webhook %s: cursor forgotten\n", name);
    return rc;
}

static int hook_seek(struct cli *c, const char *name, const char *after_s)
{
    int64_t after;
    if (!name_ok(name))
        return EXIT_USAGE;
    if (!cli_int("--after", after_s, 0, INT64_MAX, &after))
        return EXIT_USAGE;
    char path[96];
    snprintf(path, sizeof path, "/v1/webhooks/%s/seek", name);
    json_t *ans = NULL, *body = json_pack("{s:I}", "after", (json_int_t)after);
    int rc = cli_request(c, "POST", path, body, 200, &ans);
    json_decref(body);
    if (rc == EXIT_OK && !cli_json_out(c, ans))
        printf("webhook %s: cursor moved from %lld to %lld; its events after %lld are posted "
               "next\n",
               name, cli_num(ans, "was"), cli_num(ans, "after"), cli_num(ans, "after"));
    json_decref(ans);
    return rc;
}

int cmd_webhook(struct cli *c, int argc, char **argv)
{
    if (argc == 1 && strcmp(argv[0], "list") == 0)
        return hook_list(c);
    if (argc == 4 && strcmp(argv[0], "seek") == 0 && strcmp(argv[2], "--after") == 0)
        return hook_seek(c, argv[1], argv[3]);
    if (argc == 2 && strcmp(argv[0], "forget") == 0)
        return hook_forget(c, argv[1]);
    return usage();
}
