/* schema_format: the named `format`s of PVE's JSONSchema (pve-vmid, dns-name,
 * urlencoded, ...), Perl's split_list, and the regex engine behind `pattern`.
 * Internal to the schema module (schema.c is the only user).
 *
 * Texts returned are the validators' die messages, byte-identical to PVE's,
 * including their trailing "\n"; the caller prefixes "invalid format - ".
 * All functions are thread-safe; compiled regexes are cached process-wide. */
#ifndef SIM_SCHEMA_FORMAT_H
#define SIM_SCHEMA_FORMAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Perl's `$subject =~ m/^$pattern$/` (the pattern interpolated, not grouped;
 * `(?^:` groups and `{,n}` quantifiers accepted). Returns 1 on a match, 0 on
 * none, -1 when the pattern does not compile. */
int schema_regex_match(const char *pattern, const char *subject, size_t len);

/* PVE::Tools::split_list: split on NUL if the text has one, else on runs of
 * [,; \s]; empty items are dropped. Appends JSON strings to `out`. */
void schema_split_list(const char *text, size_t len, json_t *out);

/* A named property-string format registered as a hash in PVE (such as
 * "pve-qm-ipconfig"), as a borrowed JSON object of sub-properties; NULL when
 * `name` is not one. */
json_t *schema_format_hash(const char *name);

/* Run the validator registered for the single-value format `name` (no -list
 * or -opt suffix). Returns NULL when the value is valid or the format is not
 * one we know (unknown formats are accepted, see schema_format.c), else the
 * die message, which the caller frees. */
char *schema_format_verify(const char *name, const char *value, size_t len);

#endif
