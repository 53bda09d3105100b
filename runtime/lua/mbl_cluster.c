/*
 * mbl_cluster.c — joining a cluster from Lua and from mbrun (SPEC §6):
 * mb.setup{cluster = {...}}'s table, the one join (mbL_cluster_join) that
 * mbrun's --nats and configuration use too, the ids users see on a node of
 * a cluster ("NODE:hex"), and the reports of the link. Uses
 * runtime/cluster/mb_cluster.h. Tests: the specs in spec/cluster.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbl_private.h"

static void on_report(void *ud, const char *line) { mbL_report(ud, "%s\n", line); }

static void on_state(void *ud, int up) {
  mbL_runtime *R = ud;
  if (up)
    mbL_report(R, "mb: cluster: connected again to %s\n", mb_cluster_url(R->cluster));
  else
    mbL_report(R, "mb: cluster: connection to %s lost; sends and requests to cluster "
                  "destinations return closed until it is back\n",
               mb_cluster_url(R->cluster));
}

int mbL_cluster_join(mbL_runtime *R, const mb_cluster_config *cfg, char *err, size_t errlen) {
  if (R->cluster) {
    snprintf(err, errlen, "this node is in a cluster already (node %s)",
             mb_cluster_node(R->cluster));
    return -1;
  }
  mb_cluster_config c = *cfg;
  c.report = on_report;
  c.state = on_state;
  c.ud = R;
  R->cluster = mb_cluster_start(R->rt, &c, err, errlen);
  return R->cluster ? 0 : -1;
}

void mbL_cluster_leave(mbL_runtime *R) {
  mb_cluster_stop(R->cluster);
  R->cluster = NULL;
}

/* The string under key of table t, or NULL; raises for another type. */
static const char *opt_string(lua_State *L, int t, const char *key, const char *where) {
  int ty = lua_getfield(L, t, key);
  const char *s = NULL;
  if (ty == LUA_TSTRING)
    s = lua_tostring(L, -1); /* stays anchored in the table */
  else if (ty != LUA_TNIL)
    luaL_error(L, "%s: option '%s' must be a string (got %s)", where, key, lua_typename(L, ty));
  lua_pop(L, 1);
  return s;
}

int mbL_cluster_setup(lua_State *L, int t, mbL_runtime *R, const char *fn) {
  static const char *const keys[] = {"url", "namespace", "node", "user", "password",
                                     "token", "creds", "tls", NULL};
  static const char *const tls_keys[] = {"ca", "cert", "key", NULL};
  char where[64], err[600];
  t = lua_absindex(L, t);
  snprintf(where, sizeof where, "%s: cluster", fn);
  mbL_check_keys(L, t, keys, where);
  mb_cluster_config cfg = {0};
  cfg.url = opt_string(L, t, "url", where);
  if (!cfg.url) return luaL_error(L, "%s: option 'url' is missing (e.g. \"nats://127.0.0.1:4222\")", where);
  cfg.ns = opt_string(L, t, "namespace", where);
  cfg.node = opt_string(L, t, "node", where);
  cfg.user = opt_string(L, t, "user", where);
  cfg.password = opt_string(L, t, "password", where);
  cfg.token = opt_string(L, t, "token", where);
  cfg.creds = opt_string(L, t, "creds", where);
  int ty = lua_getfield(L, t, "tls");
  if (ty == LUA_TTABLE) {
    snprintf(where, sizeof where, "%s: cluster.tls", fn);
    mbL_check_keys(L, -1, tls_keys, where);
    cfg.tls_ca = opt_string(L, -1, "ca", where);
    cfg.tls_cert = opt_string(L, -1, "cert", where);
    cfg.tls_key = opt_string(L, -1, "key", where);
  } else if (ty != LUA_TNIL) {
    return luaL_error(L, "%s: option 'tls' must be a table {ca =, cert =, key =}", where);
  }
  /* the strings stay anchored in the tables on the stack while joining */
  if (mbL_cluster_join(R, &cfg, err, sizeof err))
    return luaL_error(L, "%s: cluster: %s", fn, err);
  lua_pop(L, 1);
  return 0;
}


int mbL_foreign_id(const mbL_runtime *R, const char *s, size_t len) {
  const char *colon = R->cluster ? memchr(s, ':', len) : NULL;
  if (!colon || colon == s) return 0;
  size_t nl = (size_t)(colon - s);
  const char *node = mb_cluster_node(R->cluster);
  uint64_t id;
  if (nl == strlen(node) && memcmp(s, node, nl) == 0) return 0;
  return mb_id_parse(colon + 1, len - nl - 1, &id) == 0;
}

int mbL_parse_id(const mbL_runtime *R, const char *s, size_t len, uint64_t *id) {
  if (R->cluster) {
    const char *node = mb_cluster_node(R->cluster);
    size_t nl = strlen(node);
    if (len > nl && s[nl] == ':' && memcmp(s, node, nl) == 0) {
      s += nl + 1;
      len -= nl + 1;
    }
  }
  return mb_id_parse(s, len, id);
}

uint64_t mbL_opt_group(lua_State *L, int t, mbL_state *S, const char *fn) {
  int ty = lua_getfield(L, t, "group");
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  const char *g = ty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (!g || !mb_cluster_name_valid(g))
    luaL_error(L, "%s: option 'group' must be a name of 1-64 characters of A-Z a-z 0-9 _ -", fn);
  uint64_t key = mb_group_named(core(S), g);
  lua_pop(L, 1);
  if (!key) luaL_error(L, "%s: out of memory", fn);
  return key;
}
