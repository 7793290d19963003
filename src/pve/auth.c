/* Credentials: an API token header, or tickets from a user and password
 * (login, renewal before ticket_renew_s, one re-login after a 401). The
 * ticket, CSRF token and password live only here and in request headers:
 * never in logs or error texts. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_int.h"

/* Overwrite a secret before freeing it. */
static void secret_free(char **p)
{
    if (*p) {
        volatile char *v = *p;
        while (*v)
            *v++ = '\0';
        free(*p);
        *p = NULL;
    }
}

static char *read_first_line(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    line[strcspn(line, "\r\n")] = '\0';
    char *out = xstrdup(line);
    memset(line, 0, cap);
    free(line);
    return out;
}

int pve_auth_init(pve_client *c, const struct pve_config *cfg, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    pthread_mutex_init(&a->mu, NULL);
    if (cfg->token && cfg->token[0]) {
        /* user@realm!name=secret: the id and secret split at the last '='. */
        const char *eq = strrchr(cfg->token, '=');
        if (!eq || eq == cfg->token || !eq[1] || !strchr(cfg->token, '!') ||
            !strchr(cfg->token, '@')) {
            pve_error_set(err, PVE_E_INVALID, "token must look like user@realm!name=secret");
            return PVE_E_INVALID;
        }
        a->token_hdr = xasprintf("Authorization: PVEAPIToken=%s", cfg->token);
        a->who = xstrndup(cfg->token, (size_t)(eq - cfg->token));
        return 0;
    }
    if (!cfg->user || !cfg->user[0] || !strchr(cfg->user, '@')) {
        pve_error_set(err, PVE_E_INVALID, "a token, or a user (user@realm) and password is needed");
        return PVE_E_INVALID;
    }
    a->user = xstrdup(cfg->user);
    a->who = xstrdup(cfg->user);
    if (cfg->password) {
        a->password = xstrdup(cfg->password);
    } else if (cfg->password_file) {
        a->password = read_first_line(cfg->password_file);
        if (!a->password) {
            pve_error_set(err, PVE_E_AUTH, "cannot read the password file %s", cfg->password_file);
            return PVE_E_AUTH;
        }
    } else {
        pve_error_set(err, PVE_E_INVALID, "user %s has no password or password_file", cfg->user);
        return PVE_E_INVALID;
    }
    return 0;
}

void pve_auth_free(pve_client *c)
{
    struct pve_auth_state *a = &c->auth;
    secret_free(&a->token_hdr);
    secret_free(&a->password);
    secret_free(&a->ticket);
    secret_free(&a->csrf);
    free(a->user);
    a->user = NULL;
    free(a->who);
    a->who = NULL;
    pthread_mutex_destroy(&a->mu);
}

void pve_client_who(pve_client *c, char *out, size_t len)
{
    pthread_mutex_lock(&c->auth.mu);
    snprintf(out, len, "%s", c->auth.who ? c->auth.who : "");
    pthread_mutex_unlock(&c->auth.mu);
}

bool pve_auth_is_ticket(const pve_client *c)
{
    return c->auth.token_hdr == NULL;
}

void pve_creds_clear(struct pve_creds *cr)
{
    secret_free(&cr->auth_hdr);
    secret_free(&cr->cookie);
    secret_free(&cr->csrf_hdr);
}

/* POST /access/ticket with the password, or with the current ticket to
 * renew it. Called with a->mu held. */
static int login_locked(pve_client *c, bool renew, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    json_t *params =
        json_pack("{s:s, s:s}", "username", a->user, "password", renew ? a->ticket : a->password);
    json_t *env = NULL;
    int rc = pve_call_int(c, "POST", "/access/ticket", params, PVE_F_NOAUTH | PVE_F_NORELOGIN, &env,
                          err);
    json_decref(params);
    atomic_fetch_add(&c->logins, 1);
    if (rc)
        goto out;
    json_t *d = json_object_get(env, "data");
    const char *t = json_string_value(json_object_get(d, "ticket"));
    const char *csrf = json_string_value(json_object_get(d, "CSRFPreventionToken"));
    if (!t || !csrf) {
        rc = PVE_E_AUTH;
        pve_error_set(err, PVE_E_AUTH, "login answer without ticket%s",
                      json_object_get(d, "NeedTFA") ? " (second factor required)" : "");
        goto out;
    }
    secret_free(&a->ticket);
    secret_free(&a->csrf);
    a->ticket = xstrdup(t);
    a->csrf = xstrdup(csrf);
    a->ticket_ms = mono_ms();
    a->gen++;
    /* Proxmox names the user as it knows it (the realm's spelling) */
    const char *who = json_string_value(json_object_get(d, "username"));
    if (who && who[0] && strcmp(who, a->who) != 0) {
        free(a->who);
        a->who = xstrdup(who);
    }
    log_info(PVE_SUB, "%s as %s", renew ? "renewed the ticket" : "logged in", a->user);
out:
    json_decref(env);
    return rc;
}

int pve_auth_get(pve_client *c, struct pve_creds *out, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    memset(out, 0, sizeof *out);
    if (a->token_hdr) {
        out->auth_hdr = xstrdup(a->token_hdr);
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    if (!a->ticket) {
        rc = login_locked(c, false, err);
    } else if (mono_ms() - a->ticket_ms >= c->ticket_renew_s * 1000) {
        /* A failed renewal (ticket already expired) falls back to the password. */
        if (login_locked(c, true, NULL) != 0)
            rc = login_locked(c, false, err);
    }
    if (rc == 0) {
        out->cookie = xasprintf("PVEAuthCookie=%s", a->ticket);
        out->csrf_hdr = xasprintf("CSRFPreventionToken: %s", a->csrf);
        out->gen = a->gen;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int pve_auth_relogin(pve_client *c, unsigned gen, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    if (a->token_hdr)
        return PVE_E_AUTH;
    int rc = 0;
    pthread_mutex_lock(&a->mu);
    if (a->gen == gen) /* nobody logged in since that request: do it */
        rc = login_locked(c, false, err);
    pthread_mutex_unlock(&a->mu);
    return rc;
}
