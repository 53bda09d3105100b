/*
 * js_raw.c — the baseline of the durable benchmark (bench/durable.lua,
 * issue 16): the JetStream use of bench/durable/node.lua from a plain
 * libnats program. One connection (nats.c's own threads), a file stream,
 * W asynchronous publishes in flight (js_PublishAsync, MaxPending W: each
 * send is stored before its slot frees), and a durable push consumer with a
 * deliver group whose callback acknowledges each message (explicit acks).
 * Times from the first publish to the N-th message delivered and prints
 * "RESULT msgs=N secs=S rate=R", as node.lua does.
 *
 *   build/js_raw --url nats://127.0.0.1:PORT [N [W]]
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long got, want;
static double t_done;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
  (void)nc;
  (void)sub;
  (void)ud;
  natsMsg_Ack(m, NULL);
  natsMsg_Destroy(m);
  pthread_mutex_lock(&mu);
  if (++got == want) {
    t_done = now();
    pthread_cond_signal(&cond);
  }
  pthread_mutex_unlock(&mu);
}

static void die(const char *what, natsStatus s) {
  natsStatus ls;
  const char *last = nats_GetLastError(&ls);
  fprintf(stderr, "js_raw: %s: %s\n", what, last && *last ? last : natsStatus_GetText(s));
  exit(1);
}

int main(int argc, char **argv) {
  const char *url = NULL;
  long n = 20000, w = 64;
  int pos = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--url") && i + 1 < argc)
      url = argv[++i];
    else if (pos++ == 0)
      n = atol(argv[i]);
    else
      w = atol(argv[i]);
  }
  if (!url || n <= 0 || w <= 0) {
    fprintf(stderr, "usage: js_raw --url URL [N [W]]\n");
    return 2;
  }
  want = n;
  char stream[64], subject[80];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  srand((unsigned)ts.tv_nsec);
  snprintf(stream, sizeof stream, "raw%d", rand() % 1000000);
  snprintf(subject, sizeof subject, "raw.%s", stream);
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsStatus s = natsConnection_ConnectTo(&nc, url);
  if (s != NATS_OK) die("connect", s);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = w;
  jo.PublishAsync.StallWait = 10000;
  if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) die("jetstream", s);
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subjects[1] = {subject};
  sc.Name = stream;
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.MaxAge = (int64_t)60 * 1000000000;
  jsErrCode jerr = 0;
  if ((s = js_AddStream(NULL, js, &sc, NULL, &jerr)) != NATS_OK) die("stream", s);
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream;
  so.Config.Durable = "bench";
  so.Config.AckPolicy = js_AckExplicit;
  so.ManualAck = true;
  so.Queue = "bench"; /* a deliver group, as mb's named groups */
  natsSubscription *sub = NULL;
  s = js_Subscribe(&sub, js, subject, on_msg, NULL, NULL, &so, &jerr);
  if (s != NATS_OK) die("consumer", s);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  nats_Sleep(300);
  static const char payload[64] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde";
  double t0 = now();
  for (long i = 0; i < n; i++)
    if ((s = js_PublishAsync(js, subject, payload, sizeof payload, NULL)) != NATS_OK)
      die("publish", s);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 30000;
  if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK) die("publish (acks)", s);
  pthread_mutex_lock(&mu);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 60;
  while (got < want && pthread_cond_timedwait(&cond, &mu, &until) == 0) continue;
  long have = got;
  double t1 = t_done;
  pthread_mutex_unlock(&mu);
  if (have < want) {
    fprintf(stderr, "js_raw: %ld of %ld messages delivered\n", have, want);
    return 1;
  }
  printf("RESULT msgs=%ld secs=%.3f rate=%.0f\n", n, t1 - t0, (double)n / (t1 - t0));
  fflush(stdout);
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  js_DeleteStream(js, stream, NULL, NULL);
  jsCtx_Destroy(js);
  natsConnection_Close(nc);
  natsConnection_Destroy(nc);
  nats_Close();
  return 0;
}
