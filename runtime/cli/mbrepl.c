/*
 * mbrepl.c — mbrun's REPL front end. It reads lines — with libedit's
 * callback interface driven by an ev_io on stdin when on a terminal, with
 * plain reads when stdin is a pipe — and hands each to the REPL service
 * (lua/mb/repl.lua, a Lua state of its own) as a request on the destination
 * mb/repl; the reply says what comes next ({status = "ok" | "more" |
 * "error" | "quit" | "trace", on = bool}). The bus never stops while the
 * user types: everything the services print arrives here from any thread,
 * is queued, and is written on worker 0 above the prompt, after which
 * libedit redraws the prompt and the half-typed line.
 *
 * Owns: a C service on worker 0 (freed by the runtime), the output queue,
 * the watchers, the history. Uses libedit (BSD licence) through its
 * readline-compatible header. Tests: spec/repl/repl_spec.lua (piped stdin and a
 * pseudo-terminal through tmux).
 */
#include "mbrepl.h"

#include <editline/readline.h>
#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "mb_value.h"

#define REPL_DEST "mb/repl"
#define PROMPT "mb> "
#define PROMPT_MORE ">> "

struct mbrepl {
  mbL_runtime *R;
  mb_runtime *rt;
  struct ev_loop *loop;
  mb_service *svc; /* the front end's own service on worker 0 */
  int tty;
  atomic_int queueing; /* output goes through the queue (terminal, open) */
  int open;            /* started, and the user has not left */
  int reading;         /* the prompt was offered: Ctrl-C is the REPL's */
  int closed;          /* mbrepl_close ran */
  int failures0;       /* mbL_runtime_failures when it started */
  int held;            /* holds the bus busy */
  int shown;           /* the prompt (and the line being typed) is on screen */
  int running;         /* a line runs in the REPL service */
  int more;            /* the input so far is unfinished: continuation prompt */
  int eof;             /* piped input ended */
  mb_request *req;     /* the running line's request */
  ev_io in;
  ev_async wake;  /* output was queued */
  ev_timer ready; /* waits for the REPL service to listen */
  ev_signal winch, cont; /* terminal resized; back from Ctrl-Z */
  double ready_since;
  pthread_mutex_t out_lock;
  mb_buf out; /* queued output: records of stream (1 byte), length (size_t), text */
  mb_buf pending_in; /* piped: bytes read, from `taken` on not run yet */
  size_t taken, scanned; /* piped: consumed; searched for a newline */
  char history[PATH_MAX];
  char service[PATH_MAX + 32]; /* the REPL service's name: its script's path */
  atomic_int started;          /* service is set: mbrepl_abort_line may use it */
  mbrepl_trace_fn trace;
  void *trace_ud;
  struct termios tio; /* the terminal as it was: given back when leaving */
  int have_tio;
};

/* While a line runs the prompt is away and the terminal is ours: keys typed
 * meanwhile are not echoed (libedit shows them at the next prompt) and are
 * kept for it; Ctrl-C still signals. */
static void quiet_terminal(mbrepl *r) {
  if (!r->have_tio) return;
  struct termios t = r->tio;
  t.c_lflag &= ~(tcflag_t)(ECHO | ICANON);
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  tcsetattr(0, TCSANOW, &t);
}

static void restore_terminal(mbrepl *r) {
  if (r->have_tio) tcsetattr(0, TCSANOW, &r->tio);
}

/* libedit's line handler has no user pointer: the one REPL of the process */
static mbrepl *the_repl;

static void show_prompt(mbrepl *r);
static void next_piped_line(mbrepl *r);

/* ---- output --------------------------------------------------------------------- */

static void write_out(int stream, const char *text, size_t len) {
  FILE *f = stream == 2 ? stderr : stdout;
  fwrite(text, 1, len, f);
  fflush(f);
}

void mbrepl_write(mbrepl *r, int stream, const char *text, size_t len) {
  unsigned char s = (unsigned char)stream;
  pthread_mutex_lock(&r->out_lock);
  int queued = atomic_load(&r->queueing), bad = 0;
  if (queued) {
    size_t at = r->out.len;
    bad = mb_buf_add(&r->out, &s, 1) || mb_buf_add(&r->out, &len, sizeof len) ||
          mb_buf_add(&r->out, text, len);
    if (bad) r->out.len = at; /* no half record */
  }
  pthread_mutex_unlock(&r->out_lock);
  if (!queued || bad) { /* straight out (out of memory: out of turn, but out) */
    write_out(stream, text, len);
    return;
  }
  ev_async_send(r->loop, &r->wake);
}

static void output_hook(void *ud, int stream, const char *text, size_t len) {
  mbrepl_write(ud, stream, text, len);
}

/* On worker 0: writes what was queued. With the prompt on screen, the
 * prompt line is wiped first and drawn again after, with the user's
 * half-typed line and cursor as they were (libedit keeps them). */
static void flush_output(mbrepl *r) {
  mb_buf q;
  pthread_mutex_lock(&r->out_lock);
  q = r->out;
  memset(&r->out, 0, sizeof r->out);
  pthread_mutex_unlock(&r->out_lock);
  if (!q.len) {
    mb_buf_free(&q);
    return;
  }
  if (r->shown) {
    /* back to the prompt's first row (the line may wrap), and wipe below */
    int rows = 0, cols = 0;
    rl_get_screen_size(&rows, &cols);
    size_t at = strlen(r->more ? PROMPT_MORE : PROMPT) + (size_t)(rl_point > 0 ? rl_point : 0);
    size_t up = cols > 0 ? at / (size_t)cols : 0;
    if (up)
      printf("\r\033[%zuA\033[J", up);
    else
      fputs("\r\033[J", stdout);
    fflush(stdout);
  }
  for (size_t at = 0; at < q.len;) {
    int stream = q.p[at];
    size_t len;
    memcpy(&len, q.p + at + 1, sizeof len);
    write_out(stream, (const char *)q.p + at + 1 + sizeof len, len);
    at += 1 + sizeof len + len;
  }
  mb_buf_free(&q);
  if (r->shown) rl_forced_update_display();
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop;
  (void)revents;
  flush_output(w->data);
}

/* A line of the front end's own, through the same queue (in order). */
static void say(mbrepl *r, const char *text) {
  mbrepl_write(r, 1, text, strlen(text));
  if (atomic_load(&r->queueing)) flush_output(r);
}

/* ---- leaving -------------------------------------------------------------------- */

/* The user left: deliver what is pending (mbrun drains), then exit. */
static void leave(mbrepl *r) {
  if (!r->open) return;
  r->open = r->reading = 0;
  if (r->tty && r->shown) { /* ended from outside: keep the line, end it */
    rl_callback_handler_remove();
    fputs("\n", stdout);
    fflush(stdout);
    r->shown = 0;
  }
  ev_io_stop(r->loop, &r->in);
  if (r->tty) restore_terminal(r);
  if (r->held) {
    mb_runtime_hold(r->rt, -1);
    r->held = 0;
  }
  mb_runtime_stop(r->rt);
}

/* ---- lines ---------------------------------------------------------------------- */

/* The string value of key in an encoded table, or NULL; *flag gets a
 * boolean value of key "on". */
static const char *reply_status(const mb_msg *m, size_t *len, int *on) {
  size_t plen;
  const uint8_t *p = mb_msg_payload(m, &plen);
  mb_reader rd = {p, p + plen};
  mb_item it, k, v;
  const char *status = NULL;
  if (mb_read(&rd, &it) || it.tag != MB_V_TABLE) return NULL;
  for (uint32_t i = 0; i < it.v.t.narr; i++)
    if (mb_skip(&rd)) return NULL;
  for (uint32_t i = 0; i < it.v.t.nhash; i++) {
    if (mb_read(&rd, &k)) return NULL;
    const uint8_t *at = rd.p;
    if (mb_read(&rd, &v)) return NULL;
    if (k.tag == MB_V_STR && k.v.str.len == 6 && !memcmp(k.v.str.s, "status", 6) &&
        v.tag == MB_V_STR) {
      status = v.v.str.s;
      *len = v.v.str.len;
    } else if (k.tag == MB_V_STR && k.v.str.len == 2 && !memcmp(k.v.str.s, "on", 2)) {
      *on = v.tag == MB_V_TRUE;
    }
    if (v.tag == MB_V_TABLE) { /* skip its contents too */
      rd.p = at;
      if (mb_skip(&rd)) return NULL;
    }
  }
  return status;
}

static int status_is(const char *s, size_t len, const char *word) {
  return s && len == strlen(word) && !memcmp(s, word, len);
}

static void on_answer(void *ud, const mb_answer *a, size_t n) {
  mbrepl *r = ud;
  r->req = NULL;
  r->running = 0;
  if (!r->open) return;
  size_t len = 0;
  int on = 0;
  const char *status = n && a[0].status == MB_OK ? reply_status(a[0].reply, &len, &on) : NULL;
  if (n && a[0].status != MB_OK) {
    char line[600];
    snprintf(line, sizeof line, "error: the REPL service did not answer: %s\n", a[0].error);
    say(r, line);
  }
  r->more = status_is(status, len, "more");
  if (status_is(status, len, "quit")) {
    leave(r);
    return;
  }
  if (status_is(status, len, "trace")) {
    r->trace(r->trace_ud, on);
    say(r, on ? "trace on\n" : "trace off\n");
  }
  if (r->tty)
    show_prompt(r);
  else
    next_piped_line(r);
}

/* Hands a line (or, with line NULL, a cancel) to the REPL service. */
static int send_line(mbrepl *r, const char *line, size_t len, int wait) {
  mb_buf b = {0};
  long at = mb_enc_table_begin(&b);
  int bad = at < 0;
  if (!bad && line)
    bad = mb_enc_str(&b, "line", 4) || mb_enc_str(&b, line, len);
  else if (!bad)
    bad = mb_enc_str(&b, "cancel", 6) || mb_enc_bool(&b, 1);
  if (!bad) mb_enc_table_end(&b, at, 0, 1);
  mb_msg *m = bad ? NULL : mb_msg_new(b.p, b.len, NULL, 0, NULL);
  mb_buf_free(&b);
  if (!m) {
    say(r, "error: out of memory\n");
    return -1;
  }
  if (!wait) return mb_send(r->svc, REPL_DEST, m, NULL, NULL) < 0 ? -1 : 0;
  /* a day: the user's own code may wait as long as it likes */
  int rc = mb_request_start(r->svc, REPL_DEST, m, 86400, 0, on_answer, r, &r->req);
  if (rc != MB_PENDING && rc < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "error: cannot reach the REPL service: %s\n", mb_strerror(rc));
    say(r, msg);
    return -1;
  }
  r->running = 1;
  return 0;
}

/* ---- the terminal ------------------------------------------------------------------- */

static void on_tty_line(char *line) {
  mbrepl *r = the_repl;
  r->shown = 0;
  rl_callback_handler_remove();
  ev_io_stop(r->loop, &r->in);
  if (line) quiet_terminal(r);
  if (!line) { /* Ctrl-D */
    say(r, "\n");
    leave(r);
    return;
  }
  if (*line) add_history(line);
  if (send_line(r, line, strlen(line), 1)) show_prompt(r);
  free(line);
}

static void show_prompt(mbrepl *r) {
  if (!r->open || r->shown) return;
  flush_output(r); /* what the line printed comes before the prompt */
  rl_callback_handler_install(r->more ? PROMPT_MORE : PROMPT, on_tty_line);
  r->shown = 1;
  ev_io_start(r->loop, &r->in);
}

static void on_tty_input(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  (void)revents;
  mbrepl *r = w->data;
  int avail = 0;
  if (ioctl(0, FIONREAD, &avail) != 0 || avail == 0) { /* readable, nothing: hung up */
    say(r, "\n");
    leave(r);
    return;
  }
  if (r->shown) rl_callback_read_char();
}

static void on_winch(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  mbrepl *r = w->data;
  if (r->shown) rl_resize_terminal();
}

/* Back in the foreground after Ctrl-Z: the terminal modes again. */
static void on_cont(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)loop;
  (void)revents;
  mbrepl *r = w->data;
  if (!r->shown) return;
  rl_deprep_terminal();
  rl_prep_terminal(1);
  rl_forced_update_display();
}

int mbrepl_tty(const mbrepl *r) { return r && r->tty; }

int mbrepl_abort_line(mbrepl *r) {
  /* only where the REPL takes Ctrl-C: a terminal (piped, it stops mbrun) */
  return r && r->tty && atomic_load(&r->started) &&
         mbL_runtime_interrupt_service(r->R, r->service, "interrupted") > 0;
}

int mbrepl_interrupt(mbrepl *r) {
  if (!r || !r->reading || !r->tty) return 0;
  if (r->running) {
    /* a line that waits (mb.sleep, a request): stop waiting for it; its
     * code goes on in its service, and what it prints later still appears
     * (a line whose Lua code runs was aborted by mbrepl_abort_line) */
    mb_request_cancel(r->req);
    r->req = NULL;
    r->running = 0;
    r->more = 0;
    say(r, " (no longer waiting for that line; its code goes on)\n");
    show_prompt(r);
    return 1;
  }
  if (r->shown) {
    rl_replace_line("", 0);
    fputs("^C\n", stdout);
    fflush(stdout);
    rl_callback_handler_remove();
    r->shown = 0;
  }
  if (r->more) send_line(r, NULL, 0, 0); /* forget the unfinished chunk */
  r->more = 0;
  show_prompt(r);
  return 1;
}

/* ---- tab completion ---------------------------------------------------------------- */

static const char *const COMMANDS[] = {
    ".send", ".request", ".listen", ".unlisten", ".dests", ".stats", ".load",
    ".services", ".stop", ".reload", ".trace", ".help", ".quit", NULL};

typedef struct names {
  char **v;
  size_t n, cap;
} names;

static names candidates;

static void add_name(void *ud, const char *name) {
  names *c = ud;
  if (!strcmp(name, REPL_DEST)) return; /* the REPL's own */
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 32;
    char **v = realloc(c->v, cap * sizeof *v);
    if (!v) return;
    c->v = v;
    c->cap = cap;
  }
  if ((c->v[c->n] = strdup(name))) c->n++;
}

/* A service's name, once: its instances share it. */
static void add_service_name(void *ud, const char *name) {
  names *c = ud;
  for (size_t i = 0; i < c->n; i++)
    if (!strcmp(c->v[i], name)) return;
  add_name(ud, name);
}

static void clear_candidates(void) {
  for (size_t i = 0; i < candidates.n; i++) free(candidates.v[i]);
  free(candidates.v);
  memset(&candidates, 0, sizeof candidates);
}

static size_t cand_next;

static char *from_candidates(const char *text, int state) {
  if (!state) cand_next = 0;
  size_t len = strlen(text);
  while (cand_next < candidates.n) {
    const char *c = candidates.v[cand_next++];
    if (!strncmp(c, text, len)) return strdup(c);
  }
  return NULL;
}

static char **complete(const char *text, int start, int end) {
  (void)end;
  mbrepl *r = the_repl;
  rl_attempted_completion_over = 1; /* no file names unless asked for */
  rl_completion_append_character = ' ';
  clear_candidates();
  const char *line = rl_line_buffer;
  while (*line == ' ') line++;
  const char *space = strchr(line, ' ');
  size_t cmdlen = space ? (size_t)(space - line) : strlen(line);
  int first_word = (int)(line - rl_line_buffer) >= start;
  if (first_word && text[0] == '.') {
    for (size_t i = 0; COMMANDS[i]; i++) add_name(&candidates, COMMANDS[i]);
    return rl_completion_matches(text, from_candidates);
  }
  if (first_word || line[0] != '.') return NULL;
  /* the second word: only words before it are the command */
  const char *arg = space;
  while (arg && *arg == ' ') arg++;
  if (!arg || (int)(arg - rl_line_buffer) != start) return NULL;
  if (cmdlen == 5 && !strncmp(line, ".load", 5)) {
    rl_completion_append_character = '\0'; /* a folder goes on with / */
    return rl_completion_matches(text, rl_filename_completion_function);
  }
  if ((cmdlen == 5 && !strncmp(line, ".stop", 5)) || (cmdlen == 7 && !strncmp(line, ".reload", 7))) {
    mbL_runtime_each_service(r->R, add_service_name, &candidates); /* copies, under its lock */
    return rl_completion_matches(text, from_candidates);
  }
  static const char *const with_dest[] = {".send", ".request", ".listen", ".unlisten", ".stats",
                                          NULL};
  for (size_t i = 0; with_dest[i]; i++)
    if (cmdlen == strlen(with_dest[i]) && !strncmp(line, with_dest[i], cmdlen)) {
      mb_dest_each(r->rt, add_name, &candidates);
      return rl_completion_matches(text, from_candidates);
    }
  return NULL;
}

/* ---- piped input --------------------------------------------------------------------- */

/* Runs the next whole line read, if no line runs; leaves at the end. While
 * a line runs with another whole line waiting, stdin is not read further:
 * the input waits in the pipe, not in memory. */
static void next_piped_line(mbrepl *r) {
  mb_buf *in = &r->pending_in;
  while (r->open && !r->running) {
    uint8_t *nl = NULL;
    if (r->scanned < in->len) {
      nl = memchr(in->p + r->scanned, '\n', in->len - r->scanned);
      r->scanned = nl ? (size_t)(nl - in->p) : in->len;
    }
    size_t len = (nl ? (size_t)(nl - in->p) : in->len) - r->taken;
    if (!nl && !(r->eof && len)) {
      if (r->taken) { /* keep the partial line only */
        memmove(in->p, in->p + r->taken, in->len - r->taken);
        in->len -= r->taken;
        r->scanned -= r->taken;
        r->taken = 0;
      }
      if (r->eof) {
        if (r->more) say(r, "error: the input ended inside an unfinished Lua chunk\n");
        /* the end of input is .quit: messages pending and deliveries
         * running get the grace period, timers are not waited for */
        long timers = mbL_runtime_timers(r->R);
        if (timers > 0) {
          char note[300];
          int n = snprintf(note, sizeof note,
                           "mbrun: the input ended with %ld timer%s (mb.after, mb.every) still "
                           "set; %s without firing (end the input with mb.sleep(SECONDS) to "
                           "let %s fire first)\n",
                           timers, timers == 1 ? "" : "s", timers == 1 ? "it stops" : "they stop",
                           timers == 1 ? "it" : "them");
          mbrepl_write(r, 2, note, (size_t)n < sizeof note ? (size_t)n : sizeof note - 1);
        }
        leave(r); /* everything ran: what is pending gets delivered */
      } else if (!ev_is_active(&r->in)) {
        ev_io_start(r->loop, &r->in);
      }
      return;
    }
    const char *line = (const char *)in->p + r->taken;
    r->taken += len + (nl ? 1 : 0);
    r->scanned = r->taken;
    if (len && line[len - 1] == '\r') len--;
    send_line(r, line, len, 1);
  }
  if (r->running && ev_is_active(&r->in) && memchr(in->p + r->scanned, '\n', in->len - r->scanned))
    ev_io_stop(r->loop, &r->in); /* a whole line waits already */
}

static void on_piped_input(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  mbrepl *r = w->data;
  char buf[65536];
  ssize_t n = read(0, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    r->eof = 1;
    ev_io_stop(loop, w);
  } else if (mb_buf_add(&r->pending_in, buf, (size_t)n)) {
    say(r, "error: out of memory\n");
    leave(r);
    return;
  }
  next_piped_line(r);
}

/* ---- start and end ---------------------------------------------------------------------- */

static void history_path(mbrepl *r) {
  const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
  r->history[0] = 0;
  if (state && *state) {
    mkdir(state, 0700); /* may exist already; a failure shows when saving */
    snprintf(r->history, sizeof r->history, "%s/mb_history", state);
  }
  else if (home && *home)
    snprintf(r->history, sizeof r->history, "%s/.mb_history", home);
}

static void begin_reading(mbrepl *r) {
  r->reading = 1;
  if (r->tty) {
    say(r, "mb " MB_VERSION " REPL: Lua, or .help for the commands; Ctrl-D leaves\n");
    show_prompt(r);
  } else if (r->eof) {
    next_piped_line(r); /* stdin was closed: leave */
  } else {
    ev_io_start(r->loop, &r->in);
  }
}

/* Reading starts once the REPL service listens at mb/repl and the scenario
 * (or the configuration's services) ran: once every script body has ended,
 * or after 2 s if one goes on (a body that loops forever). */
static void on_ready_check(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  mbrepl *r = t->data;
  mb_stats st;
  int started = ev_now(loop) - r->ready_since > 2 || mbL_runtime_bodies(r->R) == 0;
  if (started && mb_dest_stats(r->rt, REPL_DEST, &st) == MB_OK && st.listeners > 0) {
    ev_timer_stop(loop, t);
    begin_reading(r);
  } else if (ev_now(loop) - r->ready_since > 10 ||
             (mbL_runtime_failures(r->R) > r->failures0 && mbL_runtime_bodies(r->R) == 0)) {
    ev_timer_stop(loop, t);
    say(r, "error: the REPL service did not start (see above)\n");
    leave(r);
  }
}

mbrepl *mbrepl_new(mbL_runtime *R, int tty, mbrepl_trace_fn trace, void *trace_ud) {
  mbrepl *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->R = R;
  r->rt = mbL_runtime_core(R);
  r->loop = mb_runtime_loop(r->rt);
  r->tty = tty;
  r->trace = trace;
  r->trace_ud = trace_ud;
  pthread_mutex_init(&r->out_lock, NULL);
  ev_async_init(&r->wake, on_wake);
  r->wake.data = r;
  ev_async_start(r->loop, &r->wake);
  ev_unref(r->loop); /* it alone does not keep the bus running */
  mbL_runtime_output(R, output_hook, r);
  return r;
}

int mbrepl_start(mbrepl *r, const char *luadir, char *err, size_t errlen) {
  mb_dest_opts opts = {.type = MB_PARALLEL, .on_full = MB_FULL_REJECT};
  int rc = mb_dest_declare(r->rt, REPL_DEST, &opts);
  if (rc) {
    snprintf(err, errlen, "cannot declare %s: %s", REPL_DEST, mb_strerror(rc));
    return -1;
  }
  r->svc = mb_service_new(r->rt, "mbrun", 0);
  if (!r->svc) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  snprintf(r->service, sizeof r->service, "%s/mb/repl.lua", luadir);
  char *args[] = {(char *)luadir};
  r->failures0 = mbL_runtime_failures(r->R);
  if (mbL_runtime_load(r->R, r->service, 1, args, err, errlen)) return -1;
  atomic_store(&r->started, 1);
  the_repl = r;
  r->open = 1;
  mb_runtime_hold(r->rt, 1);
  r->held = 1;
  if (r->tty) {
    pthread_mutex_lock(&r->out_lock);
    atomic_store(&r->queueing, 1);
    pthread_mutex_unlock(&r->out_lock);
    r->have_tio = tcgetattr(0, &r->tio) == 0;
    rl_readline_name = "mb";
    rl_catch_signals = 0; /* mbrun and the loop see to signals, not libedit */
    rl_catch_sigwinch = 0;
    ev_signal_init(&r->winch, on_winch, SIGWINCH);
    ev_signal_init(&r->cont, on_cont, SIGCONT);
    r->winch.data = r->cont.data = r;
    ev_signal_start(r->loop, &r->winch);
    ev_signal_start(r->loop, &r->cont);
    ev_unref(r->loop);
    ev_unref(r->loop);
    rl_attempted_completion_function = complete;
    history_path(r);
    using_history();
    stifle_history(1000);
    if (r->history[0]) read_history(r->history);
    ev_io_init(&r->in, on_tty_input, 0, EV_READ);
  } else {
    ev_io_init(&r->in, on_piped_input, 0, EV_READ);
  }
  r->in.data = r;
  ev_timer_init(&r->ready, on_ready_check, 0.001, 0.005);
  r->ready.data = r;
  r->ready_since = ev_now(r->loop);
  ev_timer_start(r->loop, &r->ready);
  return 0;
}

void mbrepl_close(mbrepl *r) {
  if (!r || r->closed) return;
  r->closed = 1;
  leave(r);
  ev_timer_stop(r->loop, &r->ready);
  if (ev_is_active(&r->winch)) {
    ev_ref(r->loop);
    ev_ref(r->loop);
    ev_signal_stop(r->loop, &r->winch);
    ev_signal_stop(r->loop, &r->cont);
  }
  pthread_mutex_lock(&r->out_lock);
  atomic_store(&r->queueing, 0); /* from now on straight out */
  pthread_mutex_unlock(&r->out_lock);
  flush_output(r); /* what was queued before */
  ev_ref(r->loop);
  ev_async_stop(r->loop, &r->wake);
  if (r->tty && r->history[0]) {
    int e = write_history(r->history);
    if (e != 0)
      fprintf(stderr, "mbrun: cannot save the REPL history to %s: %s\n", r->history,
              strerror(e > 0 ? e : errno));
  }
  clear_candidates();
}

void mbrepl_free(mbrepl *r) {
  if (!r) return;
  if (the_repl == r) the_repl = NULL;
  mb_buf_free(&r->out);
  mb_buf_free(&r->pending_in);
  pthread_mutex_destroy(&r->out_lock);
  free(r);
}
