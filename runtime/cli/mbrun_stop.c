/*
 * mbrun_stop.c — how mbrun stops: SIGINT/SIGTERM/SIGHUP, mb.stop() and the
 * grace period (drain), the watchdog that bounds a shutdown when worker 0
 * is stuck, aborting what still runs, and the REPL's Ctrl-C (its
 * interrupter thread), and an os.exit that cuts the run short. Face:
 * mbrun_stop.h. Tests: spec/cli/shutdown_spec.lua, spec/cli/trace_spec.lua,
 * spec/repl/repl_tty_spec.lua.
 */
#define _DEFAULT_SOURCE /* on_exit */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mbrun_stats.h"
#include "mbrun_stop.h"

/* The REPL, when one is open (its Ctrl-C is its own). */
static mbrepl *repl;

/* ---- signals and the grace period ----------------------------------------------- */

/* SIGINT and SIGTERM are caught by a handler that only counts them and
 * wakes worker 0's loop (ev_async_send is async-signal-safe); the loop
 * decides what they mean. Nothing is blocked, so the programs that scripts
 * start get the default dispositions back at exec. If a signal comes while
 * an earlier one is still unanswered — the loop is stuck in a long handler
 * — the handler exits the process at once: Ctrl-C twice always works. */

static atomic_int sig_unanswered, sig_last;
static struct ev_loop *sig_loop;
static ev_async *sig_async;

/* ---- the watchdog: a bound on shutting down ---------------------------------------
 *
 * A shutdown starts at the first SIGINT/SIGTERM/SIGHUP, mb.stop() or the
 * loop's own drain, whichever comes first, and its grace period ends at a
 * fixed time from then, whatever worker 0 is doing. Normally the loop sees
 * to it (drain), then aborts what still runs on any worker (finish). When
 * worker 0 itself is stuck in a handler the loop cannot: this thread then
 * aborts the Lua calls running at the end of the grace period, and if the
 * loop has still not come back WATCHDOG_SLACK later (code stuck in C), it
 * ends the process. It only waits on a semaphore (which a signal handler may
 * post) until a shutdown starts. */
#define WATCHDOG_SLACK 0.8 /* after the grace period: the abort's bound */
#define ABORT_WAIT 0.5     /* how long main gives aborted calls to end */

static struct watchdog {
  pthread_t thread;
  int started;
  sem_t wake;           /* posted by the signal handler, mb.stop() and main */
  atomic_llong t0;      /* CLOCK_MONOTONIC ns when the shutdown started; 0: not yet */
  pthread_mutex_t lock; /* guards loop_done; held while the watchdog aborts */
  int loop_done;        /* main has left the loop and sees to the rest */
  mbL_runtime *R;
  double grace;
  char why[128]; /* the aborted calls' error, set before the thread starts */
  atomic_int said_over; /* "the grace period is over" was said */
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER};

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The grace period's clock starts (if it has not yet). Async-signal-safe. */
static void shutdown_begins(void) {
  long long zero = 0;
  atomic_compare_exchange_strong(&wd.t0, &zero, mono_ns());
  if (wd.started) sem_post(&wd.wake);
}

static void on_stop_called(void *ud) {
  (void)ud;
  shutdown_begins();
}

static int loop_done(void) {
  pthread_mutex_lock(&wd.lock);
  int done = wd.loop_done;
  pthread_mutex_unlock(&wd.lock);
  return done;
}

/* Sleeps until the monotonic time `at` (ns); 1 early when main has left
 * the loop. */
static int watchdog_sleep(long long at) {
  while (!loop_done()) {
    long long now = mono_ns();
    if (now >= at) return 0;
    /* sem_timedwait takes the wall clock: wait for the same interval */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long rt = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + (at - now);
    ts.tv_sec = (time_t)(rt / 1000000000LL);
    ts.tv_nsec = (long)(rt % 1000000000LL);
    sem_timedwait(&wd.wake, &ts);
  }
  return 1;
}

static void say(const char *text) { /* even while a stuck thread holds stdio's locks */
  ssize_t n = write(2, text, strlen(text));
  (void)n;
}

static void *watchdog_main(void *arg) {
  (void)arg;
  long long t0;
  while (!(t0 = atomic_load(&wd.t0))) {
    if (loop_done()) return NULL;
    sem_wait(&wd.wake);
  }
  long long end = t0 + (long long)(wd.grace * 1e9);
  char line[256];
  /* a signal the loop has not taken a moment later: say why nothing happens */
  long long soon = t0 + 250000000LL;
  if (watchdog_sleep(soon < end ? soon : end)) return NULL;
  if (atomic_load(&sig_unanswered)) {
    snprintf(line, sizeof line,
             "mbrun: %s: a handler on worker 0 has not returned yet; what still runs when the "
             "grace period of %g s is over is aborted\n",
             atomic_load(&sig_last) == SIGINT ? "SIGINT" : atomic_load(&sig_last) == SIGHUP
                                                             ? "SIGHUP"
                                                             : "SIGTERM",
             wd.grace);
    say(line);
  }
  if (watchdog_sleep(end)) return NULL;
  pthread_mutex_lock(&wd.lock);
  if (!wd.loop_done && mbL_runtime_abort(wd.R, wd.why) && !atomic_exchange(&wd.said_over, 1)) {
    snprintf(line, sizeof line, "mbrun: the grace period of %g s is over\n", wd.grace);
    say(line); /* the loop is stuck: the watchdog aborts for it, and says so */
  }
  pthread_mutex_unlock(&wd.lock);
  if (watchdog_sleep(mono_ns() + (long long)(WATCHDOG_SLACK * 1e9))) return NULL;
  pthread_mutex_lock(&wd.lock); /* main cannot finish meanwhile */
  if (!wd.loop_done) {
    snprintf(line, sizeof line,
             "mbrun: a handler on worker 0 did not stop when aborted (blocked in C, or "
             "running in a coroutine of its own?): exiting without waiting for it\n");
    say(line);
    _exit(1);
  }
  pthread_mutex_unlock(&wd.lock);
  return NULL;
}

static void watchdog_start(mbL_runtime *R, double grace) {
  wd.R = R;
  wd.grace = grace;
  snprintf(wd.why, sizeof wd.why, "aborted: shutting down (the grace period of %g s is over)",
           grace);
  if (sem_init(&wd.wake, 0, 0)) return;
  mbL_runtime_on_stop(R, on_stop_called, NULL);
  wd.started = pthread_create(&wd.thread, NULL, watchdog_main, NULL) == 0;
}

/* Main is back from the loop: the watchdog is not needed any more. */
static void watchdog_stop(void) {
  pthread_mutex_lock(&wd.lock);
  wd.loop_done = 1;
  pthread_mutex_unlock(&wd.lock);
  if (!wd.started) return;
  sem_post(&wd.wake);
  pthread_join(wd.thread, NULL);
  wd.started = 0;
  sem_destroy(&wd.wake);
}

/* After the loop: Lua calls still running on any worker (a timer callback,
 * or a handler cut short) get what is left of the grace period (none when
 * a second signal said `now`), then are aborted and get ABORT_WAIT to end.
 * Returns how many services still run one (stuck in C: mbrun must not join
 * them). */
static int abort_running(mbL_runtime *R, int now) {
  struct timespec tick = {0, 2000000};
  long long t0 = atomic_load(&wd.t0);
  if (!t0 || !mbL_runtime_busy(R)) return 0; /* no shutdown: the bus went idle */
  long long end = now ? 0 : t0 + (long long)(wd.grace * 1e9);
  while (mono_ns() < end && mbL_runtime_busy(R)) nanosleep(&tick, NULL);
  if (!mbL_runtime_abort(R, now ? "aborted: shutting down (a second signal)" : wd.why)) return 0;
  for (int i = 0; i < (int)(ABORT_WAIT / 0.002) && mbL_runtime_busy(R); i++) nanosleep(&tick, NULL);
  return mbL_runtime_busy(R);
}

/* The REPL's Ctrl-C reaches Lua code that runs on worker 0 (whose loop
 * does not turn meanwhile) through a thread of its own: the signal handler
 * posts int_sem, the interrupter aborts the running line (int_aborted) or
 * finds none, and only then wakes the main loop (on_signal), which does
 * the rest: so the main loop never decides before the interrupter has.
 * An interrupt that found the line's code running but missed it (the code
 * went into a wait first) comes back through int_missed. */
static sem_t int_sem;
static atomic_int int_quit, int_aborted, int_up, int_missed;
static pthread_t int_thread;

static void *interrupter_main(void *arg) {
  (void)arg;
  for (;;) {
    while (sem_wait(&int_sem) && errno == EINTR) continue;
    if (atomic_load(&int_quit)) return NULL;
    if (mbrepl_abort_line(repl)) atomic_store(&int_aborted, 1);
    ev_async_send(sig_loop, sig_async);
  }
}

/* mbL_runtime_on_interrupt_missed's: on the line's worker. */
static void on_interrupt_missed(void *ud) {
  (void)ud;
  atomic_store(&int_missed, 1);
  ev_async_send(sig_loop, sig_async);
}

static void on_sig(int sig) {
  /* the REPL's Ctrl-C is its own; piped, a SIGINT stops mbrun (as SIGTERM):
   * taken as a Ctrl-C, it would not start the grace period, and a line
   * that never yields would keep mbrun running for ever */
  int repl_int = sig == SIGINT && mbrepl_tty(repl);
  if (!repl_int) shutdown_begins();
  atomic_store(&sig_last, sig);
  if (atomic_fetch_add(&sig_unanswered, 1) >= 1) {
    static const char msg[] = "\nmbrun: another signal, and the bus did not answer the "
                              "last one: exiting at once\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(128 + sig);
  }
  if (repl_int && atomic_load(&int_up))
    sem_post(&int_sem); /* async-signal-safe; the interrupter wakes the loop */
  else
    ev_async_send(sig_loop, sig_async);
}

static void catch_signals(int on) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on ? on_sig : SIG_DFL;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  struct sigaction hup;
  sigaction(SIGHUP, NULL, &hup);
  if (hup.sa_handler != SIG_IGN) /* under nohup it stays ignored */
    sigaction(SIGHUP, &sa, NULL); /* the terminal went away: as SIGTERM */
}

static const char *signame(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
}

static void on_signal(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)revents;
  shutdown_ctl *c = w->data;
  /* the line went into a wait as it was interrupted: stop waiting for it */
  if (atomic_exchange(&int_missed, 0) && repl) mbrepl_interrupt(repl);
  int n = atomic_exchange(&sig_unanswered, 0), sig = atomic_load(&sig_last);
  if (!n) return;
  if (sig == SIGINT && mbrepl_tty(repl)) { /* the REPL's Ctrl-C */
    /* the interrupter stopped the line's code: its answer (the error) comes
     * or came; this signal was that */
    if (atomic_exchange(&int_aborted, 0)) return;
    if (mbrepl_interrupt(repl)) return;
  }
  if (!c->signals++) c->signo = sig;
  if (c->draining) {
    fprintf(stderr, "mbrun: %s during the grace period: stopping now\n", signame(sig));
    c->now = c->finished = 1;
  }
  mb_runtime_stop(c->rt);
}

static void on_check(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  shutdown_ctl *c = t->data;
  /* twice in a row, 5 ms apart: a task between two threads is seen */
  c->quiet = mb_runtime_in_flight(c->rt) == 0 ? c->quiet + 1 : 0;
  if (c->quiet >= 2) {
    c->finished = 1;
    mb_runtime_stop(c->rt);
  }
}

static void on_grace(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop;
  (void)revents;
  shutdown_ctl *c = t->data;
  c->expired = c->finished = 1;
  mb_runtime_stop(c->rt);
}

/* After a signal or mb.stop(): no new work comes in, and what is in flight
 * gets `grace` seconds to finish. Another mb.stop() meanwhile changes
 * nothing; a signal ends it at once. */
void mbrun_drain(shutdown_ctl *c, double grace) {
  shutdown_begins(); /* if a signal or mb.stop() has not started its clock yet */
  mb_runtime *rt = c->rt;
  struct ev_loop *loop = mb_runtime_loop(rt);
  mb_runtime_drain(rt);
  size_t n = mb_runtime_in_flight(rt);
  if (!n) {
    if (c->signals) fprintf(stderr, "mbrun: %s: nothing in flight; stopping\n", signame(c->signo));
    return;
  }
  if (grace <= 0) return;
  /* the grace period ends `grace` after the shutdown started, even if the
   * loop was stuck in a handler until now */
  double left = grace - (double)(mono_ns() - atomic_load(&wd.t0)) / 1e9;
  if (left <= 0) {
    if (!atomic_exchange(&wd.said_over, 1))
      fprintf(stderr, "mbrun: the grace period of %g s is over\n", grace);
    return;
  }
  if (c->signals)
    fprintf(stderr,
            "mbrun: %s: taking no new messages; finishing the %zu in flight (for up to %g s; "
            "a second signal stops at once)\n",
            signame(c->signo), n, grace);
  c->draining = 1;
  ev_timer_init(&c->check, on_check, 0.005, 0.005);
  ev_timer_init(&c->grace, on_grace, left, 0);
  c->check.data = c->grace.data = c;
  ev_timer_start(loop, &c->check);
  ev_timer_start(loop, &c->grace);
  while (!c->finished)
    if (!mb_runtime_run(rt, 0)) break; /* idle: nothing left at all */
  ev_timer_stop(loop, &c->check);
  ev_timer_stop(loop, &c->grace);
  if (c->expired && !c->now && !atomic_exchange(&wd.said_over, 1))
    fprintf(stderr, "mbrun: the grace period of %g s is over\n", grace);
}

/* ---- what mbrun's main calls ---------------------------------------------------- */

/* ---- os.exit while the bus runs ------------------------------------------- */

/* A script (or a line of the REPL) that calls os.exit ends the process at
 * once: what is pending or running is lost. That must not go unsaid, nor
 * end with status 0: while the loop runs, an exit is watched, and what it
 * cut short is reported as at the end of a run, status 1 instead of 0. */
static _Atomic(mb_runtime *) exit_rt;
static mbL_runtime *exit_R;

static void on_early_exit(int status, void *arg) {
  (void)arg;
  mb_runtime *rt = atomic_exchange(&exit_rt, NULL);
  if (!rt) return;
  /* the report needs the runtime's lock: the exiting thread runs Lua code,
   * which holds none */
  if (!mbrun_report(rt, 0, repl != NULL, mbL_runtime_failures(exit_R))) return;
  fprintf(stderr, "mbrun: the process exited (os.exit(%d)?) while the bus ran: what is said "
                  "above was lost%s\n", status, status ? "" : "; exit status 1, not 0");
  if (status) return;
  fflush(NULL);
  _exit(1);
}

void mbrun_signals_start(shutdown_ctl *c, mb_runtime *rt, mbL_runtime *R, double grace,
                         mbrepl *r) {
  static int exit_hooked;
  if (!exit_hooked) exit_hooked = !on_exit(on_early_exit, NULL);
  exit_R = R;
  atomic_store(&exit_rt, rt);
  struct ev_loop *loop = mb_runtime_loop(rt);
  repl = r;
  c->rt = rt;
  ev_async_init(&c->sig, on_signal);
  c->sig.data = c;
  ev_async_start(loop, &c->sig);
  ev_unref(loop); /* listening for signals alone does not keep the bus running */
  sig_loop = loop;
  sig_async = &c->sig;
  watchdog_start(R, grace);
  if (repl) {
    sem_init(&int_sem, 0, 0);
    if (pthread_create(&int_thread, NULL, interrupter_main, NULL))
      int_thread = 0;
    else
      atomic_store(&int_up, 1);
    mbL_runtime_on_interrupt_missed(R, on_interrupt_missed, NULL);
  }
  catch_signals(1);
}

int mbrun_loop_over(shutdown_ctl *c, mbL_runtime *R) {
  atomic_store(&exit_rt, NULL); /* main ends the run and says what was left */
  watchdog_stop(); /* the loop is back: from here on main bounds the rest */
  return abort_running(R, c->now);
}

void mbrun_signals_stop(shutdown_ctl *c) {
  struct ev_loop *loop = mb_runtime_loop(c->rt);
  catch_signals(0); /* from here on, a signal ends mbrun as usual */
  ev_ref(loop);
  ev_async_stop(loop, &c->sig);
}

void mbrun_interrupter_stop(void) {
  if (!repl || !int_thread) return;
  atomic_store(&int_quit, 1);
  sem_post(&int_sem);
  pthread_join(int_thread, NULL);
  int_thread = 0;
  repl = NULL;
}
