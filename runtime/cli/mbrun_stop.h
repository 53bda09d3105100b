/*
 * mbrun_stop.h — how mbrun stops (mbrun_stop.c): signals, the grace period,
 * the watchdog and the REPL's Ctrl-C.
 */
#ifndef MBRUN_STOP_H
#define MBRUN_STOP_H

#include <ev.h>

#include "lmb.h"
#include "mbrepl.h"

typedef struct shutdown {
  mb_runtime *rt;
  ev_async sig;
  ev_timer check, grace;
  int signals;   /* how many the loop took (not counting the REPL's Ctrl-C) */
  int signo;     /* the first */
  int draining;  /* the grace period runs */
  int finished;  /* the grace period's work is done, or it ran out */
  int expired;   /* it ran out */
  int now;       /* a signal during the grace period: stop at once */
  int quiet;     /* consecutive checks that found nothing in flight */
} shutdown_ctl;

/* Catches the signals for a run of rt's loop (c zeroed before), starts the
 * watchdog (grace: the grace period in seconds) and, with a REPL r (NULL:
 * none), the interrupter its Ctrl-C goes through. */
void mbrun_signals_start(shutdown_ctl *c, mb_runtime *rt, mbL_runtime *R, double grace,
                         mbrepl *r);
/* After a signal or mb.stop(): no new work comes in, and what is in flight
 * gets what is left of `grace` seconds to finish. */
void mbrun_drain(shutdown_ctl *c, double grace);
/* Main is back from the loop: stops the watchdog, aborts what still runs
 * after what is left of the grace period; returns how many services still
 * run a call (stuck in C: mbrun must not join them). */
int mbrun_loop_over(shutdown_ctl *c, mbL_runtime *R);
/* Signals end mbrun as usual from here on. */
void mbrun_signals_stop(shutdown_ctl *c);
/* Ends the REPL's interrupter thread; before the runtime is freed. */
void mbrun_interrupter_stop(void);

#endif
