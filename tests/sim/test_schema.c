/* Tests for sim/schema: loading both apidoc versions, routing, parameter
 * verification with PVE's exact error texts, and `returns` checks. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/xalloc.h"
#include "sim/schema.h"
#include "sim/schema_format.h"

static schema *s9; /* pve-9.1.3.schema.json (data/pve-apidoc) */
static schema *s8; /* pve-8.4.2.schema.json */

static schema *load_version(const char *file)
{
    const char *dir = getenv("SCHEMA_DIR");
    char *path = xasprintf("%s/%s", dir ? dir : "data/pve-apidoc", file);
    char *err = NULL;
    schema *s = schema_load(path, &err);
    if (!s)
        fprintf(stderr, "schema_load: %s\n", err ? err : "?");
    free(err);
    free(path);
    return s;
}

static int setup(void **state)
{
    (void)state;
    s9 = load_version("pve-9.1.3.schema.json");
    s8 = load_version("pve-8.4.2.schema.json");
    return (s9 && s8) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    schema_free(s9);
    schema_free(s8);
    return 0;
}

static const schema_method *find(schema *s, const char *verb, const char *path)
{
    const schema_method *m = NULL;
    assert_int_equal(schema_find(s, verb, path, &m, NULL), SCHEMA_OK);
    assert_non_null(m);
    return m;
}

/* Check `params` (a JSON text) against verb+path; returns the errors object
 * (caller decrefs) and asserts the return code. */
static json_t *check(schema *s, const char *verb, const char *path, const char *params,
                     bool json_bools, int want)
{
    const schema_method *m = find(s, verb, path);
    json_error_t jerr;
    json_t *p = json_loads(params, 0, &jerr);
    if (!p)
        fail_msg("bad test JSON %s: %s", params, jerr.text);
    json_t *errors = json_object();
    int rc = schema_check_params(m, p, json_bools, errors);
    if (rc != want) {
        char *dump = json_dumps(errors, 0);
        fail_msg("%s %s %s: rc %d want %d, errors %s", verb, path, params, rc, want, dump);
    }
    json_decref(p);
    return errors;
}

static void expect_ok(schema *s, const char *verb, const char *path, const char *params)
{
    json_decref(check(s, verb, path, params, false, SCHEMA_OK));
}

/* Exactly one error, on `key`, with text `msg`. */
static void expect_err(schema *s, const char *verb, const char *path, const char *params,
                       const char *key, const char *msg)
{
    json_t *errors = check(s, verb, path, params, false, SCHEMA_INVALID);
    const char *got = json_string_value(json_object_get(errors, key));
    if (!got || strcmp(got, msg) != 0 || json_object_size(errors) != 1) {
        char *dump = json_dumps(errors, 0);
        fail_msg("%s %s: errors %s, want %s: \"%s\"", path, params, dump, key, msg);
    }
    json_decref(errors);
}

#define CONFIG "/nodes/{node}/qemu/{vmid}/config"
#define BASE "\"node\":\"pve1\",\"vmid\":\"100\""

/* ---- loading and routing -------------------------------------------- */

static void test_load_errors(void **state)
{
    (void)state;
    char *err = NULL;
    assert_null(schema_load("/nonexistent/apidoc.json", &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/apidoc.json"));
    free(err);
}

static void test_load_speed(void **state)
{
    (void)state;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    schema *s = load_version("pve-9.1.3.schema.json");
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_non_null(s);
    schema_free(s);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    /* the budget is 300 ms in a normal build; sanitizers slow it down */
    assert_true(ms < 1500);
}

static void test_route_basic(void **state)
{
    (void)state;
    const schema_method *m = NULL;
    json_t *pp = json_object();

    assert_int_equal(schema_find(s9, "POST", "/nodes/sv1/qemu/100/clone", &m, pp), SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/nodes/{node}/qemu/{vmid}/clone");
    assert_string_equal(schema_method_verb(m), "POST");
    assert_string_equal(schema_method_name(m), "clone_vm");
    assert_true(schema_method_protected(m));
    assert_string_equal(schema_method_proxyto(m), "node");
    assert_string_equal(json_string_value(json_object_get(pp, "node")), "sv1");
    assert_string_equal(json_string_value(json_object_get(pp, "vmid")), "100");
    assert_int_equal(json_object_size(pp), 2);
    assert_non_null(schema_method_parameters(m));
    assert_non_null(schema_method_returns(m));
    json_decref(pp);

    /* empty segments are ignored */
    assert_int_equal(schema_find(s9, "GET", "//nodes/sv1//qemu/100/config/", &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_name(m), "vm_config");
    assert_int_equal(schema_find(s9, "PUT", "/nodes/sv1/qemu/100/config", &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_name(m), "update_vm");
    assert_int_equal(schema_find(s9, "POST", "/nodes/sv1/qemu/100/config", &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_name(m), "update_vm_async");
}

static void test_route_literals_win(void **state)
{
    (void)state;
    const schema_method *m = NULL;
    json_t *pp = json_object();

    assert_int_equal(schema_find(s9, "GET", "/cluster/nextid", &m, pp), SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/cluster/nextid");
    assert_int_equal(json_object_size(pp), 0);
    assert_int_equal(schema_find(s9, "GET", "/cluster/resources", &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/cluster/resources");
    assert_int_equal(schema_find(s9, "POST", "/access/ticket", &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/access/ticket");
    assert_false(schema_method_allowtoken(m));
    assert_null(schema_method_proxyto(m));
    /* "status" under qemu/{vmid} is a literal; "current" too */
    assert_int_equal(schema_find(s9, "GET", "/nodes/n1/qemu/101/status/current", &m, NULL),
                     SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/nodes/{node}/qemu/{vmid}/status/current");
    json_decref(pp);
}

static void test_route_upid(void **state)
{
    (void)state;
    const char *upid = "UPID:sv1:000ABCDE:0012F00D:66F0A1B2:qmclone:100:root@pam!ci:";
    char *path = xasprintf("/nodes/sv1/tasks/%s/status", upid);
    const schema_method *m = NULL;
    json_t *pp = json_object();

    assert_int_equal(schema_find(s9, "GET", path, &m, pp), SCHEMA_OK);
    assert_string_equal(schema_method_path(m), "/nodes/{node}/tasks/{upid}/status");
    assert_string_equal(json_string_value(json_object_get(pp, "upid")), upid);
    free(path);
    path = xasprintf("/nodes/sv1/tasks/%s", upid);
    assert_int_equal(schema_find(s8, "DELETE", path, &m, NULL), SCHEMA_OK);
    assert_string_equal(schema_method_name(m), "stop_task");
    free(path);
    json_decref(pp);
}

static void test_route_misses(void **state)
{
    (void)state;
    const schema_method *m = NULL;
    assert_int_equal(schema_find(s9, "GET", "/nodes/sv1/qemu/100/nonsense", &m, NULL),
                     SCHEMA_NO_PATH);
    assert_int_equal(schema_find(s9, "GET", "/", &m, NULL), SCHEMA_NO_PATH);
    assert_int_equal(schema_find(s9, "GET", "/nope", &m, NULL), SCHEMA_NO_PATH);
    assert_int_equal(schema_find(s9, "DELETE", "/cluster/nextid", &m, NULL), SCHEMA_NO_METHOD);
    assert_int_equal(schema_find(s9, "PATCH", "/version", &m, NULL), SCHEMA_NO_METHOD);
    assert_int_equal(schema_find(s9, "PUT", "/nodes/sv1/qemu/100/clone", &m, NULL),
                     SCHEMA_NO_METHOD);
}

/* ---- parameters ------------------------------------------------------ */

static void test_unknown_and_missing(void **state)
{
    (void)state;
    const char *clone = "/nodes/{node}/qemu/{vmid}/clone";
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"bogus\":\"1\"}", "bogus",
               "property is not defined in schema and the schema does not allow additional "
               "properties");
    expect_err(s9, "POST", clone, "{" BASE "}", "newid",
               "property is missing and it is not optional");
    /* JSON null counts as missing */
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":null}", "newid",
               "property is missing and it is not optional");
    expect_ok(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"name\":\"web-01.example\"}");
}

static void test_clone_newid(void **state)
{
    (void)state;
    const char *clone = "/nodes/{node}/qemu/{vmid}/clone";
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"abc\"}", "newid",
               "type check ('integer') failed - got 'abc'");
    /* format is checked before minimum: 99 fails the VM ID format */
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"99\"}", "newid",
               "invalid format - value does not look like a valid VM ID\n");
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"+100\"}", "newid",
               "invalid format - value does not look like a valid VM ID\n");
    expect_ok(s9, "POST", clone, "{" BASE ",\"newid\":101}");
    expect_ok(s9, "POST", clone, "{" BASE ",\"newid\":\"999999999\"}");
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"name\":\"bad_name\"}", "name",
               "invalid format - value does not look like a valid DNS name\n");
    expect_err(s9, "POST", clone, "{\"node\":\"-bad\",\"vmid\":\"100\",\"newid\":\"101\"}", "node",
               "invalid format - value does not look like a valid node name\n");
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"format\":\"qed\"}", "format",
               "value 'qed' does not have a value in the enumeration 'raw, qcow2, vmdk'");
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"storage\":\"1local\"}", "storage",
               "invalid format - storage ID '1local' contains illegal characters\n");
    expect_err(s9, "POST", clone, "{" BASE ",\"newid\":\"101\",\"bwlimit\":\"-1\"}", "bwlimit",
               "value must have a minimum value of 0");
}

static void test_resize(void **state)
{
    (void)state;
    const char *resize = "/nodes/{node}/qemu/{vmid}/resize";
    expect_ok(s9, "PUT", resize, "{" BASE ",\"disk\":\"scsi0\",\"size\":\"+10G\"}");
    expect_ok(s9, "PUT", resize, "{" BASE ",\"disk\":\"virtio15\",\"size\":\"1073741824\"}");
    expect_err(s9, "PUT", resize, "{" BASE ",\"disk\":\"scsi0\",\"size\":\"10GB\"}", "size",
               "value does not match the regex pattern");
    expect_err(s9, "PUT", resize, "{" BASE ",\"disk\":\"scsi0\",\"size\":\"10g\"}", "size",
               "value does not match the regex pattern");
    json_t *errors = check(s9, "PUT", resize, "{" BASE ",\"disk\":\"scsi31\",\"size\":\"1G\"}",
                           false, SCHEMA_INVALID);
    const char *msg = json_string_value(json_object_get(errors, "disk"));
    assert_non_null(msg);
    assert_true(
        strncmp(msg, "value 'scsi31' does not have a value in the enumeration 'ide0, ", 62) == 0);
    json_decref(errors);
    expect_err(s9, "PUT", resize,
               "{" BASE ",\"disk\":\"scsi0\",\"size\":\"1G\",\"digest\":"
               "\"0123456789012345678901234567890123456789abcdefghijklmnopqrstuvwxyz\"}",
               "digest", "value may only be 40 characters long");
}

static void test_config_sshkeys(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG,
              "{" BASE ",\"sshkeys\":\"ssh-ed25519%20AAAAC3Nz%2Bx%2F%3D%20me%40host%0A\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"sshkeys\":\"ssh-ed25519 AAAA me@host\"}", "sshkeys",
               "invalid format - invalid urlencoded string: ssh-ed25519 AAAA me@host\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"sshkeys\":\"ssh-ed25519+AAAA\"}", "sshkeys",
               "invalid format - invalid urlencoded string: ssh-ed25519+AAAA\n");
}

static void test_config_numbers_and_booleans(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"cores\":\"4\",\"onboot\":\"1\",\"template\":0}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"cores\":\"0\"}", "cores",
               "value must have a minimum value of 1");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"cores\":\"4.5\"}", "cores",
               "type check ('integer') failed - got '4.5'");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"onboot\":\"true\"}", "onboot",
               "type check ('boolean') failed - got 'true'");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"onboot\":true}", "onboot",
               "type check ('boolean') failed - got JSON::PP::Boolean");
    json_decref(check(s9, "PUT", CONFIG, "{" BASE ",\"onboot\":true}", true, SCHEMA_OK));
    /* json_bools only concerns booleans */
    json_t *errors = check(s9, "PUT", CONFIG, "{" BASE ",\"cores\":true}", true, SCHEMA_INVALID);
    assert_string_equal(json_string_value(json_object_get(errors, "cores")),
                        "type check ('integer') failed - got JSON::PP::Boolean");
    json_decref(errors);
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"cpulimit\":\"1e9\"}", "cpulimit",
               "value must have a maximum value of 128");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"cpulimit\":\"0.5\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"cpulimit\":\"half\"}", "cpulimit",
               "type check ('number') failed - got 'half'");
}

static void test_config_memory(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"2048\"}");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"current=2048\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"8\"}", "memory",
               "invalid format - format error\n"
               "memory.current: value must have a minimum value of 16\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"current=lots\"}", "memory",
               "invalid format - format error\n"
               "memory.current: type check ('integer') failed - got 'lots'\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"2048,1024\"}", "memory",
               "invalid format - duplicate key in comma-separated list property: current\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"memory\":\"size=2048\"}", "memory",
               "invalid format - invalid key in comma-separated list property: size\n");
    /* PVE 8.4 has the same property string */
    expect_ok(s8, "PUT", CONFIG, "{" BASE ",\"memory\":\"4096\"}");
}

static void test_config_net(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"virtio,bridge=vmbr0\"}");
    expect_ok(s9, "PUT", CONFIG,
              "{" BASE ",\"net1\":\"virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=true,tag=5\"}");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"net31\":\"model=e1000,macaddr=BC:24:11:00:00:02\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net32\":\"virtio\"}", "net32",
               "property is not defined in schema and the schema does not allow additional "
               "properties");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"virtio,bridge=vmbr0,tag=5000\"}", "net0",
               "invalid format - format error\n"
               "net0.tag: value must have a maximum value of 4094\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"virtio=01:00:00:00:00:01\"}", "net0",
               "invalid format - format error\n"
               "net0.macaddr: invalid format - value does not look like a valid unicast MAC "
               "address\n\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"virtio,e1000=BC:24:11:00:00:01\"}", "net0",
               "invalid format - key alias 'model' is already defined\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"bridge=vmbr0\"}", "net0",
               "invalid format - format error\n"
               "net0.model: property is missing and it is not optional\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net0\":\"virtio,bridge=\"}", "net0",
               "invalid format - missing key in comma-separated list property\n");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"scsi0\":\"local-lvm:vm-100-disk-0,size=32G\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"scsi0\":\"local-lvm:vm-100-disk-0,size=32X\"}",
               "scsi0",
               "invalid format - format error\n"
               "scsi0.size: invalid format - value does not look like a valid disk size: 32X\n\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"scsi31\":\"local-lvm:1\"}", "scsi31",
               "property is not defined in schema and the schema does not allow additional "
               "properties");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net[n]\":\"virtio\"}", "net[n]",
               "property is not defined in schema and the schema does not allow additional "
               "properties");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"net01\":\"virtio\"}", "net01",
               "property is not defined in schema and the schema does not allow additional "
               "properties");
}

static void test_config_ipconfig(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"ipconfig0\":\"ip=dhcp\"}");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"ipconfig0\":\"ip=10.0.0.5/24,gw=10.0.0.1\"}");
    expect_ok(s9, "PUT", CONFIG,
              "{" BASE ",\"ipconfig5\":\"ip6=2001:db8::5/64,gw6=2001:db8::1,ip=manual\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"ipconfig0\":\"gw=10.0.0.1\"}", "ipconfig0",
               "invalid format - format error\n"
               "ipconfig0.ip: missing property - 'ipconfig0.gw' requires this property\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"ipconfig0\":\"ip=10.0.0.5\"}", "ipconfig0",
               "invalid format - format error\n"
               "ipconfig0.ip: invalid format - value does not look like a valid ipv4 network "
               "configuration\n\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"ipconfig0\":\"ip=10.0.0.5/24,gw=10.0.0.256\"}",
               "ipconfig0",
               "invalid format - format error\n"
               "ipconfig0.gw: invalid format - value does not look like a valid IPv4 address\n\n");
}

static void test_config_lists(void **state)
{
    (void)state;
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"delete\":\"net1,scsi2;ide2 unused0\"}");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"delete\":[\"net1\",\"cores\"]}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"delete\":\"net1,9x\"}", "delete",
               "invalid format - invalid configuration ID '9x'\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"description\":[\"a\",\"b\"]}", "description",
               "type check ('string') failed - got ARRAY");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"tags\":\"prod;web,db\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"tags\":\"prod;-web\"}", "tags",
               "invalid format - invalid characters in tag\n");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"hotplug\":\"network,disk,usb\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"hotplug\":\"network,gpu\"}", "hotplug",
               "invalid format - invalid hotplug feature 'gpu'\n");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"startup\":\"order=1,up=30\"}");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"startup\":\"first\"}", "startup",
               "invalid format - unable to parse startup options\n");
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"nameserver\":\"1.1.1.1 dns_x\"}", "nameserver",
               "invalid format - value does not look like a valid address: dns_x\n");
}

static void test_requires(void **state)
{
    (void)state;
    /* force requires delete: the error is reported on the required one */
    expect_err(s9, "PUT", CONFIG, "{" BASE ",\"force\":\"1\"}", "delete",
               "missing property - 'force' requires this property");
    expect_ok(s9, "PUT", CONFIG, "{" BASE ",\"force\":\"1\",\"delete\":\"unused0\"}");
}

static void test_access_ticket(void **state)
{
    (void)state;
    expect_ok(s9, "POST", "/access/ticket", "{\"username\":\"root@pam\",\"password\":\"x\"}");
    expect_err(s9, "POST", "/access/ticket", "{\"username\":\"root@pam\"}", "password",
               "property is missing and it is not optional");
    expect_err(s9, "POST", "/access/ticket",
               "{\"username\":\"root@pam\",\"password\":\"x\",\"realm\":\"1pam\"}", "realm",
               "invalid format - value does not look like a valid realm\n");
    expect_err(s9, "POST", "/access/ticket",
               "{\"username\":\"root@pam\",\"password\":\"x\",\"privs\":\"VM.Audit,VM.Fly\","
               "\"path\":\"/\"}",
               "privs", "invalid format - invalid privilege 'VM.Fly'\n");
}

static void test_check_value(void **state)
{
    (void)state;
    json_t *sch = json_pack("{s:s, s:i, s:i}", "type", "integer", "minimum", 16, "maximum", 64);
    json_t *v = json_string("8");
    char *msg = schema_check_value(sch, v, false);
    assert_string_equal(msg, "value must have a minimum value of 16");
    free(msg);
    json_decref(v);
    v = json_integer(32);
    assert_null(schema_check_value(sch, v, false));
    json_decref(v);
    msg = schema_check_value(sch, NULL, false);
    assert_string_equal(msg, "property is missing and it is not optional");
    free(msg);
    json_decref(sch);

    sch = json_pack("{s:s, s:s, s:i}", "type", "string", "format", "pve-vmid-list", "optional", 1);
    v = json_string("100,101;102 99");
    msg = schema_check_value(sch, v, false);
    assert_string_equal(msg, "invalid format - value does not look like a valid VM ID\n");
    free(msg);
    json_decref(v);
    v = json_string("100,101");
    assert_null(schema_check_value(sch, v, false));
    json_decref(v);
    json_decref(sch);
}

/* ---- returns --------------------------------------------------------- */

static void test_returns(void **state)
{
    (void)state;
    const schema_method *m = find(s9, "GET", "/nodes/{node}/qemu");
    char *err = NULL;
    json_t *d = json_loads("[{\"vmid\":100,\"status\":\"running\",\"name\":\"a\",\"extra\":1},"
                           "{\"vmid\":\"101\",\"status\":\"stopped\"}]",
                           0, NULL);
    assert_true(schema_check_returns(m, d, &err));
    assert_null(err);
    json_decref(d);

    d = json_loads(
        "[{\"vmid\":100,\"status\":\"running\"},{\"vmid\":\"x\",\"status\":\"stopped\"}]", 0, NULL);
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data[1].vmid: type check ('integer') failed - got 'x'");
    free(err);
    json_decref(d);

    d = json_loads("[{\"status\":\"running\"}]", 0, NULL);
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data[0].vmid: property is missing and it is not optional");
    free(err);
    json_decref(d);

    d = json_loads("{\"vmid\":100}", 0, NULL);
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data: type check ('array') failed");
    free(err);
    json_decref(d);

    /* UPID-returning method: a string */
    m = find(s9, "POST", "/nodes/{node}/qemu/{vmid}/clone");
    d = json_string("UPID:sv1:000ABCDE:0012F00D:66F0A1B2:qmclone:100:root@pam:");
    assert_true(schema_check_returns(m, d, &err));
    json_decref(d);
    d = json_pack("{s:s}", "upid", "x");
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data: type check ('string') failed - got HASH");
    free(err);
    json_decref(d);

    /* null-returning method */
    m = find(s9, "PUT", CONFIG);
    assert_true(schema_check_returns(m, json_null(), &err));
    d = json_string("x");
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data: type check ('null') failed - value is not null");
    free(err);
    json_decref(d);

    /* booleans: 0/1 or JSON booleans; object with nested checks */
    m = find(s9, "GET", "/nodes/{node}/qemu/{vmid}/status/current");
    d = json_loads("{\"vmid\":100,\"status\":\"running\",\"ha\":{\"managed\":0},\"agent\":true}", 0,
                   NULL);
    assert_true(schema_check_returns(m, d, &err));
    json_decref(d);
    d = json_loads("{\"vmid\":100,\"status\":\"sleeping\",\"ha\":{}}", 0, NULL);
    assert_false(schema_check_returns(m, d, &err));
    assert_string_equal(err, "data.status: value 'sleeping' does not have a value in the "
                             "enumeration 'stopped, running'");
    free(err);
    json_decref(d);
}

/* Every `pattern` in both apidoc files compiles (Perl syntax such as (?^:
 * and {,n} is translated), including those inside property-string formats. */
static void count_patterns(json_t *node, size_t *n)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_array(node)) {
        json_array_foreach(node, i, v)
        {
            count_patterns(v, n);
        }
        return;
    }
    if (!json_is_object(node))
        return;
    json_t *p = json_object_get(node, "pattern");
    if (json_is_string(p)) {
        int rc = schema_regex_match(json_string_value(p), "", 0);
        if (rc < 0)
            fail_msg("pattern does not compile: %s", json_string_value(p));
        (*n)++;
    }
    json_object_foreach(node, k, v)
    {
        count_patterns(v, n);
    }
}

static void test_all_patterns_compile(void **state)
{
    (void)state;
    const char *files[] = {"pve-9.1.3.schema.json", "pve-8.4.2.schema.json"};
    for (size_t f = 0; f < 2; f++) {
        const char *dir = getenv("SCHEMA_DIR");
        char *path = xasprintf("%s/%s", dir ? dir : "data/pve-apidoc", files[f]);
        json_t *doc = json_load_file(path, 0, NULL);
        assert_non_null(doc);
        size_t n = 0;
        count_patterns(doc, &n);
        assert_true(n > 200);
        json_decref(doc);
        free(path);
    }
    /* Perl semantics kept: {,n} is {0,n}; m/^a|b$/ binds the anchors */
    assert_int_equal(schema_regex_match("[a-z]{,3}", "abc", 3), 1);
    assert_int_equal(schema_regex_match("[a-z]{,3}", "abcd", 4), 0);
    assert_int_equal(schema_regex_match("(?^i:ab)", "AB", 2), 1);
    assert_int_equal(schema_regex_match("x|none", "xyz", 3), 1);
    assert_int_equal(schema_regex_match("(", "", 0), -1);
}

static void test_ip_formats(void **state)
{
    (void)state;
    const char *good6[] = {
        "::1", "::", "fe80::1", "2001:db8::5", "2001:db8:0:0:0:0:0:1", "::ffff:10.0.0.1"};
    const char *bad6[] = {"2001:db8:::1", "12345::1", "1:2:3:4:5:6:7:8:9", "10.0.0.1"};
    for (size_t i = 0; i < sizeof(good6) / sizeof(good6[0]); i++)
        assert_null(schema_format_verify("ipv6", good6[i], strlen(good6[i])));
    for (size_t i = 0; i < sizeof(bad6) / sizeof(bad6[0]); i++) {
        char *e = schema_format_verify("ipv6", bad6[i], strlen(bad6[i]));
        assert_string_equal(e, "value does not look like a valid IPv6 address\n");
        free(e);
    }
    char *e = schema_format_verify("ipv4", "10.0.0.01", 9);
    assert_string_equal(e, "value does not look like a valid IPv4 address\n");
    free(e);
    assert_null(schema_format_verify("CIDR", "10.0.0.0/8", 10));
    e = schema_format_verify("CIDR", "10.0.0.0/7", 10);
    assert_string_equal(e, "value does not look like a valid CIDR network\n");
    free(e);
    assert_null(schema_format_verify("CIDRv6", "fd00::/64", 9));
    assert_null(schema_format_verify("pve-userid", "root@pam", 8));
    e = schema_format_verify("pve-userid", "ro", 2);
    assert_string_equal(e, "user name 'ro' is too short\n");
    free(e);
    e = schema_format_verify("pve-userid", "root", 4);
    assert_string_equal(e, "value 'root' does not look like a valid user name\n");
    free(e);
    assert_null(schema_format_verify("pve-tokenid", "root@pam!ci", 11));
    e = schema_format_verify("pve-volume-id", "nocolon", 7);
    assert_string_equal(e, "unable to parse volume ID 'nocolon'\n");
    free(e);
    assert_null(schema_format_verify("pve-volume-id", "local:iso/x.iso", 15));
    assert_null(schema_format_verify("some-future-format", "anything", 8));
}

/* A loaded schema is shared by request threads without locking. */
struct worker_arg {
    int failures;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;
    const schema_method *m = NULL;
    for (int i = 0; i < 200; i++) {
        json_t *pp = json_object();
        if (schema_find(s9, "PUT", "/nodes/pve1/qemu/100/config", &m, pp) != SCHEMA_OK) {
            a->failures++;
            json_decref(pp);
            continue;
        }
        json_object_set_new(pp, "memory", json_string(i % 2 ? "8" : "current=2048"));
        json_object_set_new(pp, "net0", json_string("virtio,bridge=vmbr0"));
        json_object_set_new(pp, "tags", json_string("a;b"));
        json_t *errors = json_object();
        int rc = schema_check_params(m, pp, false, errors);
        if (rc != (i % 2 ? SCHEMA_INVALID : SCHEMA_OK) ||
            json_object_size(errors) != (size_t)(i % 2))
            a->failures++;
        json_decref(errors);
        json_decref(pp);
    }
    return NULL;
}

static void test_concurrent_use(void **state)
{
    (void)state;
    pthread_t t[4];
    struct worker_arg args[4] = {{0}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_speed),
        cmocka_unit_test(test_route_basic),
        cmocka_unit_test(test_route_literals_win),
        cmocka_unit_test(test_route_upid),
        cmocka_unit_test(test_route_misses),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_clone_newid),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_config_sshkeys),
        cmocka_unit_test(test_config_numbers_and_booleans),
        cmocka_unit_test(test_config_memory),
        cmocka_unit_test(test_config_net),
        cmocka_unit_test(test_config_ipconfig),
        cmocka_unit_test(test_config_lists),
        cmocka_unit_test(test_requires),
        cmocka_unit_test(test_access_ticket),
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_returns),
        cmocka_unit_test(test_all_patterns_compile),
        cmocka_unit_test(test_ip_formats),
        cmocka_unit_test(test_concurrent_use),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
