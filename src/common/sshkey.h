/* sshkey: OpenSSH public key lines ("<type> <base64 blob> [comment]"),
 * checked the way `ssh-keygen -l` would accept them: a known type, a blob
 * that decodes, starts with the same type name and holds the fields that type
 * needs (an ed25519 key is 32 bytes). Used by proxd to refuse bad keys before
 * Proxmox does, and by pvesim to refuse them as Proxmox does. Thread-safe. */
#ifndef COMMON_SSHKEY_H
#define COMMON_SSHKEY_H

#include <stdbool.h>
#include <stddef.h>

/* One key line of n bytes (no newline). */
bool sshkey_valid(const char *line, size_t n);

/* Every non-empty line of `keys` (LF or CRLF separated). On failure
 * *bad_line (if given) receives the 1-based number of the first bad line. */
bool sshkeys_valid(const char *keys, int *bad_line);

#endif
