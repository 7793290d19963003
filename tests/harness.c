#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t h_now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t h_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int h_free_port(void)
{
    for (int attempt = 0; attempt < 200; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        socklen_t l = sizeof a;
        getsockname(fd, (struct sockaddr *)&a, &l);
        close(fd);
        int p = ntohs(a.sin_port);
        bool ok = p < 65000;
        for (int k = 1; ok && k <= 8; k++)
            ok = port_free(p + k);
        if (ok)
            return p;
    }
    fail_msg("no free block of ports");
    return 0;
}

/* Simulators still running when a test fails are killed at exit, so that a
 * failing test never leaves processes holding ctest's output pipe. Each
 * keeps the read end of its stdout pipe here (pvesim writes only its port
 * map there, so the pipe never fills). */
static struct {
    pid_t pid;
    int out;
} g_sims[64];

static void kill_leftovers(void)
{
    for (size_t i = 0; i < sizeof g_sims / sizeof *g_sims; i++)
        if (g_sims[i].pid > 0) {
            kill(g_sims[i].pid, SIGKILL);
            waitpid(g_sims[i].pid, NULL, 0);
        }
}

static void track(pid_t pid, int out)
{
    static bool registered;
    if (!registered) {
        atexit(kill_leftovers);
        registered = true;
    }
    for (size_t i = 0; i < sizeof g_sims / sizeof *g_sims; i++) {
        if (out >= 0 && g_sims[i].pid == 0) {
            g_sims[i].pid = pid;
            g_sims[i].out = out;
            return;
        }
        if (out < 0 && g_sims[i].pid == pid) {
            close(g_sims[i].out);
            g_sims[i].pid = 0;
            return;
        }
    }
}

/* Read pvesim's stdout until its last port-map line ("fingerprint ...").
 * True when it got there; false when pvesim ended first. */
static bool sim_ready(int fd, int64_t deadline)
{
    char acc[4096];
    size_t len = 0;
    while (h_now_ms() < deadline) {
        struct timeval tv = {0, 100000};
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fd, &r);
        int n = select(fd + 1, &r, NULL, NULL, &tv);
        if (n < 0 && errno != EINTR)
            return false;
        if (n <= 0)
            continue;
        ssize_t got = read(fd, acc + len, sizeof acc - 1 - len);
        if (got <= 0)
            return false;
        len += (size_t)got;
        acc[len] = '\0';
        if (strstr(acc, "fingerprint "))
            return true;
        if (len == sizeof acc - 1) /* keep the tail: the line may straddle */
            len = 0;
    }
    fail_msg("pvesim did not start within 60 s");
    return false;
}

/* One start on `port`: the pid, or -1 when pvesim exited before it was up. */
static pid_t sim_try(const char *bin, int port, const char *const *args)
{
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = listen;
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    track(pid, p[0]);
    /* a loaded machine (a sanitizer build among other tests) may take
     * 20 s to start it; lib/sim.py waits as long as pvesim lives */
    if (sim_ready(p[0], h_now_ms() + 60000))
        return pid;
    int st = 0;
    waitpid(pid, &st, 0);
    track(pid, -1);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        fail_msg("cannot run %s", bin);
    return -1;
}

pid_t h_sim_start(int *port, const char *const *args)
{
    const char *bin = getenv("PVESIM");
    assert_non_null(bin);
    for (int attempt = 0; attempt < 5; attempt++) {
        pid_t pid = sim_try(bin, *port, args);
        if (pid > 0)
            return pid;
        *port = h_free_port(); /* a port of the block was taken meanwhile */
    }
    fail_msg("pvesim could not start on five port blocks");
    return -1;
}

void h_sim_stop(pid_t pid, bool expect_clean)
{
    track(pid, -1);
    kill(pid, SIGTERM);
    int64_t deadline = h_now_ms() + 10000;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (h_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("pvesim did not stop on SIGTERM");
        }
        usleep(10000);
    }
    if (expect_clean)
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

pid_t h_sim_up(int *port, const struct h_sim_opts *o)
{
    char ver[16];
    snprintf(ver, sizeof ver, "%d", o->pve_version);
    const char *args[72];
    int n = 0;
    args[n++] = "--nodes";
    args[n++] = o->nodes ? o->nodes : "sv1,sv2";
    args[n++] = "--time-scale";
    args[n++] = o->time_scale ? o->time_scale : "0.02";
    args[n++] = "--auth-delay";
    args[n++] = "0";
    const char *pairs[][2] = {{"--token", o->token},
                              {"--password", o->password},
                              {"--log-level", o->log_level},
                              {"--pve-version", o->pve_version ? ver : NULL}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (pairs[i][1]) {
            args[n++] = pairs[i][0];
            args[n++] = pairs[i][1];
        }
    bool own_cert = false, own_tkey = false;
    for (int i = 0; o->extra && o->extra[i]; i++) {
        if (n >= 63)
            fail_msg("too many pvesim arguments");
        own_cert = own_cert || strcmp(o->extra[i], "--tls-cert") == 0;
        own_tkey = own_tkey || strcmp(o->extra[i], "--ticket-key") == 0;
        args[n++] = o->extra[i];
    }
    /* the build's test certificate (CMakeLists.txt): no RSA key made per start */
    const char *cert = getenv("PVESIM_TLS_CERT"), *key = getenv("PVESIM_TLS_KEY");
    if (!own_cert && cert && *cert && key && *key) {
        args[n++] = "--tls-cert";
        args[n++] = cert;
        args[n++] = "--tls-key";
        args[n++] = key;
    }
    /* and its ticket key (--ticket-key): not a second RSA key per start */
    const char *tkey = getenv("PVESIM_TICKET_KEY");
    if (!own_tkey && tkey && *tkey) {
        args[n++] = "--ticket-key";
        args[n++] = tkey;
    }
    args[n] = NULL;
    *port = h_free_port();
    return h_sim_start(port, args); /* returns once every listener is up */
}

json_t *h_sim_ctl(int port, const char *method, const char *path, const char *json)
{
    struct h_resp r;
    h_request(port, method, path, json ? "application/json" : NULL, json, NULL, &r);
    if (r.status < 200 || r.status > 299)
        fail_msg("%s %s -> %ld %s %s", method, path, r.status, r.reason, r.body);
    json_t *j = r.json ? json_incref(r.json) : NULL;
    h_resp_free(&r);
    return j;
}

struct sink {
    char *p;
    size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t k = size * nmemb;
    s->p = realloc(s->p, s->n + k + 1);
    memcpy(s->p + s->n, ptr, k);
    s->n += k;
    s->p[s->n] = '\0';
    return k;
}

static void parse_reason(const char *headers, char *out, size_t n)
{
    /* the last status line (after redirects/100-continue) */
    const char *line = headers, *last = NULL;
    while ((line = strstr(line, "HTTP/1.")) != NULL) {
        last = line;
        line++;
    }
    out[0] = '\0';
    if (!last)
        return;
    const char *sp = strchr(last, ' ');
    if (!sp || !(sp = strchr(sp + 1, ' ')))
        return;
    sp++;
    size_t k = strcspn(sp, "\r\n");
    if (k >= n)
        k = n - 1;
    memcpy(out, sp, k);
    out[k] = '\0';
}

void h_request(int port, const char *method, const char *path, const char *ctype, const char *body,
               const char *const *hdrs, struct h_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    char url[4096];
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", port, path);
    struct sink b = {0}, h = {0};
    struct curl_slist *sl = NULL;
    char ct[256];
    if (body) {
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 ctype ? ctype : "application/x-www-form-urlencoded");
        sl = curl_slist_append(sl, ct);
    }
    for (int i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("request %s %s failed: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = b.p ? b.p : strdup("");
    out->body_len = b.n;
    out->headers = h.p ? h.p : strdup("");
    parse_reason(out->headers, out->reason, sizeof out->reason);
    out->json = json_loadb(out->body, out->body_len, 0, NULL);
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
}

void h_resp_free(struct h_resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

bool h_wait(bool (*cond)(void *), void *arg, int deadline_ms)
{
    int64_t end = h_now_ms() + deadline_ms;
    while (h_now_ms() < end) {
        if (cond(arg))
            return true;
        usleep(10000);
    }
    return cond(arg);
}

/* The first line of `f` into buf without its newline; false at EOF. */
static bool read_line(FILE *f, char *buf, size_t len)
{
    if (!fgets(buf, (int)len, f))
        return false;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] != '\0';
}

/* lib.pg lives in tests/, this file's directory: ctest sets PYTHONPATH
 * to it; a binary run by hand finds it too. */
static void pg_pythonpath(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        setenv("PYTHONPATH", dir, 0);
    }
}

bool h_pg_start(char *url, size_t url_len, char *dir, size_t dir_len)
{
    pg_pythonpath();
    /* stderr passes through: the reason when the server does not start */
    FILE *p = popen("/usr/bin/python3 -m lib.pg start", "r");
    if (!p)
        return false;
    bool ok = read_line(p, url, url_len) && read_line(p, dir, dir_len);
    int st = pclose(p);
    return ok && st == 0 && strncmp(url, "postgresql://", 13) == 0;
}

bool h_pg_stop(const char *dir)
{
    pg_pythonpath();
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", "-m", "lib.pg", "stop", dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}
