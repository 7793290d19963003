/* perm: PVE's access control as pvesim models it (pve-access-control
 * AccessControl.pm, RPCEnvironment.pm): privileges, the built-in roles of
 * the PVE release served, custom roles, groups of users, ACL entries on
 * paths for users, groups and API tokens, and the effective privileges of a
 * user or token on a path.
 *
 * Semantics (RPCEnvironment `permissions`, AccessControl `roles`):
 * - root@pam holds every privilege, everywhere;
 * - the roles of an id on a path: walking "/", "/a", "/a/b", ... the
 *   entries of the deepest level that names the id win (an entry on a
 *   parent level counts only when it propagates); a user is named by its
 *   own entries and by those of the groups it is a member of, its own
 *   overriding its groups' on the same level (a token only by its own);
 *   NoAccess among them leaves NoAccess alone;
 * - a VM in a pool gets the roles its pool's path gives (never
 *   propagated), unless its own roles hold NoAccess;
 * - a token without privilege separation has its user's privileges; one
 *   with it, its own ACL's intersected with its user's (root@pam's tokens:
 *   their own ACL's alone).
 * Groups (each world's own, as user.cfg holds them) have users as members;
 * the flags or the state file make the members, the API only the groups.
 *
 * "Open" mode: a world (the cluster, or one standalone host: each has its
 * own /etc/pve/user.cfg) without any ACL entry lets every authenticated
 * user and token do everything, as pvesim did before it modelled this.
 *
 * Ownership: perm_new's handle is freed with perm_free; strings passed in
 * are copied. Thread-safety: none; pvesim calls it with s->mu held. */
#ifndef SIM_PERM_H
#define SIM_PERM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct sim_perm;
typedef uint64_t perm_set; /* bit i: privilege perm_priv_name(i) */
/* what an ACL entry names; GET /access/acl's order on a path */
enum perm_ug { PERM_USER, PERM_GROUP, PERM_TOKEN };

/* The privileges known to any release, by index; NULL past the last. */
const char *perm_priv_name(int i);
/* A privilege's bit when the served release knows it, else 0. */
perm_set perm_priv_bit(const struct sim_perm *p, const char *name);

/* pve_version: 7 and 8 serve the 8.x role tables, 9 the 9.x ones.
 * nworlds: 1 for a cluster, one per host when standalone. */
struct sim_perm *perm_new(int pve_version, int nworlds);
void perm_free(struct sim_perm *p);

/* Known API tokens ("user@realm!name"), with or without privilege
 * separation; their users are known users. root@pam always is. */
void perm_add_token(struct sim_perm *p, const char *tokenid, bool privsep);
/* Mark a known token privilege-separated: 0, or -1 when it is not known. */
int perm_set_privsep(struct sim_perm *p, const char *tokenid);
bool perm_token_known(const struct sim_perm *p, const char *tokenid);
bool perm_token_privsep(const struct sim_perm *p, const char *tokenid);

/* Start-up options, applied to every world: --role NAME:PRIV[,PRIV...],
 * --group NAME[:USER[,USER...]] and --acl PATH:UGID:ROLE[,ROLE...]
 * [:nopropagate] (UGID a user, a token or @group: a --group before it).
 * 0, or -1 with *err (the caller frees). */
int perm_opt_role(struct sim_perm *p, const char *spec, char **err);
int perm_opt_group(struct sim_perm *p, const char *spec, char **err);
int perm_opt_acl(struct sim_perm *p, const char *spec, char **err);

/* Does world w have no ACL entry (open mode)? */
bool perm_open(const struct sim_perm *p, int w);

/* The privileges of authid (user or token id) on path in world w, and in
 * *prop those of them that propagate. pools: pvesim's {"pool": {"vms":
 * [vmid...]}} (borrowed, may be NULL). Not open-mode aware: the rules. */
perm_set perm_privs(const struct sim_perm *p, int w, json_t *pools, const char *authid,
                    const char *path, perm_set *prop);

/* The privilege set as {"Priv": 1|0 (propagates)}, a new object. */
json_t *perm_set_json(const struct sim_perm *p, perm_set privs, perm_set prop);
/* Every privilege of the release (Administrator's). */
perm_set perm_all(const struct sim_perm *p);

/* PVE's normalize_path: NULL when invalid, else a string the caller frees. */
char *perm_normalize_path(const char *path);
/* PVE's check_path: a path an ACL entry may name. */
bool perm_check_path(const char *path);
/* The pool (an id of pvesim's pools object: {id: {"vms": [vmid...]}}) that
 * vmid is in, borrowed from pools; NULL when none. */
const char *perm_pool_of(json_t *pools, long long vmid);

/* --- the access API (h_access.c) ------------------------------------- */
/* GET /access/acl: every entry as {path, type, ugid, roleid, propagate}. */
json_t *perm_acl_list(const struct sim_perm *p, int w);
/* Every path the ACL tree holds (entries and their parents), sorted as
 * iterate_acl_tree walks them: a new array of strings. */
json_t *perm_acl_paths(const struct sim_perm *p, int w);
/* PUT /access/acl for one role and one user, group (its name, without
 * '@') or token: add (or with del, remove) the entry. -1 with *err when
 * the role does not exist. */
int perm_acl_set(struct sim_perm *p, int w, const char *path, enum perm_ug type, const char *ugid,
                 const char *role, bool propagate, bool del, char **err);
/* Does the role exist in world w? Its privileges in *privs. */
bool perm_role_get(const struct sim_perm *p, int w, const char *role, perm_set *privs);
/* GET /access/roles: [{roleid, privs, special}] */
json_t *perm_roles_list(const struct sim_perm *p, int w);
/* POST /access/roles: 0, or -1 with *err (PVE's text, without newline):
 * "role 'X' already exists", "invalid privilege 'Y'". */
int perm_role_add(struct sim_perm *p, int w, const char *role, const char *privs, char **err);
/* Is the role one of the release's own (role_is_special)? */
bool perm_role_special(const struct sim_perm *p, int w, const char *role);
/* PUT /access/roles/{roleid}: the role's privileges become privs (with
 * append: privs are added). DELETE: the role goes, and every ACL entry
 * naming it (PVE reads user.cfg without them). 0, or -1 with *err: "role
 * 'X' does not exist", "invalid privilege 'Y'". Built-in roles are the
 * caller's to refuse. */
int perm_role_update(struct sim_perm *p, int w, const char *role, const char *privs, bool append,
                     char **err);
int perm_role_del(struct sim_perm *p, int w, const char *role, char **err);
/* Groups (API2/Group.pm): GET /access/groups' entries {groupid, users,
 * comment?}, sorted; one group's {members, comment?} (NULL when there is
 * none of that name); POST (-1 with *err "group 'X' already exists"), the
 * comment of PUT, DELETE, which removes the group's ACL entries too (-1
 * with *err "group 'X' does not exist"). A comment Perl finds false ("",
 * "0") is none. */
bool perm_group_exists(const struct sim_perm *p, int w, const char *group);
json_t *perm_groups_list(const struct sim_perm *p, int w);
json_t *perm_group_get(const struct sim_perm *p, int w, const char *group);
int perm_group_add(struct sim_perm *p, int w, const char *group, const char *comment, char **err);
int perm_group_set_comment(struct sim_perm *p, int w, const char *group, const char *comment,
                           char **err);
int perm_group_del(struct sim_perm *p, int w, const char *group, char **err);
/* Is the user known (root@pam, a token's user, one an --acl or a --group
 * names)? */
bool perm_user_known(const struct sim_perm *p, const char *userid);

/* --- the state file (state.c) ------------------------------------------ */
/* How many worlds there are. */
int perm_nworlds(const struct sim_perm *p);
/* The API changed world w's ACL, roles or groups: from now on the state
 * file keeps them (as /etc/pve/user.cfg would), and a restart starts from
 * them. */
void perm_touch(struct sim_perm *p, int w);
/* World w's ACL, custom roles and groups as the state file keeps them, a
 * new {"roles": [{roleid, privs}], "groups": [{groupid, members,
 * comment?}], "acl": [GET /access/acl's entries]}; NULL when the API never
 * changed them (the flags make them at every start). */
json_t *perm_world_state(const struct sim_perm *p, int w);
/* World w's ACL, custom roles and groups replaced by saved ones
 * (perm_world_state's form), as the flags made them at start (a saved
 * world without "groups", from before they were kept: the flags' groups
 * stay); what this start cannot hold (a token no --token gives, a role or
 * group that does not exist, a privilege of another release) is left out
 * and logged. The world is then kept. */
void perm_world_load(struct sim_perm *p, int w, json_t *saved);

#endif
