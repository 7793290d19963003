/* auth: PVE authentication as pveproxy does it (pve-api.md §3): login
 * tickets signed with the node's RSA key, CSRF prevention tokens bound to the
 * user name, and API tokens.
 *
 *   ticket:  PVE:<user>:<8 hex unix time>::<base64 RSA-SHA256 signature>
 *   CSRF:    <8 hex unix time>:<base64 HMAC-SHA256("time:user"), 43 chars>
 *   token:   Authorization: PVEAPIToken=<user>@<realm>!<name>=<uuid>
 *
 * Both ticket and CSRF token are valid from -300 s to +lifetime (7200 s by
 * default). Thread-safe after setup (auth_add_* before serving). */
#ifndef SIM_AUTH_H
#define SIM_AUTH_H

#include <stdbool.h>
#include <stdint.h>

struct auth;

/* key_pem: the ticket signing key (PEM, an RSA private key of 2048 to 4096
 * bits), as the nodes of a cluster share /etc/pve/authkey.key; NULL: a new
 * key is made (0.1 to 1 s of CPU). NULL when key_pem is not such a key. */
struct auth *auth_new(int ticket_lifetime, const char *key_pem);
void auth_free(struct auth *a);
void auth_add_user(struct auth *a, const char *userid, const char *password);
/* "user@realm!name=secret"; returns 0, or -1 when malformed. */
int auth_add_token(struct auth *a, const char *spec);

/* POST /access/ticket. username may carry "@realm" or realm may be given
 * separately; password may also be a valid ticket of the same user (renewal).
 * On success returns 0 and sets *userid, *ticket, *csrf (caller frees). */
int auth_login(struct auth *a, const char *username, const char *realm, const char *password,
               char **userid, char **ticket, char **csrf);

struct auth_who {
    char user[128];    /* user@realm */
    char tokenid[128]; /* user@realm!name, "" unless token auth */
    bool ticket;       /* authenticated by ticket (CSRF applies) */
};

/* Authenticate a request from its Cookie, Authorization and
 * CSRFPreventionToken headers (any may be NULL). `write` is true for
 * non-GET methods. Returns 0 and fills *who, or -1 with *reason set to the
 * 401 reason phrase (static string or caller-freed? always static or from
 * the internal buffer `reason_buf`). */
int auth_check(struct auth *a, const char *cookie, const char *authorization, const char *csrf,
               bool write, struct auth_who *who, char *reason_buf, int reason_len);

/* Whether a request presents an API token: one in its Authorization
 * header and no ticket (which PVE prefers, ignoring the token). */
bool auth_token_presented(const char *cookie, const char *authorization);

/* Make a ticket/CSRF token for `user` at unix time `t` (tests, renewal). */
char *auth_make_ticket(struct auth *a, const char *user, int64_t t);
char *auth_make_csrf(struct auth *a, const char *user, int64_t t);

#endif
