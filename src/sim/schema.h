/* schema: the official Proxmox VE API schema (pve-docs apidoc JSON), loaded at
 * run time, used to route requests and to verify their parameters exactly as
 * the real server does (PVE's JSONSchema.pm), and to check results against the
 * declared `returns`.
 *
 * Ownership: schema_load returns a handle the caller frees with schema_free.
 * schema_method pointers are borrowed from the schema and live as long as it.
 * Thread-safety: a loaded schema is immutable; all functions may be called
 * from any thread concurrently. */
#ifndef SIM_SCHEMA_H
#define SIM_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>

typedef struct schema schema;
typedef struct schema_method schema_method;

enum schema_err {
    SCHEMA_OK = 0,
    SCHEMA_NO_PATH = 1,   /* no path in the schema matches */
    SCHEMA_NO_METHOD = 2, /* the path exists, not with that HTTP method */
    SCHEMA_INVALID = 3,   /* parameters failed verification; see the errors object */
    SCHEMA_LOAD = 4,      /* the schema file could not be read or parsed */
};

/* Load an apidoc JSON file (array of path nodes with `info` per verb).
 * On failure returns NULL and sets *err to a message the caller frees. */
schema *schema_load(const char *path, char **err);
void schema_free(schema *s);

/* Route a concrete, already percent-decoded path such as
 * "/nodes/sv1/qemu/100/config" (no "/api2/json" prefix; empty segments are
 * ignored, so "//a/" equals "/a") with an HTTP verb ("GET", ...).
 * Literal path segments win over {placeholders}. On success *out is the
 * method and `path_params` (a JSON object, may be NULL) receives each
 * placeholder's value as a JSON string, e.g. {"node":"sv1","vmid":"100"}.
 * Returns SCHEMA_OK, SCHEMA_NO_PATH or SCHEMA_NO_METHOD. */
int schema_find(const schema *s, const char *verb, const char *path, const schema_method **out,
                json_t *path_params);

/* The method's path template ("/nodes/{node}/qemu/{vmid}/config"), verb,
 * internal name ("vm_config"), and flags from the schema. */
const char *schema_method_path(const schema_method *m);
const char *schema_method_verb(const schema_method *m);
const char *schema_method_name(const schema_method *m);
bool schema_method_protected(const schema_method *m);
bool schema_method_allowtoken(const schema_method *m);
/* The `proxyto` parameter name ("node") or NULL. */
const char *schema_method_proxyto(const schema_method *m);
/* Borrowed `parameters` and `returns` schema objects (may be NULL). */
json_t *schema_method_parameters(const schema_method *m);
json_t *schema_method_returns(const schema_method *m);
/* Borrowed `permissions` object ({"check": expression, "user": "all" or
 * "world"}; its description is not kept), or NULL when the method has none
 * (then only root@pam may call it). */
json_t *schema_method_permissions(const schema_method *m);

/* Verify request parameters as PVE's JSONSchema validate() does.
 * `params` is a JSON object whose values are strings (from form/query
 * encoding) or JSON values (from a JSON body); an array value stands for a
 * repeated form key. Checks, per property and in PVE's order: unknown
 * parameters ("property is not defined in schema and the schema does not allow
 * additional properties"), required ones ("property is missing and it is not
 * optional"), type (integers as ^[+-]?\d+$ strings, numbers, booleans only
 * 0/1 — or JSON true/false when `json_bools` is set, as since PVE 8.0),
 * format (named formats such as pve-node, pve-vmid, dns-name, urlencoded,
 * pve-configid-list, pve-tag-list, and inline property-string formats such as
 * net[n] or memory), pattern (whole match), maxLength, minLength, minimum,
 * maximum, enum, and `requires`. Indexed families (`net[n]`) accept net0..netN.
 * On failure returns SCHEMA_INVALID and sets one message per failing parameter
 * in `errors` (a JSON object of strings, texts byte-identical to PVE's,
 * e.g. "type check ('integer') failed - got 'abc'").
 * `params` is not modified. */
int schema_check_params(const schema_method *m, json_t *params, bool json_bools, json_t *errors);

/* Check a handler's result against the method's `returns` schema with the
 * same rules (PVE's own return verification is lenient in the same way: an
 * integer may be a numeric string). Returns true when valid; otherwise false
 * and *err (caller frees) says which member failed and why, e.g.
 * "data[0].vmid: type check ('integer') failed - got 'x'". */
bool schema_check_returns(const schema_method *m, json_t *data, char **err);

/* Validate one value against one property schema (a member of `properties`),
 * as above. Returns NULL when valid, else a message the caller frees. */
char *schema_check_value(json_t *prop_schema, json_t *value, bool json_bools);

#endif
