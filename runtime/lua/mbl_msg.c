/*
 * mbl_msg.c — messages in the `mb` module: mb.send, mb.request,
 * mb.request_all, mb.listen, mb.reply, what a listener's handler returns,
 * and mb.json.
 *
 * Owns: the listener handles (userdata "mb.Listener", one release path,
 * mbL_listener_release). Uses the value layer (mbl_value.c), tasks and
 * waiters (mbl_task.c), share = true (mbl_share.c), the core's send,
 * request and delivery calls.
 * Tests: the busted specs in spec/ (send, request, reply, listen, JSON).
 */
#include "mbl_private.h"

/* ---- messages out: payload, values, options -------------------------------------- */

typedef struct send_opts {
  int json;
  const char *reply_to;
  double timeout;
  int has_values;
  int confirm; /* mb.send: wait until a node of the cluster has it */
} send_opts;

static void read_send_opts(lua_State *L, int idx, send_opts *o, int request, const char *fn) {
  static const char *const send_keys[] = {"values", "reply_to", "format", "confirm", "timeout",
                                          NULL};
  static const char *const req_keys[] = {"values", "reply_to", "format", "timeout", NULL};
  static const char *const formats[] = {"table", "json", NULL};
  memset(o, 0, sizeof *o);
  o->timeout = 10;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  mbL_check_keys(L, idx, request ? req_keys : send_keys, fn);
  o->json = mbL_opt_enum(L, idx, "format", formats, 0, fn);
  if (lua_getfield(L, idx, "reply_to") != LUA_TNIL) {
    o->reply_to = mbL_check_dest(L, lua_gettop(L), fn);
  }
  lua_pop(L, 1); /* the string stays alive in the options table */
  int t = lua_getfield(L, idx, "values");
  if (t != LUA_TNIL && t != LUA_TTABLE) luaL_error(L, "%s: option 'values' must be a table", fn);
  o->has_values = t == LUA_TTABLE; /* its keys are checked where it is encoded (build_msg) */
  lua_pop(L, 1);
  /* mb.send: the timeout of a send that waits for the cluster */
  if (lua_getfield(L, idx, "timeout") != LUA_TNIL)
    o->timeout = mbL_check_seconds(L, -1, fn, "option 'timeout'", SECS_NO_LIMIT);
  lua_pop(L, 1);
  if (!request) {
    int ct = lua_getfield(L, idx, "confirm");
    if (ct != LUA_TNIL && ct != LUA_TBOOLEAN)
      luaL_error(L, "%s: option 'confirm' must be true or false", fn);
    o->confirm = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
}

#define MBL_HEADERS 1024 /* room for mb's NATS headers (runtime/cluster/mb_cluster.h) */

/* Builds the message for payload at pidx with options at oidx; raises on a
 * payload or values that cannot be sent (values with a key that is not a
 * string included). */
static mb_msg *build_msg(lua_State *L, mbL_state *S, int pidx, int oidx, const send_opts *o,
                         const char *fn, int cluster) {
  char err[700];
  size_t max = mb_runtime_max_message_size(core(S));
  S->buf.len = 0;
  S->vbuf.len = 0;
  if (o->json) {
    size_t len;
    if (lua_type(L, pidx) != LUA_TSTRING)
      luaL_error(L, "%s: a format = \"json\" payload must be a JSON string, not a %s", fn,
                 luaL_typename(L, pidx));
    const char *text = lua_tolstring(L, pidx, &len);
    if (mb_json_decode(text, len, MB_MAX_DEPTH, &S->buf, err, sizeof err))
      luaL_error(L, "%s: payload: %s", fn, err);
  } else if (mbL_encode(L, pidx, &S->buf, max, "payload", err, sizeof err)) {
    luaL_error(L, "%s: %s", fn, err);
  }
  if (o->has_values) {
    /* message values have string keys (SPEC 2), whichever call built the
     * message: mb.send, mb.request, mb.request_all or mb.reply */
    lua_getfield(L, oidx, "values");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "%s: values keys must be strings (found a %s key)", fn,
                   luaL_typename(L, -2));
      lua_pop(L, 1);
    }
    if (mbL_encode(L, -1, &S->vbuf, max, "values", err, sizeof err))
      luaL_error(L, "%s: %s", fn, err);
    lua_pop(L, 1);
  }
  if (S->buf.len + S->vbuf.len > max)
    luaL_error(L, "%s: message too large (over %d bytes, the max_message_size)", fn, (int)max);
  if (cluster > 0) { /* it must fit the NATS server's max_payload, with mb's headers */
    size_t np = mb_cluster_max_payload(S->R->cluster);
    if (np > MBL_HEADERS && S->buf.len + S->vbuf.len > np - MBL_HEADERS)
      luaL_error(L, "%s: message too large for the cluster (over %d bytes: the NATS server's "
                    "max_payload of %d less %d for mb's headers)", fn, (int)(np - MBL_HEADERS),
                 (int)np, MBL_HEADERS);
  }
  mb_msg *m = mb_msg_new(S->buf.p, S->buf.len, o->has_values ? S->vbuf.p : NULL, S->vbuf.len,
                         o->reply_to);
  if (!m) luaL_error(L, "%s: out of memory", fn);
  return m;
}

/* ---- send -------------------------------------------------------------------------- */

/* The destination of mb.send and mb.request at idx (mbL_check_dest),
 * checked once per string: S->dest_seen is the name found valid last,
 * anchored in the registry (under its own address), so that no other
 * string can have its bytes while it is there. A send checks its name in
 * about a tenth of the time (issue 17). */
static const char *check_dest_seen(lua_State *L, mbL_state *S, int idx, const char *fn) {
  const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  if (name && name == S->dest_seen) return name;
  name = mbL_check_dest(L, idx, fn);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &S->dest_seen);
  S->dest_seen = name;
  return name;
}

/* Is S running a listener's handler? What it sends then is part of the work
 * in flight (mb_msg_follow_up). */
static int in_handler(const mbL_state *S) { return S->current && S->current->kind == T_HANDLER; }

static void send_done(void *ud, int status) {
  mbL_waiter *w = ud;
  w->status = status;
  mbL_waiter_wake(w);
}

static int send_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  int rc = w->status;
  mbL_waiter_free(w);
  /* stack: dest, payload, opts, id */
  if (rc < 0) return mbL_fail_rc(L, rc, lua_tostring(L, 1), state_of(L));
  lua_settop(L, 4);
  return 1;
}


/* The end of a send that waited: the id (stack: dest, payload, opts, id),
 * or nil and error (which w may hold: pushed before w is freed). */
static int send_waited(lua_State *L, mbL_waiter *w, const char *error) {
  if (error) {
    lua_pushnil(L);
    lua_pushstring(L, error);
  }
  mbL_waiter_free(w);
  if (error) return 2;
  lua_settop(L, 4);
  return 1;
}

/* A send that waited for the cluster (confirm, or a synchronous cluster
 * destination): the id, or nil and why. stack: dest, payload, opts, id. */
static int send_confirmed_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  const char *error = w->n ? NULL : "failed: out of memory";
  for (size_t i = 0; i < w->n && !error; i++) /* a group that ran it and failed still ran it */
    if (w->ans[i].status != MB_OK && w->ans[i].status != MB_EFAILED)
      error = w->ans[i].error ? w->ans[i].error : mb_strerror(w->ans[i].status);
  return send_waited(L, w, error);
}

/* A send to a durable destination: the id once stored, or nil and why
 * (its failure is the server's: "failed: ..."). stack: dest, payload, opts, id. */
static int send_stored_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  const char *error = w->n ? NULL : "failed: out of memory";
  if (w->n && w->ans[0].status != MB_OK)
    error = w->ans[0].error ? w->ans[0].error : mb_strerror(w->ans[0].status);
  return send_waited(L, w, error);
}

static void push_payload(lua_State *L, const mb_msg *m) {
  size_t len;
  const uint8_t *p = mb_msg_payload(m, &len);
  mbL_decode_cached(L, p, len);
}

static int l_send(lua_State *L) {
  mbL_state *S = state_of(L);
  const char *dest = check_dest_seen(L, S, 1, "mb.send");
  send_opts o;
  lua_settop(L, 3);
  read_send_opts(L, 3, &o, 0, "mb.send");
  int cluster = S->R->cluster ? mb_dest_cluster(core(S), dest) : 0;
  if (o.confirm && cluster < 1 && cluster != -1)
    return luaL_error(L, "mb.send: option 'confirm' is for cluster destinations ('%s' is not one)",
                      dest);
  mb_msg *m = build_msg(L, S, 2, 3, &o, "mb.send", cluster);
  uint64_t id = mb_msg_id(m);
  mbL_waiter *w = mbL_waiter_new(S);
  if (!w) {
    mb_msg_unref(m);
    return luaL_error(L, "mb.send: out of memory");
  }
  if (in_handler(S)) mb_msg_follow_up(m);
  mbL_sending sending;
  int share = mbL_share_before(L, S, m, 2, o.json, &sending);
  if (o.confirm || cluster >= 2) { /* synchronous, or durable: returns once stored */
    int rc = mb_send_confirmed(S->svc, dest, m, o.timeout, mbL_request_done, w, &w->req);
    if (share) mbL_share_after(L, S, &sending);
    if (rc < 0) {
      mbL_waiter_free(w);
      return mbL_fail_rc(L, rc, dest, S);
    }
    mbL_push_id(L, S->R, id);
    return mbL_wait_for(L, w, cluster == 3 ? send_stored_k : send_confirmed_k);
  }
  int rc = mb_send(S->svc, dest, m, send_done, w);
  if (share) mbL_share_after(L, S, &sending);
  if (rc == MB_PENDING) {
    mbL_push_id(L, S->R, id);
    return mbL_wait_for(L, w, send_k);
  }
  mbL_waiter_free(w);
  if (rc < 0) return mbL_fail_rc(L, rc, dest, S);
  mbL_push_id(L, S->R, id);
  return 1;
}

/* ---- request ----------------------------------------------------------------------- */

void mbL_request_done(void *ud, const mb_answer *a, size_t n) {
  mbL_waiter *w = ud;
  w->req = NULL;
  /* one answer (mb.request) is kept in the waiter itself: no allocation */
  w->ans = n == 1 ? &w->one : n ? calloc(n, sizeof *w->ans) : NULL;
  if (w->ans) {
    w->n = n;
    for (size_t i = 0; i < n; i++) {
      w->ans[i].status = a[i].status;
      w->ans[i].reply = a[i].reply ? mb_msg_ref((mb_msg *)a[i].reply) : NULL;
      w->ans[i].error = a[i].error ? strdup(a[i].error) : NULL;
    }
  }
  mbL_waiter_wake(w);
}



static int request_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  if (w->n == 0) {
    mbL_waiter_free(w);
    lua_pushnil(L);
    lua_pushstring(L, "failed: out of memory");
    return 2;
  }
  if (w->ans[0].status == MB_OK) {
    /* decoded once: the reply payload is also the reply message's */
    push_payload(L, w->ans[0].reply);
    mbL_push_msg(L, w->ans[0].reply, 0, -1, mbL_node(w->S));
  } else {
    lua_pushnil(L);
    lua_pushstring(L, w->ans[0].error ? w->ans[0].error : "failed");
  }
  mbL_waiter_free(w);
  return 2;
}

static int request_all_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  lua_createtable(L, (int)w->n, 0);
  for (size_t i = 0; i < w->n; i++) {
    lua_createtable(L, 0, 2);
    if (w->ans[i].status == MB_OK) {
      push_payload(L, w->ans[i].reply);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, "payload");
      mbL_push_msg(L, w->ans[i].reply, 0, -1, mbL_node(w->S)); /* the same payload table */
      lua_setfield(L, -3, "msg");
      lua_pop(L, 1);
    } else {
      lua_pushstring(L, w->ans[i].error ? w->ans[i].error : "failed");
      lua_setfield(L, -2, "error");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  mbL_waiter_free(w);
  return 1;
}

static int do_request(lua_State *L, int all) {
  const char *fn = all ? "mb.request_all" : "mb.request";
  mbL_state *S = state_of(L);
  const char *dest = check_dest_seen(L, S, 1, fn);
  send_opts o;
  lua_settop(L, 3);
  read_send_opts(L, 3, &o, 1, fn);
  int cluster = S->R->cluster ? mb_dest_cluster(core(S), dest) : 0;
  if (cluster == 3)
    return luaL_error(L, "%s: '%s' is a durable destination: it takes sends (mb.send), not "
                         "requests", fn, dest);
  mb_msg *m = build_msg(L, S, 2, 3, &o, fn, cluster);
  mbL_waiter *w = mbL_waiter_new(S);
  if (!w) {
    mb_msg_unref(m);
    return luaL_error(L, "%s: out of memory", fn);
  }
  if (in_handler(S)) mb_msg_follow_up(m);
  mbL_sending sending;
  int share = mbL_share_before(L, S, m, 2, o.json, &sending);
  int rc = mb_request_start(S->svc, dest, m, o.timeout, all, mbL_request_done, w, &w->req);
  if (share) mbL_share_after(L, S, &sending);
  if (rc < 0) {
    mbL_waiter_free(w);
    return mbL_fail_rc(L, rc, dest, S);
  }
  return mbL_wait_for(L, w, all ? request_all_k : request_k);
}

static int l_request(lua_State *L) { return do_request(L, 0); }
static int l_request_all(lua_State *L) { return do_request(L, 1); }

/* Decodes the JSON text at 1 through buffer b and pushes the value. */
static int json_decode_into(lua_State *L, mb_buf *b) {
  char err[700];
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  b->len = 0;
  if (mb_json_decode(s, len, 1000, b, err, sizeof err))
    return luaL_error(L, "mb.json.decode: %s", err);
  mbL_decode(L, b->p, b->len);
  return 1;
}

/* json_decode_into for a protected call: (text, buffer). */
static int json_decode_raw(lua_State *L) { return json_decode_into(L, lua_touserdata(L, 2)); }

/* ---- listening ------------------------------------------------------------------------ */

/* SPEC 7, "a reply that cannot be delivered": the reason goes to stderr,
 * and the delivery being answered, while still open, ends failed (the core
 * marked it already when the send failed at once; this marks it when a
 * send that waited failed). */
static void reply_undelivered(mbL_waiter *w, int rc) {
  char err[400];
  snprintf(err, sizeof err, "failed: reply to '%s' not delivered: %s", w->reply_to,
           rc == MB_ENODEST        ? "no_destination: no such destination"
           : rc == MB_ENOLISTENERS ? "no_listeners: it has no listeners"
           : rc == MB_EFULL        ? "queue_full: its queue is full"
           : rc == MB_ENOMEM       ? "out of memory"
                                   : "closed: it takes no messages");
  if (w->dv) {
    mb_delivery_fail(w->dv, err);
    const mb_msg *m = mb_delivery_msg(w->dv);
    char id[17];
    mb_id_format(mb_msg_id(m), id);
    mbL_report(w->S->R, "mb: listener at '%s': %s; delivery of message %s counted as failed\n",
           mb_msg_destination(m), err + 8, id);
  } else {
    mbL_report(w->S->R, "mb: %s\n", err + 8);
  }
}

static int reply_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_waiter *w = (mbL_waiter *)ctx;
  int rc = w->status;
  if (rc < 0 && w->reply_to) reply_undelivered(w, rc);
  mbL_waiter_free(w);
  lua_pushinteger(L, rc);
  return 1;
}

/* The open delivery of message id that the running handler of S answers,
 * or NULL. */
static mb_delivery *answering(mbL_state *S, uint64_t id) {
  mbL_task *t = S->current;
  return t && t->kind == T_HANDLER && t->d && mb_msg_id(mb_delivery_msg(t->d)) == id ? t->d
                                                                                      : NULL;
}

/* Replies with the payload at pidx (values table at vidx, or 0) to the
 * message id sent to dest with reply_to; waits while the reply_to send
 * waits. Leaves the MB_* result code on the stack; raises on a payload that
 * cannot be sent. A reply that cannot be delivered to reply_to fails the
 * delivery being answered (reply_undelivered). */
static int reply_with(lua_State *L, mbL_state *S, const char *dest, uint64_t id,
                      const char *reply_to, uint64_t group, int pidx, int vidx,
                      const char *fn, lua_KFunction k) {
  send_opts o;
  memset(&o, 0, sizeof o);
  int oidx = 0;
  if (vidx && !lua_isnoneornil(L, vidx)) {
    luaL_checktype(L, vidx, LUA_TTABLE);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, vidx);
    lua_setfield(L, -2, "values");
    oidx = lua_gettop(L);
    o.has_values = 1;
  }
  mb_msg *reply = build_msg(L, S, pidx, oidx, &o, fn, 0);
  mbL_waiter *w = mbL_waiter_new(S);
  if (!w) {
    mb_msg_unref(reply);
    return luaL_error(L, "%s: out of memory", fn);
  }
  w->dv = answering(S, id);
  w->reply_to = reply_to;
  int rc = w->dv ? mb_delivery_reply(w->dv, reply, send_done, w)
                 : mb_reply_id(S->svc, dest, id, reply_to, group, reply, send_done, w);
  if (rc == MB_PENDING) return mbL_wait_for(L, w, k);
  w->status = rc;
  return k(L, LUA_OK, (lua_KContext)w);
}

static int handler_done_k(lua_State *L, int status, lua_KContext ctx) {
  reply_k(L, status, ctx);
  return 0;
}

static int handler_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  mbL_task *t = (mbL_task *)ctx;
  const mb_msg *m = mb_delivery_msg(t->d);
  if (lua_isnil(L, -1) || !mb_msg_expects_reply(m)) return 0;
  return reply_with(L, t->S, mb_msg_destination(m), mb_msg_id(m), mb_msg_reply_to(m),
                    mb_delivery_group(t->d), lua_gettop(L), 0, "reply", handler_done_k);
}

/* The body of a handler's coroutine: listener handle, fn, task (in the
 * order on_delivery pushes them). Builds the message inside the coroutine
 * so that every error is caught by its resume. */
int mbL_handler_body(lua_State *L) {
  /* 1: the listener handle, kept; 2: the handler; 3: the task */
  mbL_task *t = lua_touserdata(L, 3);
  const mb_msg *m = mb_delivery_msg(t->d);
  if (t->listener->json) {
    char err[700];
    mbL_state *S = t->S;
    S->buf.len = 0;
    if (mb_msg_to_json(m, mbL_node(S), &S->buf, err, sizeof err))
      return luaL_error(L, "cannot give the message as JSON: %s", err);
    lua_pushvalue(L, 2);
    lua_pushlstring(L, (const char *)S->buf.p, S->buf.len);
  } else {
    lua_getiuservalue(L, 1, 2); /* 4: the destination's name */
    int shared = mbL_share_push(L, t->S, m) ? lua_gettop(L) : 0; /* 5: the sender's payload */
    lua_pushvalue(L, 2);
    mbL_push_msg(L, m, 4, shared, mbL_node(t->S));
    /* mb.reply(msg) answers for this group: only a request_all's answers
     * go by group (a request takes the first reply, whoever gives it), and
     * a request from another node needs its id here (another node's other
     * messages expect no reply: l_reply knows them by their id); a weak
     * table's entry costs about 700 instructions a request, 1,500 a message
     * at a cluster's listener node (its collection included) */
    if (mb_msg_answers_all(m) || (mb_msg_origin(m) && mb_msg_is_request(m))) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, t->S->groups);
      lua_pushvalue(L, -2);
      lua_pushinteger(L, (lua_Integer)mb_delivery_group(t->d));
      if (mb_msg_origin(m)) { /* from another node: its id here is not the one it shows */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, (lua_Integer)mb_msg_id(m));
        lua_rawseti(L, -2, 2);
      }
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
  /* handler, message */
  lua_callk(L, 1, 1, (lua_KContext)t, handler_k);
  return handler_k(L, LUA_OK, (lua_KContext)t);
}

static void on_delivery(void *ud, mb_delivery *d) {
  mbL_listener *ls = ud;
  mbL_state *S = ls->S;
  const char *aborted = atomic_load(&S->R->abort_why); /* shutting down: none starts */
  mbL_task *t = S->stopping || aborted ? NULL : mbL_task_new(S, T_HANDLER);
  if (!t) {
    mb_delivery_done(d, S->stopping || aborted ? MB_EDROPPED : MB_EFAILED,
                     aborted     ? "dropped: shutting down"
                     : S->stopping ? "dropped: service stopping"
                                   : "failed: out of memory");
    return;
  }
  t->d = d;
  t->listener = ls;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, S->body_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, ls->self_ref); /* ls lives while the handler runs */
  lua_getiuservalue(co, -1, 1);
  lua_pushlightuserdata(co, t); /* body, handle, handler, task */
  mbL_task_run(t, 3);
}

static void on_listener_closed(void *ud);

/* The group key of S's next listener at dest when S is an instance of a
 * load (base: S->group_key, not a named group's), and its slot: the
 * lowest k that none of S's open listeners at dest holds. The k-th
 * listener at dest of every instance of the load — also of the instances
 * a reload starts — has the same key, so those listeners form one group;
 * the first free k, not a count of mb.listen calls, so that an instance
 * that closed a listener and listened again stays in its group with the
 * others (and with a reload's new instances). FNV-1a over base, k and the
 * name, never 0 nor with MB_GROUP_NAMED set. Raises when out of memory. */
static uint64_t listen_key(lua_State *L, mbL_state *S, uint64_t base, const char *dest,
                           unsigned *slot) {
  size_t n = 0;
  for (mbL_listener *ls = S->listeners; ls; ls = ls->next)
    n += ls->slot && !strcmp(ls->dest, dest);
  unsigned char stack_used[64], *used = stack_used; /* used[k-1]: slot k is taken */
  if (n + 1 > sizeof stack_used && !(used = calloc(n + 1, 1)))
    luaL_error(L, "mb.listen: out of memory");
  if (used == stack_used) memset(used, 0, sizeof stack_used);
  for (mbL_listener *ls = S->listeners; ls; ls = ls->next)
    if (ls->slot && ls->slot <= n && !strcmp(ls->dest, dest)) used[ls->slot - 1] = 1;
  unsigned k = 1;
  while (k <= n && used[k - 1]) k++;
  if (used != stack_used) free(used);
  *slot = k;
  uint64_t h = UINT64_C(14695981039346656037);
  uint64_t parts[2] = {base, (uint64_t)k};
  const unsigned char *p = (const unsigned char *)parts;
  for (size_t i = 0; i < sizeof parts; i++) h = (h ^ p[i]) * UINT64_C(1099511628211);
  for (p = (const unsigned char *)dest; *p; p++) h = (h ^ *p) * UINT64_C(1099511628211);
  h &= ~MB_GROUP_NAMED;
  return h ? h : 1;
}

static int l_listen(lua_State *L) {
  static const char *const keys[] = {"format", "group", NULL};
  static const char *const formats[] = {"table", "json", NULL};
  mbL_state *S = state_of(L);
  const char *dest = mbL_check_dest(L, 1, "mb.listen");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int json = 0;
  uint64_t group = S->group_key;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    mbL_check_keys(L, 3, keys, "mb.listen");
    json = mbL_opt_enum(L, 3, "format", formats, 0, "mb.listen");
    uint64_t named = mbL_opt_group(L, 3, S, "mb.listen");
    if (named) group = named;
  }
  unsigned slot = 0;
  if (group && !(group & MB_GROUP_NAMED)) group = listen_key(L, S, group, dest, &slot);
  mbL_listener *ls = lua_newuserdatauv(L, sizeof *ls, 2);
  memset(ls, 0, sizeof *ls);
  ls->slot = slot;
  ls->self_ref = LUA_NOREF;
  luaL_setmetatable(L, "mb.Listener");
  ls->json = json;
  snprintf(ls->dest, sizeof ls->dest, "%s", dest);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  /* anchored before the core knows it (luaL_ref may raise) */
  lua_pushvalue(L, -1);
  ls->self_ref = ref(S, L);
  int err = 0;
  ls->l = mb_listen(S->svc, dest, group, on_delivery, on_listener_closed, ls, &err);
  if (!ls->l) {
    unref(S, L, &ls->self_ref);
    return mbL_fail_rc(L, err, dest, S);
  }
  mb_stats st;
  if ((group & MB_GROUP_NAMED) && S->R->cluster && mb_dest_cluster(core(S), dest) == 1 &&
      mb_dest_stats(core(S), dest, &st) == MB_OK && st.type == MB_SERIAL)
    mbL_report(S->R, "mb: warning: a group across nodes at the serial cluster destination '%s' "
                     "runs one message per node at once, not one in all the cluster "
                     "(for that, a durable destination: doc/cluster.md)\n", dest);
  ls->S = S;
  ls->next = S->listeners;
  if (S->listeners) S->listeners->prev = ls;
  S->listeners = ls;
  S->nlisteners++;
  return 1;
}

/* The one release path of a listener handle. close: close the core
 * listener (l:close(); not when the core closed it, nor when freeing the
 * service closes it); L: where to drop the anchor (NULL: the registry goes
 * with the state). */
void mbL_listener_release(mbL_listener *ls, int close, lua_State *L) {
  mbL_state *S = ls->S;
  if (!S) return;
  if (close) mb_listener_close(ls->l);
  ls->l = NULL;
  ls->S = NULL;
  if (ls->prev)
    ls->prev->next = ls->next;
  else
    S->listeners = ls->next;
  if (ls->next) ls->next->prev = ls->prev;
  S->nlisteners--;
  if (L) unref(S, L, &ls->self_ref);
}

/* The destination was removed: the core closes the listener itself. */
static void on_listener_closed(void *ud) {
  mbL_listener *ls = ud;
  mbL_listener_release(ls, 0, ls->S->L);
}

static int listener_close_l(lua_State *L) {
  mbL_listener_release(luaL_checkudata(L, 1, "mb.Listener"), 1, L);
  return 0;
}

static int l_reply_k(lua_State *L, int status, lua_KContext ctx) {
  reply_k(L, status, ctx);
  int rc = (int)lua_tointeger(L, -1);
  if (rc == MB_ECLOSED && lua_type(L, 5) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushstring(L, "closed: nobody waits for a reply to this message (it has no reply_to, "
                      "and no requester is waiting for it any more)");
    return 2;
  }
  if (rc < 0) return mbL_fail_rc(L, rc, lua_tostring(L, 5), state_of(L));
  lua_pushboolean(L, 1);
  return 1;
}

/* The id here of the message from another node whose handler runs now in
 * S, when its id there is the len bytes at s; else 0. */
static uint64_t running_origin(mbL_state *S, const char *s, size_t len) {
  mbL_task *t = S->current;
  if (!t || t->kind != T_HANDLER || !t->d) return 0;
  const mb_msg *m = mb_delivery_msg(t->d);
  const char *origin = mb_msg_origin(m);
  return origin && strlen(origin) == len && !memcmp(origin, s, len) ? mb_msg_id(m) : 0;
}

/* mb.reply(msg, payload [, values]): msg is a message table or the JSON
 * text a format = "json" listener received. */
static int l_reply(lua_State *L) {
  mbL_state *S = state_of(L);
  lua_settop(L, 3);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushcfunction(L, json_decode_raw);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, &S->vbuf);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_istable(L, -1))
      return luaL_error(L, "mb.reply: argument 1 is not the JSON text of a message");
  } else {
    if (!lua_istable(L, 1))
      return luaL_error(L, "mb.reply: argument 1 must be the message being answered");
    lua_pushvalue(L, 1);
  }
  /* 4: the message table; 5: reply_to; 6: destination; 7: id */
  lua_getfield(L, 4, "reply_to");
  lua_getfield(L, 4, "destination");
  lua_getfield(L, 4, "id");
  size_t idlen;
  const char *ids = lua_tolstring(L, 7, &idlen);
  uint64_t id;
  /* a request from another node is known by its table (its id is the other node's) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->groups);
  lua_pushvalue(L, 1);
  int remote = lua_rawget(L, -2) == LUA_TTABLE;
  if (remote) {
    lua_rawgeti(L, -1, 2);
    id = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  int has_id = ids && lua_type(L, 7) == LUA_TSTRING;
  if (!remote && has_id && !lua_istable(L, 1) && (id = running_origin(S, ids, idlen)))
    remote = 1; /* the JSON text of another node's message, answered while its handler runs */
  if (!remote && (!has_id || mbL_parse_id(S->R, ids, idlen, &id))) {
    if (has_id && !lua_istable(L, 1) && mbL_foreign_id(S->R, ids, idlen))
      return luaL_error(L, "mb.reply: the JSON text of a message from another node can be "
                           "answered only while its handler runs (listen with format = "
                           "\"table\" to answer it later)");
    /* a message table of another node's that is not in the groups table is
     * no request: nobody waits for a reply to it (id 0: none here) */
    if (!has_id || !lua_istable(L, 1) || !mbL_foreign_id(S->R, ids, idlen))
      return luaL_error(L, "mb.reply: argument 1 must be a message (it has no valid id)");
    remote = 1;
    id = 0;
  }
  const char *reply_to = NULL;
  const char *dest = lua_type(L, 6) == LUA_TSTRING ? lua_tostring(L, 6) : NULL;
  /* a reply_to that is no destination name (a table changed by hand) is a
   * programming error, as in mb.send's options: sent nowhere, the reply
   * would be lost without a word. A message from another node has its
   * reply_to used by the link, not here (below). */
  if (!remote && !lua_isnil(L, 5)) {
    if (lua_type(L, 5) != LUA_TSTRING)
      return luaL_error(L, "mb.reply: reply_to: invalid destination name (a %s, not a string) "
                           "(use 1-255 characters of A-Z a-z 0-9 _ . / : -)",
                        luaL_typename(L, 5));
    reply_to = mbL_check_dest(L, 5, "mb.reply: reply_to");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, S->groups);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) == LUA_TTABLE) lua_rawgeti(L, -1, 1);
  lua_Integer group = lua_tointeger(L, -1); /* 0 when unknown */
  lua_settop(L, 7);
  if (remote) { /* the link takes the reply home: not to a destination of this node */
    reply_to = NULL;
    lua_pushnil(L);
    lua_replace(L, 5);
  }
  return reply_with(L, S, dest, id, reply_to, (uint64_t)group, 2, 3, "mb.reply", l_reply_k);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static int l_json_encode(lua_State *L) {
  mbL_state *S = state_of(L);
  char err[700];
  luaL_checkany(L, 1);
  S->buf.len = 0;
  if (mbL_json_encode(L, 1, &S->buf, "value", err, sizeof err))
    return luaL_error(L, "mb.json.encode: %s", err);
  lua_pushlstring(L, (const char *)S->buf.p, S->buf.len);
  return 1;
}

static int l_json_decode(lua_State *L) { return json_decode_into(L, &state_of(L)->buf); }


const luaL_Reg mbL_msg_funcs[] = {
    {"listen", l_listen}, {"send", l_send},   {"request", l_request},
    {"request_all", l_request_all}, {"reply", l_reply}, {NULL, NULL},
};

const luaL_Reg mbL_listener_methods[] = {{"close", listener_close_l}, {NULL, NULL}};

const luaL_Reg mbL_json_funcs[] = {
    {"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
