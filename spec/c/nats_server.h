/*
 * nats_server.h — a private nats-server for C tests and benchmarks (never the
 * system service): started on a free loopback port (-p -1) or a given one,
 * the port read from DIR/nats-server_<pid>.ports, stopped by PID (SIGTERM,
 * then SIGKILL after a bound). Every wait is bounded. The child gets
 * PR_SET_PDEATHSIG so that a test killed by its alarm takes its server along.
 * Header-only (static functions); include after check.h or with
 * _POSIX_C_SOURCE / _GNU_SOURCE defined. The Lua twin: spec/lib/nats_server.lua.
 *
 *   nats_srv s;
 *   if (nats_srv_find(&s) != 0) -> not installed (skip, or fail under CI=true)
 *   nats_srv_start(&s, -1)      -> 0; s.port, s.url, s.pid
 *   nats_srv_stop(&s, SIGKILL)  -> kill -9 (an outage); SIGTERM: a clean stop
 *   nats_srv_start(&s, s.port)  -> the same port again
 *   nats_srv_cleanup(&s)        -> stops it if running, removes the folder
 */
#ifndef NATS_SERVER_H
#define NATS_SERVER_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct nats_srv {
  char exe[256];
  char dir[64];
  char url[64];
  int port;
  pid_t pid; /* 0: not running */
} nats_srv;

static double nats_srv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nats_srv_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) continue;
}

/* Finds the executable: $NATS_SERVER, then $PATH, then the sbin folders
 * (Debian installs it in /usr/sbin, often not in a user's PATH). 0 or -1. */
static int nats_srv_find(nats_srv *s) {
  memset(s, 0, sizeof *s);
  const char *env = getenv("NATS_SERVER");
  if (env && *env) {
    snprintf(s->exe, sizeof s->exe, "%s", env);
    return access(s->exe, X_OK) == 0 ? 0 : -1;
  }
  char path[1024];
  snprintf(path, sizeof path, "%s:/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin",
           getenv("PATH") ? getenv("PATH") : "");
  for (char *save = NULL, *p = strtok_r(path, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
    snprintf(s->exe, sizeof s->exe, "%s/nats-server", p);
    if (access(s->exe, X_OK) == 0) return 0;
  }
  s->exe[0] = '\0';
  return -1;
}

/* Reads the port from the ports file; 0 when not (yet) there. */
static int nats_srv_read_port(nats_srv *s) {
  char file[128], buf[512];
  snprintf(file, sizeof file, "%s/nats-server_%d.ports", s->dir, (int)s->pid);
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strstr(buf, "nats://");
  if (!p) return 0;
  p = strchr(p + 7, ':');
  return p ? atoi(p + 1) : 0;
}

/* Starts the server on `port` (-1: a free one) and waits (at most 5 s) for
 * its ports file. 0, or -1 with the server stopped. */
static int nats_srv_start(nats_srv *s, int port) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/mb-nats-XXXXXX");
    if (!mkdtemp(s->dir)) return -1;
  }
  char portarg[16], logfile[96];
  snprintf(portarg, sizeof portarg, "%d", port);
  snprintf(logfile, sizeof logfile, "%s/server.log", s->dir);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execl(s->exe, "nats-server", "-a", "127.0.0.1", "-p", portarg, "--ports_file_dir", s->dir,
          (char *)NULL);
    _exit(127);
  }
  s->pid = pid;
  double end = nats_srv_now() + 5.0;
  while (nats_srv_now() < end) {
    int p = nats_srv_read_port(s);
    if (p > 0 && (port < 0 || p == port)) {
      s->port = p;
      snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", p);
      return 0;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) { /* it died: e.g. the port was taken */
      s->pid = 0;
      return -1;
    }
    nats_srv_sleep_ms(5);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  s->pid = 0;
  return -1;
}

/* Stops the server by PID with `sig`; after 3 s (SIGTERM) it gets SIGKILL.
 * Removes its ports file. 0 once it is gone. */
static int nats_srv_stop(nats_srv *s, int sig) {
  if (s->pid <= 0) return 0;
  kill(s->pid, sig);
  double end = nats_srv_now() + 3.0;
  int st;
  while (waitpid(s->pid, &st, WNOHANG) != s->pid) {
    if (nats_srv_now() > end) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &st, 0);
      break;
    }
    nats_srv_sleep_ms(2);
  }
  char file[128];
  snprintf(file, sizeof file, "%s/nats-server_%d.ports", s->dir, (int)s->pid);
  unlink(file);
  s->pid = 0;
  return 0;
}

static void nats_srv_cleanup(nats_srv *s) {
  nats_srv_stop(s, SIGTERM);
  if (s->dir[0]) {
    char file[128];
    snprintf(file, sizeof file, "%s/server.log", s->dir);
    unlink(file);
    rmdir(s->dir);
    s->dir[0] = '\0';
  }
}

#endif
