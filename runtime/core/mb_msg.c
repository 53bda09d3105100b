/*
 * mb_msg.c — messages: one allocation holding the header, the encoded
 * payload and values and the reply_to name; reference counted, immutable
 * once sent. A sent message holds its destination's name (mb_name, shared
 * and reference counted), never the destination: what needs the
 * destination holds it itself (a delivery by its listener, a queue by
 * being the destination's). Owns messages and names; uses mb_value.c's
 * encoder and mb_alloc.h. Tests: spec/c/test_runtime.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mb_alloc.h"
#include "mb_core.h"

/* Ids are taken from the shared counter a block at a time by each thread,
 * and messages alive are counted in slots shared by few threads each, so
 * that workers making and freeing messages at once do not fight over one
 * cache line for every message. Ids stay unique; they increase per thread. */
#define ID_BLOCK 64
#define LIVE_SLOTS 16
static _Alignas(64) atomic_uint_fast64_t next_id = 1;
static struct {
  _Alignas(64) atomic_long n;
} live[LIVE_SLOTS];
static atomic_uint live_next;
/* initial-exec: a plain load off the thread pointer, not a call to
 * __tls_get_addr per message (a few bytes of the static TLS that glibc
 * keeps for libraries loaded later, as mb.so is by Lua) */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
  uint64_t id_at, id_end;
  atomic_long *live;
} mine;
_Alignas(64) atomic_int mb_observers;

static inline uint64_t take_id(void) {
  if (mine.id_at == mine.id_end) {
    mine.id_at = atomic_fetch_add_explicit(&next_id, ID_BLOCK, memory_order_relaxed);
    mine.id_end = mine.id_at + ID_BLOCK;
  }
  return mine.id_at++;
}

static inline atomic_long *live_slot(void) {
  if (!mine.live)
    mine.live = &live[atomic_fetch_add_explicit(&live_next, 1, memory_order_relaxed) % LIVE_SLOTS].n;
  return mine.live;
}

long mb_msg_live(void) {
  long n = 0;
  for (int i = 0; i < LIVE_SLOTS; i++) n += atomic_load_explicit(&live[i].n, memory_order_relaxed);
  return n < 0 ? 0 : n; /* read while others make and free some */
}

mb_name *mb_name_new(const char *str, size_t len) {
  mb_name *n = malloc(sizeof *n + len + 1);
  if (!n) return NULL;
  atomic_init(&n->refs, 1);
  n->len = (uint32_t)len;
  memcpy(n->s, str, len);
  n->s[len] = 0;
  return n;
}

void mb_name_unref(mb_name *n) {
  if (n && atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) == 1) free(n);
}

static inline __attribute__((always_inline)) mb_msg *
make(const void *payload, size_t plen, const void *values, size_t vlen, const char *reply_to,
     const char *origin) {
  static const uint8_t nil = MB_V_NIL;
  if (!payload || !plen) {
    payload = &nil;
    plen = 1;
  }
  if (!values) vlen = 0;
  size_t rlen = reply_to ? strlen(reply_to) + 1 : 0; /* with its NUL */
  size_t olen = origin ? strlen(origin) + 1 : 0;
  if (plen > UINT32_MAX || vlen > UINT32_MAX || rlen > 256 || olen > 255) return NULL;
  int observed = atomic_load_explicit(&mb_observers, memory_order_relaxed) > 0;
  size_t extra = (observed ? sizeof(mb_msg_obs) : 0) + (origin ? sizeof(mb_msg_remote) + olen : 0);
  mb_msg *m = mb_malloc(sizeof *m + plen + vlen + rlen + extra);
  if (!m) return NULL;
  atomic_fetch_add_explicit(live_slot(), 1, memory_order_relaxed);
  atomic_init(&m->refs, 1);
  m->flags = (observed ? MB_MSG_OBSERVED : 0) | (origin ? MB_MSG_REMOTE : 0);
  m->spare = (uint8_t)olen;
  m->id = take_id();
  m->response_id = 0;
  m->name = NULL;
  m->plen = (uint32_t)plen;
  m->vlen = (uint32_t)vlen;
  m->rlen = (uint16_t)rlen;
  memcpy(m->data, payload, plen);
  if (vlen) memcpy(m->data + plen, values, vlen);
  if (reply_to) memcpy(m->data + plen + vlen, reply_to, rlen);
  if (observed) memset(m->data + plen + vlen + rlen, 0, sizeof(mb_msg_obs));
  if (origin) {
    uint8_t *t = mb_msg_trailer(m);
    memset(t, 0, sizeof(mb_msg_remote));
    memcpy(t + sizeof(mb_msg_remote), origin, olen);
  }
  return m;
}

mb_msg *mb_msg_new(const void *payload, size_t plen, const void *values, size_t vlen,
                   const char *reply_to) {
  return make(payload, plen, values, vlen, reply_to, NULL); /* inlined: origin's cost folds away */
}

mb_msg *mb_msg_new_remote(const void *payload, size_t plen, const void *values, size_t vlen,
                          const char *reply_to, const char *origin) {
  return origin && *origin ? make(payload, plen, values, vlen, reply_to, origin) : NULL;
}

const char *mb_msg_origin(const mb_msg *m) {
  return (m->flags & MB_MSG_REMOTE) ? (const char *)mb_msg_trailer(m) + sizeof(mb_msg_remote)
                                    : NULL;
}

void mb_msg_durable(mb_msg *m, void *tag, int redelivered) {
  if (!(m->flags & MB_MSG_REMOTE)) return;
  memcpy(mb_msg_trailer(m) + offsetof(mb_msg_remote, tag), &tag, sizeof tag);
  if (redelivered) m->flags |= MB_MSG_REDELIVERED;
}

int mb_msg_redelivered(const mb_msg *m) { return (m->flags & MB_MSG_REDELIVERED) != 0; }

mb_msg *mb_msg_copy(const mb_msg *m) {
  mb_msg *c = make(m->data, m->plen, m->data + m->plen, m->vlen, mb_msg_reply_to(m),
                   mb_msg_origin(m));
  if (c) c->response_id = m->response_id;
  return c;
}

mb_msg *mb_msg_ref(mb_msg *m) {
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
  return m;
}

void mb_msg_unref(mb_msg *m) {
  if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
  if (m->name) mb_name_unref(m->name);
  atomic_fetch_sub_explicit(live_slot(), 1, memory_order_relaxed);
  mb_free(m);
}

uint64_t mb_msg_id(const mb_msg *m) { return m->id; }
void mb_msg_follow_up(mb_msg *m) { m->flags |= MB_MSG_FOLLOW_UP; }
uint64_t mb_msg_response_id(const mb_msg *m) { return m->response_id; }
const char *mb_msg_destination(const mb_msg *m) { return m->name ? m->name->s : NULL; }

const char *mb_msg_reply_to(const mb_msg *m) {
  return m->rlen ? (const char *)m->data + m->plen + m->vlen : NULL;
}

const uint8_t *mb_msg_payload(const mb_msg *m, size_t *len) {
  *len = m->plen;
  return m->data;
}

const uint8_t *mb_msg_values(const mb_msg *m, size_t *len) {
  *len = m->vlen;
  return m->data + m->plen;
}

int mb_msg_is_request(const mb_msg *m) { return (m->flags & MB_MSG_REQUEST) != 0; }
int mb_msg_shared(const mb_msg *m) { return (m->flags & MB_MSG_SHARED) != 0; }
int mb_msg_answers_all(const mb_msg *m) { return (m->flags & MB_MSG_ALL) != 0; }
int mb_msg_sole(const mb_msg *m) {
  return atomic_load_explicit(&((mb_msg *)m)->refs, memory_order_acquire) == 1;
}

int mb_msg_expects_reply(const mb_msg *m) {
  return (m->flags & MB_MSG_REQUEST) || m->rlen;
}

/* Hand-written: snprintf was a tenth of a message's cost (bench/README.md). */
size_t mb_id_format(uint64_t id, char *buf) {
  static const char hex[] = "0123456789abcdef";
  /* its length first, then the digits from the last: one pass, no copy */
  size_t n = id ? (size_t)(64 - __builtin_clzll(id) + 3) / 4 : 1;
  buf[n] = 0;
  for (size_t i = n; i-- > 0; id >>= 4) buf[i] = hex[id & 15];
  return n;
}

int mb_id_parse(const char *s, size_t len, uint64_t *out) {
  uint64_t v = 0;
  if (len == 0 || len > 16) return -1;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + (uint64_t)d;
  }
  *out = v;
  return 0;
}

static int enc_key(mb_buf *b, const char *k) { return mb_enc_str(b, k, strlen(k)); }

size_t mb_node_id_format(const char *node, uint64_t id, char *buf) {
  size_t n = 0;
  if (node) {
    n = strlen(node);
    if (n > 64) n = 64;
    memcpy(buf, node, n);
    buf[n++] = ':';
  }
  return n + mb_id_format(id, buf + n);
}

int mb_msg_encode(const mb_msg *m, const char *node, mb_buf *b) {
  char id[MB_NODE_ID_MAX];
  uint32_t n = 4;
  long at = mb_enc_table_begin(b);
  if (at < 0) return -1;
  const char *dest = mb_msg_destination(m);
  int rc = enc_key(b, "destination") | (dest ? mb_enc_str(b, dest, strlen(dest)) : mb_enc_nil(b));
  rc |= enc_key(b, "payload") | mb_buf_add(b, m->data, m->plen);
  rc |= enc_key(b, "values");
  if (m->vlen)
    rc |= mb_buf_add(b, m->data + m->plen, m->vlen);
  else {
    long t = mb_enc_table_begin(b);
    if (t < 0) return -1;
    mb_enc_table_end(b, t, 0, 0);
  }
  const char *origin = mb_msg_origin(m);
  rc |= enc_key(b, "id") | (origin ? mb_enc_str(b, origin, strlen(origin))
                                   : mb_enc_str(b, id, mb_node_id_format(node, m->id, id)));
  if (m->rlen) {
    const char *r = mb_msg_reply_to(m);
    rc |= enc_key(b, "reply_to") | mb_enc_str(b, r, strlen(r));
    n++;
  }
  if (m->response_id) {
    rc |= enc_key(b, "response_id") | mb_enc_str(b, id, mb_node_id_format(node, m->response_id, id));
    n++;
  }
  if (rc) return -1;
  mb_enc_table_end(b, at, 0, n);
  return 0;
}

int mb_msg_to_json(const mb_msg *m, const char *node, mb_buf *out, char *err, size_t errlen) {
  mb_buf tmp = {0};
  int rc = -1;
  if (mb_msg_encode(m, node, &tmp))
    snprintf(err, errlen, "out of memory");
  else
    rc = mb_json_encode(tmp.p, tmp.len, "message", out, err, errlen);
  mb_buf_free(&tmp);
  return rc;
}
