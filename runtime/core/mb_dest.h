/*
 * mb_dest.h — the calls of mb_dest.c that the floors above it make
 * (requests, deliveries, dispatch, sending, the runtime), with the small
 * ones inline. Private to the core, as mb_core.h.
 */
#ifndef MB_DEST_H
#define MB_DEST_H

#include "mb_core.h"

/* The functions below expect rt->lock held. */
mb_dest *mb_dest_find(mb_runtime *rt, const char *name);
/* mb_dest_find for a sender: the destination it found last, when the
 * name is the same and no destination came or went since (no hashing,
 * no probe of the map: a sender mostly sends to one). Under rt->lock. */
mb_dest *mb_dest_find_from(mb_service *from, const char *name);
static inline void mb_dest_ref(mb_dest *d) { atomic_fetch_add(&d->refs, 1); }
void mb_dest_unref(mb_dest *d);
/* Queues a pump of d (rt->pump) on this thread's worker. Inline: the
 * common case (a pump already queued) costs a test, no call. */
void mb_dest_post_pump(mb_dest *d);
static inline void mb_dest_ready(mb_dest *d) {
  if (!d->in_ready && d->state != MB_DEST_REMOVED) mb_dest_post_pump(d);
}
void mb_dest_finish_removal(mb_dest *d);
/* Something in d still needs a pump or a delivery to end. */
static inline int mb_dest_busy(const mb_dest *d) {
  return d->qlen || d->st.in_flight || d->cur || d->in_ready || d->bhead;
}
/* A closing destination with nothing left in it is removed now (and may
 * be freed). */
static inline void mb_dest_maybe_removed(mb_dest *d) {
  if (d->state == MB_DEST_CLOSING && !mb_dest_busy(d)) mb_dest_finish_removal(d);
}
/* How many of d's groups take m (mb_group_takes). */
static inline size_t mb_dest_takers(const mb_dest *d, const mb_msg *m) {
  if (!(m->flags & MB_MSG_REMOTE)) return d->ngroups;
  size_t n = 0;
  for (size_t i = 0; i < d->ngroups; i++) n += mb_group_takes(d->groups[i], m);
  return n;
}
void mb_listener_close_locked(mb_listener *l);
/* Teardown: frees mb_group_named's registry. */
void mb_group_names_free(mb_runtime *rt);
void mb_listener_free(mb_listener *l);
static inline void mb_listener_unref(mb_listener *l) {
  if (--l->refs == 0) mb_listener_free(l);
}

#endif
