/* Pure unit tests: path and parameter encoding, sshkeys, fingerprints,
 * error classification and rendering. No network. */
#include "pvetest.h"

#include <stdlib.h>

#include "pve/pve_int.h"

static void test_path(void **state)
{
    (void)state;
    char p[256];
    assert_int_equal(pve_path(p, sizeof p, "/nodes/%s/tasks/%s/status", "sv1",
                              "UPID:sv1:00001000:0010851D:6B04CF4B:qmclone:8000:root@pam!ci:"),
                     0);
    assert_string_equal(p, "/nodes/sv1/tasks/UPID%3Asv1%3A00001000%3A0010851D%3A6B04CF4B%3A"
                           "qmclone%3A8000%3Aroot%40pam%21ci%3A/status");
    assert_int_equal(pve_path(p, sizeof p, "/nodes/%s/qemu/%d/config", "a b/c", 100), 0);
    assert_string_equal(p, "/nodes/a%20b%2Fc/qemu/100/config");
    assert_int_equal(pve_path(p, sizeof p, "/x/%s/100%%", "y+z"), 0);
    assert_string_equal(p, "/x/y%2Bz/100%");
    /* does not fit, empty or NULL segment, unknown conversion */
    assert_int_equal(pve_path(p, 10, "/nodes/%s", "sv1sv1"), -1);
    assert_string_equal(p, "");
    assert_int_equal(pve_path(p, 16, "/nodes/%s", "sv1sv1"), 0);
    assert_int_equal(pve_path(p, 15, "/nodes/%s", "sv1sv1x"), 0);
    assert_int_equal(pve_path(p, 14, "/nodes/%s", "sv1sv1x"), -1);
    assert_int_equal(pve_path(p, sizeof p, "/nodes/%s", ""), -1);
    assert_int_equal(pve_path(p, sizeof p, "/nodes/%s", (char *)NULL), -1);
    assert_int_equal(pve_path(p, sizeof p, "/nodes/%x", 1), -1);
}

static void test_sshkeys(void **state)
{
    (void)state;
    char *s = pve_sshkeys_encode("ssh-ed25519 AAAA+b/c= user@host\n"
                                 "ssh-rsa AB+/== x(y)!*'~_.-\n");
    assert_string_equal(s, "ssh-ed25519%20AAAA%2Bb%2Fc%3D%20user%40host%0A"
                           "ssh-rsa%20AB%2B%2F%3D%3D%20x(y)!*'~_.-%0A");
    free(s);
    s = pve_sshkeys_encode("");
    assert_string_equal(s, "");
    free(s);
    assert_null(pve_sshkeys_encode(NULL));
}

static void test_form_and_json(void **state)
{
    (void)state;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    struct pve_error e;
    json_t *p = json_pack("{s:s, s:i, s:b, s:b, s:n}", "description", "a+b c&d=e;f\n", "vmid", 100,
                          "full", 1, "onboot", 0, "skipped");
    assert_int_equal(pve_encode_form(p, &b, &e), 0);
    assert_string_equal(b.data, "description=a%2Bb%20c%26d%3De%3Bf%0A&vmid=100&full=1&onboot=0");
    buf_reset(&b);
    assert_int_equal(pve_encode_json(p, &b, &e), 0);
    json_t *j = json_loads(b.data, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "full")), 1);
    assert_true(json_is_integer(json_object_get(j, "onboot")));
    assert_string_equal(json_string_value(json_object_get(j, "description")), "a+b c&d=e;f\n");
    assert_null(json_object_get(j, "skipped"));
    json_decref(j);
    json_decref(p);
    buf_reset(&b);
    p = json_pack("{s:{}}", "obj");
    assert_int_equal(pve_encode_form(p, &b, &e), PVE_E_INVALID);
    assert_int_equal(pve_encode_json(p, &b, &e), PVE_E_INVALID);
    json_decref(p);
    buf_release(&b);
}

static void test_fingerprint_parse(void **state)
{
    (void)state;
    unsigned char fp[PVE_FP_LEN];
    const char *s = "43:29:03:36:9D:BE:38:47:FD:86:9B:42:4D:A8:D6:35:00:EA:21:F4:67:EE:9D:43:20:"
                    "81:CD:0A:11:EF:6E:65";
    assert_int_equal(pve_fp_parse(s, fp), 0);
    char out[3 * PVE_FP_LEN];
    pve_fp_format(fp, out, sizeof out);
    assert_string_equal(out, s);
    assert_int_equal(pve_fp_parse("4329033", fp), -1);
    assert_int_equal(pve_fp_parse("ZZ:29", fp), -1);
}

static void test_classify(void **state)
{
    (void)state;
    assert_int_equal(pve_classify(500, "VM 100 is locked (clone)"), PVE_E_LOCK);
    assert_int_equal(
        pve_classify(500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"),
        PVE_E_LOCK);
    assert_int_equal(pve_classify(500, "cfs-lock 'storage-x' error: got lock request timeout"),
                     PVE_E_LOCK);
    assert_int_equal(pve_classify(595, "Connection refused"), PVE_E_NETWORK);
    assert_int_equal(pve_classify(596, "Connection timed out"), PVE_E_NETWORK);
    assert_int_equal(pve_classify(502, ""), PVE_E_NETWORK);
    assert_int_equal(pve_classify(503, ""), PVE_E_NETWORK);
    assert_int_equal(pve_classify(401, "No ticket"), PVE_E_AUTH);
    assert_int_equal(pve_classify(403, "Permission check failed"), PVE_E_PERMISSION);
    assert_int_equal(
        pve_classify(500, "Configuration file 'nodes/sv1/qemu-server/1.conf' does not exist"),
        PVE_E_NOTFOUND);
    assert_int_equal(pve_classify(500, "unable to find configuration file for VM 1 on node 'a'"),
                     PVE_E_NOTFOUND);
    assert_int_equal(pve_classify(400, "Parameter verification failed.\nupid: no such task"),
                     PVE_E_NOTFOUND);
    assert_int_equal(pve_classify(500, "unable to create VM 200: config file already exists"),
                     PVE_E_EXISTS);
    assert_int_equal(pve_classify(400, "Parameter verification failed.\ncores: type check"),
                     PVE_E_INVALID);
    assert_int_equal(pve_classify(500, "VM 100 is running - destroy failed"), PVE_E_OTHER);
    assert_int_equal(pve_classify(200, ""), PVE_OK);
    assert_string_equal(pve_class_name(PVE_E_LOCK), "lock");
    assert_string_equal(pve_class_name(PVE_E_TIMEOUT), "timeout");
    assert_string_equal(pve_class_name((enum pve_class)99), "unknown");
}

static void test_error_from_resp(void **state)
{
    (void)state;
    struct pve_resp rs = {.status = 400};
    snprintf(rs.reason, sizeof rs.reason, "Parameter verification failed.");
    rs.body =
        json_pack("{s:n, s:{s:s, s:s}, s:s}", "data", "errors", "vmid", "VM 100 already exists\n",
                  "cores", "bad", "message", "Parameter verification failed.\n");
    struct pve_error e;
    pve_error_clear(&e);
    pve_error_from_resp(&e, &rs, "h:8006");
    assert_int_equal(e.cls, PVE_E_EXISTS);
    assert_string_equal(e.message, "Parameter verification failed.");
    assert_non_null(strstr(e.params, "vmid: VM 100 already exists"));
    assert_null(strchr(e.params, '\n'));
    char buf[512];
    pve_strerror(&e, buf, sizeof buf);
    assert_true(str_starts(buf, "exists: 400 Parameter verification failed. [") != 0);
    pve_resp_clear(&rs);

    /* PVE 7: no body message, the reason phrase is it */
    rs.status = 500;
    snprintf(rs.reason, sizeof rs.reason, "VM 100 is locked (backup)");
    pve_error_from_resp(&e, &rs, "h:8006");
    assert_int_equal(e.cls, PVE_E_LOCK);
    assert_string_equal(e.message, "VM 100 is locked (backup)");
    assert_string_equal(e.host, "h:8006");

    /* transport failures */
    memset(&rs, 0, sizeof rs);
    rs.cc = CURLE_COULDNT_CONNECT;
    pve_error_from_resp(&e, &rs, "h:8006");
    assert_int_equal(e.cls, PVE_E_NETWORK);
    assert_int_equal(e.http_status, 0);
    rs.cc = CURLE_PEER_FAILED_VERIFICATION;
    pve_error_from_resp(&e, &rs, "h:8006");
    assert_int_equal(e.cls, PVE_E_TLS);
}

/* Paths reduced to endpoint templates for the call statistics. */
static void test_endpoint(void **state)
{
    (void)state;
    static const struct {
        const char *path, *endpoint, *node;
    } cases[] = {
        {"/version", "/version", ""},
        {"/cluster/resources", "/cluster/resources", ""},
        {"/nodes/sv1/qemu/1000/clone", "/nodes/{node}/qemu/{vmid}/clone", "sv1"},
        {"/nodes/sv2/qemu/9000/status/current", "/nodes/{node}/qemu/{vmid}/status/current", "sv2"},
        {"/nodes/pve-a/tasks/UPID%3Apve-a%3A0000%3A%3A/status", "/nodes/{node}/tasks/{upid}/status",
         "pve-a"},
        {"/nodes/sv1/storage/local-lvm/status", "/nodes/{node}/storage/{storage}/status", "sv1"},
        {"/cluster/ha/resources/vm%3A100", "/cluster/ha/resources/{sid}", ""},
        {"/nodes/sv1/qemu", "/nodes/{node}/qemu", "sv1"},
        {"/pools/42", "/pools/{id}", ""},
        {"/", "/", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char ep[96], node[64];
        pve_endpoint_of(cases[i].path, ep, sizeof ep, node, sizeof node);
        assert_string_equal(ep, cases[i].endpoint);
        assert_string_equal(node, cases[i].node);
    }
    /* bounded: a long path is cut, never overrun */
    char longp[600], ep[32], node[8];
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    pve_endpoint_of(longp, ep, sizeof ep, node, sizeof node);
    assert_int_equal(strlen(ep), sizeof ep - 1);
}

static void test_backoff(void **state)
{
    (void)state;
    struct pve_retry r = {0};
    pve_retry_defaults(&r);
    assert_int_equal(r.max_attempts, 5);
    assert_int_equal(r.base_ms, 200);
    long max = 0;
    for (int i = 0; i < 2000; i++) {
        long d = pve_backoff_ms(&r, 1 + i % 8);
        assert_true(d >= 0 && d <= r.cap_ms);
        if (i % 8 == 0)
            assert_true(d <= r.base_ms);
        if (d > max)
            max = d;
    }
    assert_true(max > r.cap_ms / 2); /* jitter spreads up to the cap */
    assert_int_equal(pve_host_backoff_next(0), 1000);
    assert_int_equal(pve_host_backoff_next(32000), 60000);
}

/* The volumes of a config, as a migration sees them: disks on storages
 * (a cloud-init drive too), not "none", not an ISO, not a host device. */
static void test_config_volumes(void **state)
{
    (void)state;
    struct pve_vm_config cfg = {0};
    cfg.raw = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "scsi0",
        "ceph:vm-100-disk-0,iothread=1,size=20G", "scsi1", "local-lvm:vm-100-disk-1,size=512M",
        "ide2", "local-lvm:vm-100-cloudinit,media=cdrom,size=4M", "ide0",
        "local:iso/debian.iso,media=cdrom,size=600M", "sata0", "none,media=cdrom", "virtio0",
        "/dev/disk/by-id/ata-XYZ,size=1T", "efidisk0", "local-lvm:vm-100-disk-2,size=4M",
        "tpmstate0", "ceph:vm-100-disk-3,size=4M,version=v2.0", "unused0",
        "local-lvm:vm-100-disk-4", "net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0", "scsihw",
        "virtio-scsi-pci", "scsi2", "local-lvm:vm-100-disk-5,size=99999999T", "ide",
        "local-lvm:x,size=1G");
    struct pve_volume *v = NULL;
    size_t n = 0;
    assert_int_equal(pve_vm_config_volumes(&cfg, &v, &n), 0);
    int64_t local = 0, shared = 0;
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].storage, "ceph") == 0)
            shared += v[i].size;
        else if (strcmp(v[i].storage, "local-lvm") == 0)
            local += v[i].size;
        else
            fail_msg("%s: %s is no volume to move", v[i].key, v[i].volid);
        if (strcmp(v[i].key, "ide2") == 0) {
            assert_true(v[i].cloudinit);
            assert_string_equal(v[i].volid, "local-lvm:vm-100-cloudinit");
            seen++;
        }
        if (strcmp(v[i].key, "scsi0") == 0) {
            assert_false(v[i].cloudinit);
            assert_int_equal(v[i].size, 20LL << 30);
            seen++;
        }
        if (strcmp(v[i].key, "unused0") == 0 || strcmp(v[i].key, "scsi2") == 0) {
            assert_int_equal(v[i].size, 0); /* no size, or none believable */
            seen++;
        }
    }
    assert_int_equal(n, 7); /* scsi0-2, ide2, efidisk0, tpmstate0, unused0 */
    assert_int_equal(seen, 4);
    assert_int_equal(shared, (20LL << 30) + (4LL << 20));
    assert_int_equal(local, (512LL << 20) + (4LL << 20) + (4LL << 20));
    free(v);
    json_decref(cfg.raw);
    /* no config, or none with disks: none */
    assert_int_equal(pve_vm_config_volumes(NULL, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_sshkeys),
        cmocka_unit_test(test_config_volumes),
        cmocka_unit_test(test_form_and_json),
        cmocka_unit_test(test_fingerprint_parse),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_error_from_resp),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
