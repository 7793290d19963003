/* config_int: what config.c (the reader, the key table, the whole-file
 * checks) and config_values.c (the value parsers and validators of single
 * keys) share. Not for use outside src/core/config*.c.
 * Every function here is pure: no state, any thread. */
#ifndef CORE_CONFIG_INT_H
#define CORE_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PVE_PORT 8006

/* A bounded copy: false (dst untouched) when src does not fit. */
bool cfg_copy_str(char *dst, size_t size, const char *src);
/* yes/no, true/false, on/off, 1/0 (any case). */
bool cfg_parse_bool(const char *v, bool *out);
/* "lo-hi", each in [min, max], lo <= hi; false with the reason in why. */
bool cfg_parse_range(const char *v, int64_t min, int64_t max, int *lo, int *hi, char *why,
                     size_t n);
/* "host:port", "[v6]:port", and without the port when `port` is given (the
 * port to assume). Writes the normalised "host:port" to out. */
bool cfg_parse_hostport(const char *v, int port, char *out, size_t outlen, char *why, size_t n);

/* Validators of the key table: true when v is acceptable for the key, else
 * false with the reason in why. */
bool cfg_v_listen(const char *v, char *why, size_t n);
bool cfg_v_database(const char *v, char *why, size_t n);
bool cfg_v_log_format(const char *v, char *why, size_t n);
bool cfg_v_clone(const char *v, char *why, size_t n);
bool cfg_v_log_level(const char *v, char *why, size_t n);
bool cfg_v_tag(const char *v, char *why, size_t n);
bool cfg_v_drift(const char *v, char *why, size_t n);
bool cfg_v_token(const char *v, char *why, size_t n);
bool cfg_v_user(const char *v, char *why, size_t n);
bool cfg_v_fingerprint(const char *v, char *why, size_t n);
bool cfg_v_storage(const char *v, char *why, size_t n);
bool cfg_v_cluster(const char *v, char *why, size_t n);
bool cfg_v_url(const char *v, char *why, size_t n);
bool cfg_v_secret(const char *v, char *why, size_t n);
bool cfg_v_event_types(const char *v, char *why, size_t n);
bool cfg_v_node_state(const char *v, char *why, size_t n);

#endif
