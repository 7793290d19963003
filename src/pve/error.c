/* Error classification and rendering. The class decides retries, so it is
 * derived from PVE's texts where the status alone is ambiguous (a lock
 * timeout and "does not exist" are both plain 500s). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pve/pve_int.h"

static const char *const class_names[] = {
    [PVE_OK] = "ok",
    [PVE_E_LOCK] = "lock",
    [PVE_E_NETWORK] = "network",
    [PVE_E_AUTH] = "auth",
    [PVE_E_NOTFOUND] = "notfound",
    [PVE_E_EXISTS] = "exists",
    [PVE_E_INVALID] = "invalid",
    [PVE_E_PERMISSION] = "permission",
    [PVE_E_TLS] = "tls",
    [PVE_E_TIMEOUT] = "timeout",
    [PVE_E_OTHER] = "other",
};

const char *pve_class_name(enum pve_class c)
{
    if ((unsigned)c < sizeof class_names / sizeof class_names[0])
        return class_names[c];
    return "unknown";
}

void pve_strlcpy(char *dst, const char *src, size_t len)
{
    if (!len)
        return;
    size_t n = strnlen(src, len - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool has(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

static bool is_lock_text(const char *t)
{
    /* "VM 100 is locked (clone)", "can't lock file '...' - got timeout",
     * "cfs-lock 'storage-x' error: got lock request timeout" */
    return has(t, "is locked") || has(t, "can't lock file") || has(t, "got lock request timeout") ||
           (has(t, "lock") && has(t, "got timeout"));
}

enum pve_class pve_classify(long status, const char *text)
{
    if (status == 401)
        return PVE_E_AUTH;
    if (status == 403)
        return PVE_E_PERMISSION;
    /* a relay's failure (pveproxy's AnyEvent::HTTP pseudo statuses: 595
     * connecting, 596 sending or reading the headers, 597 the body, 599
     * other; a reverse proxy's 502, 503, 504) */
    if ((status >= 595 && status <= 599) || (status >= 502 && status <= 504))
        return PVE_E_NETWORK;
    if (status >= 200 && status < 300)
        return PVE_OK;
    if (is_lock_text(text))
        return PVE_E_LOCK;
    if (has(text, "does not exist") || has(text, "no such task") ||
        has(text, "unable to find configuration file"))
        return PVE_E_NOTFOUND;
    if (has(text, "already exists"))
        return PVE_E_EXISTS;
    if (status == 400)
        return PVE_E_INVALID;
    if (status == 404)
        return PVE_E_NOTFOUND;
    return PVE_E_OTHER;
}

void pve_error_clear(struct pve_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
}

void pve_error_set(struct pve_error *err, enum pve_class cls, const char *fmt, ...)
{
    if (!err)
        return;
    err->cls = cls;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static void strip_nl(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/* "name: text; name: text" from PVE's `errors` object. */
static void render_params(json_t *errors, char *out, size_t len)
{
    struct buf b = BUF_INIT(len - 1);
    const char *k;
    json_t *v;
    json_object_foreach(errors, k, v)
    {
        char txt[PVE_MSG_MAX];
        pve_strlcpy(txt, json_is_string(v) ? json_string_value(v) : "?", sizeof txt);
        strip_nl(txt);
        if (b.len)
            buf_adds(&b, "; ");
        buf_printf(&b, "%s: %s", k, txt);
    }
    pve_strlcpy(out, buf_str(&b), len);
    buf_release(&b);
}

static enum pve_class transport_class(const struct pve_resp *rs)
{
    if (rs->tls_failed)
        return PVE_E_TLS;
    switch (rs->cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: /* mostly a reset during the handshake */
        return PVE_E_NETWORK;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CERTPROBLEM:
        return PVE_E_TLS;
    default:
        return PVE_E_OTHER;
    }
}

void pve_error_from_resp(struct pve_error *err, const struct pve_resp *rs, const char *host)
{
    if (!err)
        return;
    err->http_status = (int)rs->status;
    err->maybe_sent = rs->maybe_sent;
    err->closed = rs->closed;
    err->params[0] = '\0';
    pve_strlcpy(err->host, host ? host : "", sizeof err->host);
    if (!rs->status) {
        err->cls = transport_class(rs);
        pve_strlcpy(err->message, rs->curl_msg, sizeof err->message);
        return;
    }
    json_t *m = rs->body ? json_object_get(rs->body, "message") : NULL;
    /* The body's message is complete; the reason phrase is only its first line. */
    pve_strlcpy(err->message, json_is_string(m) ? json_string_value(m) : rs->reason,
                sizeof err->message);
    strip_nl(err->message);
    json_t *errors = rs->body ? json_object_get(rs->body, "errors") : NULL;
    if (json_is_object(errors))
        render_params(errors, err->params, sizeof err->params);
    char both[2 * PVE_MSG_MAX + 2];
    snprintf(both, sizeof both, "%s\n%s", err->message, err->params);
    err->cls = pve_classify(rs->status, both);
}

const char *pve_strerror(const struct pve_error *e, char *buf, size_t len)
{
    if (!e) {
        snprintf(buf, len, "ok");
        return buf;
    }
    char st[16] = "";
    if (e->http_status)
        snprintf(st, sizeof st, " %d", e->http_status);
    if (e->params[0])
        snprintf(buf, len, "%s:%s %s [%s]", pve_class_name(e->cls), st, e->message, e->params);
    else
        snprintf(buf, len, "%s:%s %s", pve_class_name(e->cls), st, e->message);
    return buf;
}

bool pve_error_stale_digest(const struct pve_error *e)
{
    return strstr(e->message, "checksum mis") && strstr(e->message, "by other user");
}
