/* Credentials: an API token header, or tickets from a user and password
 * (login, renewal before ticket_renew_s, one re-login after a 401). The
 * ticket, CSRF token and password live only here and in request headers:
 * never in logs or error texts.
 *
 * Logins and renewals are single-flight and sent without a->mu held (a
 * "flight"): a renewal is due long before the ticket expires (PVE's live
 * 2 h), so the one call that renews waits for it while every other call
 * goes on with the current ticket. The renewal is a glance (at most
 * PVE_GLANCE_MS, sent once): the call that sends it has a valid ticket and
 * must not wait out a hung /access/ticket for it; a renewal that failed is
 * tried again later, and the ticket has an hour left; one that timed out
 * is tried again with twice the time (up to the client's timeout), so a
 * server that always takes longer than a glance still renews. Only calls without a
 * valid ticket wait, for the one login under way, and take its result: a
 * login that fails fails them all at once instead of being retried by
 * each in turn.
 *
 * A call with a short bound of its own (a probe, a glance, a look on a
 * node held down: its "short flags") keeps it through a login: it waits
 * for a login under way no longer than its timeout, and a login it sends
 * itself goes with its timeout, once. Libpve has no thread of its own to
 * finish a login after its caller gave up, and a probe must judge a hung
 * node within its bound: a login that needs longer than the probe's own
 * request may take is a failed probe. Such a short login's failure is not
 * shared with the calls without a bound that waited for it: they log in
 * with the full timeout and retries, as ever. */
#include <errno.h>
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
    pthread_cond_destroy(&a->cv);
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

/* A new ticket, as a login answered it. */
struct login_answer {
    char *ticket, *csrf, *who;
    int64_t sent_ms; /* when the login was sent: the ticket is no older */
};

static void answer_clear(struct login_answer *la)
{
    secret_free(&la->ticket);
    secret_free(&la->csrf);
    free(la->who);
    la->who = NULL;
}

/* POST /access/ticket with the password, or with `ticket` to renew it.
 * Called with no lock held: it takes as long as the server does, within
 * the timeout of `shortf` (short flags, 0: the client's, retried per the
 * policy, as its waiters need it); a short one is sent once. */
static int login_send(pve_client *c, const char *ticket, unsigned shortf, struct login_answer *la,
                      struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    json_t *params =
        json_pack("{s:s, s:s}", "username", a->user, "password", ticket ? ticket : a->password);
    json_t *env = NULL;
    unsigned flags = PVE_F_NOAUTH | PVE_F_NORELOGIN | shortf;
    la->sent_ms = mono_ms();
    int rc = pve_call_int(c, "POST", "/access/ticket", params, flags, &env, err);
    json_decref(params);
    atomic_fetch_add(&c->logins, 1);
    if (rc)
        goto out;
    json_t *d = json_object_get(env, "data");
    const char *t = json_string_value(json_object_get(d, "ticket"));
    const char *csrf = json_string_value(json_object_get(d, "CSRFPreventionToken"));
    if (!t || !csrf) {
        rc = PVE_E_AUTH;
        pve_error_set(err, PVE_E_AUTH, "answer without a ticket%s",
                      json_object_get(d, "NeedTFA") ? " (second factor required)" : "");
        goto out;
    }
    la->ticket = xstrdup(t);
    la->csrf = xstrdup(csrf);
    /* Proxmox names the user as it knows it (the realm's spelling) */
    const char *who = json_string_value(json_object_get(d, "username"));
    la->who = who && who[0] ? xstrdup(who) : NULL;
out:
    json_decref(env);
    return rc;
}

/* Does the current ticket still serve, by our clock (from its login's
 * send)? A server that refuses it sooner answers 401: one re-login. */
static bool ticket_valid_locked(const pve_client *c, int64_t now)
{
    const struct pve_auth_state *a = &c->auth;
    return a->ticket && now - a->ticket_ms < c->ticket_lifetime_s * 1000;
}

/* How long after a failed renewal the next is tried: an eighth of the
 * ticket's time left, within 1 s and 60 s (with PVE's 2 h and a renewal
 * at 1 h: every minute, an hour's worth of tries before it expires). */
static int64_t renew_retry_ms(const pve_client *c, int64_t now)
{
    int64_t left = c->auth.ticket_ms + c->ticket_lifetime_s * 1000 - now;
    int64_t d = left / 8;
    return d < 1000 ? 1000 : d > 60000 ? 60000 : d;
}

/* A renewal that failed by a timeout (or an unreachable host, as
 * quick to fail again as before): the next waits twice as long, up to the
 * client's timeout. Its caller waits for it, once a retry pause; the
 * others go on with the ticket meanwhile. */
static void renew_longer(pve_client *c)
{
    long cur = pve_short_ms(c, PVE_CALL_PROBE | PVE_CALL_GLANCE | PVE_F_RENEW);
    long next = cur * 2 < c->timeout_ms ? cur * 2 : c->timeout_ms;
    atomic_store(&c->auth.renew_ms, next > cur ? next : cur);
}

/* A failed login's error, as its callers see it: the call they made
 * failed because the login did, which its message says (a node marked down
 * for a login that hung, or a job that failed on one, names the login and
 * the host it went to, not only curl's words). */
static void name_the_login(struct pve_error *e, bool renew, const char *user)
{
    char m[2 * sizeof e->message + sizeof e->host], on[sizeof e->host + 4] = "";
    if (e->host[0])
        snprintf(on, sizeof on, " on %s", e->host);
    snprintf(m, sizeof m, "%s as %s failed%s: %s", renew ? "ticket renewal" : "login", user, on,
             e->message);
    pve_strlcpy(e->message, m, sizeof e->message);
}

/* One flight: a renewal of the current ticket (renew) or a login with the
 * password, within the timeout of `shortf` (short flags; 0: the client's).
 * A renewal is a glance: its caller has a valid ticket to go on with. One
 * the server refuses is not followed by a login with the password: the 401
 * would come after pveproxy's 3 s delay, past the glance, so it looks like
 * a timeout anyway; a call the server refuses the ticket to gets its 401
 * and logs in then (pve_auth_relogin), with the full timeout. Called with a->mu held and no
 * flight under way; the request goes out without the lock (the others take
 * the current ticket, or wait on a->cv). Installs the new ticket, or after
 * a failed renewal while the ticket still serves, sets when to try again;
 * records the result for the waiters. Returns the result (err filled) with
 * a->mu held again. */
static int flight_locked(pve_client *c, bool renew, unsigned shortf, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    struct login_answer la = {0};
    struct pve_error e;
    char *old = renew ? xstrdup(a->ticket) : NULL;
    if (renew)
        shortf = PVE_CALL_PROBE | PVE_CALL_GLANCE | PVE_F_RENEW;
    a->flying = true;
    a->flying_bound = shortf ? pve_short_ms(c, shortf) : 0;
    pthread_mutex_unlock(&a->mu);
    int rc = login_send(c, old, shortf, &la, &e);
    secret_free(&old);
    pthread_mutex_lock(&a->mu);
    int64_t now = mono_ms();
    if (rc == 0) {
        secret_free(&a->ticket);
        secret_free(&a->csrf);
        a->ticket = la.ticket;
        a->csrf = la.csrf;
        la.ticket = la.csrf = NULL;
        a->ticket_ms = la.sent_ms;
        a->renew_at = la.sent_ms + c->ticket_renew_s * 1000;
        atomic_store(&a->renew_ms, 0);
        a->gen++;
        if (la.who && strcmp(la.who, a->who) != 0) {
            free(a->who);
            a->who = la.who;
            la.who = NULL;
        }
        log_info(PVE_SUB, "%s: %s as %s", c->name, renew ? "renewed the ticket" : "logged in",
                 a->user);
    } else if (ticket_valid_locked(c, now)) {
        int64_t d = renew_retry_ms(c, now);
        a->renew_at = now + d;
        if (renew && rc == PVE_E_NETWORK)
            renew_longer(c);
        log_warn(PVE_SUB,
                 "%s: ticket renewal failed (%s: %s); the ticket serves %lld s more, "
                 "trying again in %lld s within %ld ms",
                 c->name, pve_class_name(e.cls), e.message,
                 (long long)((a->ticket_ms + c->ticket_lifetime_s * 1000 - now) / 1000),
                 (long long)(d / 1000), pve_short_ms(c, shortf));
    }
    if (rc)
        name_the_login(&e, renew, a->user);
    answer_clear(&la);
    a->flying = false;
    a->flights++;
    a->flight_rc = rc;
    a->flight_err = e;
    a->flight_bound = a->flying_bound;
    pthread_cond_broadcast(&a->cv);
    if (err)
        *err = e;
    return rc;
}

/* No valid ticket: join the flight under way (its failure is ours too: a
 * hung /access/ticket is waited out once, not once per caller) or log in.
 * With short flags (shortf), no longer than their timeout: the wait ends
 * at it (the flight goes on for the others), a login of our own is sent
 * with it. Without, a short flight's failure is not ours: its caller's
 * bound cut it off, we log in with the full time. Called and returns with
 * a->mu held. */
static int login_locked(pve_client *c, unsigned shortf, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    long bound = shortf ? pve_short_ms(c, shortf) : 0;
    struct timespec until = deadline_in_ms(bound);
    int64_t mono_deadline = mono_ms() + bound;
    int rc = 0;
    while (rc == 0 && !ticket_valid_locked(c, mono_ms())) {
        if (!a->flying) {
            rc = flight_locked(c, false, shortf, err);
            break;
        }
        /* without a bound, none: a flight is bounded by its requests' timeouts */
        unsigned f = a->flights;
        bool late = false;
        while (a->flights == f && !late) {
            if (bound)
                late = pthread_cond_timedwait(&a->cv, &a->mu, &until) == ETIMEDOUT;
            else
                pthread_cond_wait(&a->cv, &a->mu);
        }
        if (a->flights == f) {
            rc = PVE_E_NETWORK;
            pve_error_set(err, PVE_E_NETWORK,
                          "no ticket within %ld ms: the login under way has not ended", bound);
            break;
        }
        /* cut off by a bound shorter than ours (another caller's, or a
         * renewal's glance) while our time lasts: log in ourselves */
        if (a->flight_rc && a->flight_bound &&
            (!bound || (a->flight_bound < bound && mono_ms() < mono_deadline)))
            continue;
        rc = a->flight_rc;
        if (rc && err)
            *err = a->flight_err;
    }
    return rc;
}

int pve_auth_get(pve_client *c, unsigned shortf, struct pve_creds *out, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    memset(out, 0, sizeof *out);
    if (a->token_hdr) {
        out->auth_hdr = xstrdup(a->token_hdr);
        return 0;
    }
    pthread_mutex_lock(&a->mu);
    int64_t now = mono_ms();
    /* due for renewal and nobody renewing: this call renews (a glance; a
     * failure is not its failure while the ticket serves); the others
     * meanwhile take the ticket below without waiting. Not a call with a
     * short bound of its own (a probe): the renewal's glance would come on
     * top of it, and a renewal is due an hour before the ticket expires */
    if (!shortf && ticket_valid_locked(c, now) && !a->flying && now >= a->renew_at)
        (void)flight_locked(c, true, 0, NULL);
    int rc = login_locked(c, shortf, err);
    if (rc == 0) {
        out->cookie = xasprintf("PVEAuthCookie=%s", a->ticket);
        out->csrf_hdr = xasprintf("CSRFPreventionToken: %s", a->csrf);
        out->gen = a->gen;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int pve_auth_relogin(pve_client *c, unsigned gen, unsigned shortf, struct pve_error *err)
{
    struct pve_auth_state *a = &c->auth;
    if (a->token_hdr)
        return PVE_E_AUTH;
    pthread_mutex_lock(&a->mu);
    if (a->gen == gen) {
        /* the server refused this ticket: nobody uses it any more (a flight
         * under way may bring the next one) */
        secret_free(&a->ticket);
        secret_free(&a->csrf);
    }
    int rc = login_locked(c, shortf, err);
    pthread_mutex_unlock(&a->mu);
    return rc;
}
