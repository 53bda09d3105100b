/*
 * fuzz_config.c — the configuration checker (lua/mb/config.lua, what
 * `mbrun -c FILE` runs before anything starts) on random configuration
 * files. The fuzz bytes drive a generator that writes the Lua source of a
 * configuration: mostly well-formed tables built from the checker's own
 * words (keys, destination types, names valid and not, scripts that exist
 * and do not, lists with holes, numbers at and past every bound, tables
 * with metatables whose __tostring or __index raise), sometimes raw bytes
 * as source. The checker must never raise; it returns either a checked
 * configuration whose every listener names a declared destination and
 * whose every destination has a valid name, or nil and ONE line that
 * starts with the file's path. The real `mb` module is linked in: the
 * checker takes its destination rules from mb._check_destination.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmb.h" /* luaopen_mb: the checker takes the destination rules from mb */

#ifndef MB_SRCDIR
#define MB_SRCDIR "."
#endif

static lua_State *L;
static char dir[64], path[96];

typedef struct {
  const uint8_t *p, *end;
} input;

static unsigned take(input *in) { return in->p < in->end ? *in->p++ : 0; }
static unsigned pick(input *in, unsigned n) { return n ? take(in) % n : 0; }

typedef struct {
  char *s;
  size_t len, cap;
} text;

static void put(text *t, const char *s) {
  size_t n = strlen(s);
  if (t->len + n + 1 > t->cap) {
    t->cap = (t->len + n + 1) * 2;
    t->s = realloc(t->s, t->cap);
    if (!t->s) abort();
  }
  memcpy(t->s + t->len, s, n + 1);
  t->len += n;
}

static const char *const NAMES[] = {"\"shop/orders\"", "\"a\"", "\"x.y:z-1\"", "\"\"", "\"has space\"",
                                    "\"a\\nb\"", "\"a\\0b\"", "\"\\255\"", "1", "true", "2.5"};
static const char *const SCRIPTS[] = {"\"a.lua\"", "\"b.lua\"", "\"missing.lua\"", "\"/nonexistent/x.lua\"",
                                      "\".\"", "\"a\\nb.lua\"", "1", "{}"};
static const char *const SCALARS[] = {"0", "1", "-1", "64", "256", "257", "65536", "1.5", "0/0", "1/0",
                                      "-1/0", "math.maxinteger", "math.mininteger", "true", "false",
                                      "nil", "\"\"", "\"parallel\"", "\"serial\"", "\"synchronous\"",
                                      "\"fast\"", "\"reject\"", "\"block\"", "\"a.lua\"", "\"x\\ny\"",
                                      "{}", "{1, nil, 3}"};
static const char *const DEST_KEYS[] = {"type", "max_queue", "on_full", "concurrency", "colour", "[1]"};
static const char *const SVC_KEYS[] = {"script", "instances", "args", "name", "extra"};
static const char *const TOP_KEYS[] = {"workers", "destinations", "services", "listeners", "junk"};

static void scalar(text *t, input *in) { put(t, SCALARS[pick(in, sizeof SCALARS / sizeof *SCALARS)]); }

/* A table literal, sometimes wrapped in setmetatable with a raising
 * __tostring, __index or __pairs-free trick. */
static void open_table(text *t, input *in, int *wrapped) {
  *wrapped = pick(in, 8) == 0;
  if (*wrapped) put(t, "setmetatable(");
  put(t, "{");
}

static void close_table(text *t, input *in, int wrapped) {
  put(t, "}");
  if (!wrapped) return;
  static const char *const MTS[] = {
      ", {__tostring = function() error('tostring raised') end})",
      ", {__tostring = function() return {} end})",
      ", {__index = function() error('index raised') end})",
      ", {__index = function(_, k) return 'serial' end})",
      ", {__len = function() return 5 end})"};
  put(t, MTS[pick(in, sizeof MTS / sizeof *MTS)]);
}

static void dest_opts(text *t, input *in) {
  int w;
  open_table(t, in, &w);
  for (unsigned i = 0, n = pick(in, 4); i < n; i++) {
    const char *k = DEST_KEYS[pick(in, sizeof DEST_KEYS / sizeof *DEST_KEYS)];
    if (k[0] != '[') put(t, k), put(t, " = ");
    else put(t, k), put(t, " = ");
    scalar(t, in);
    put(t, ", ");
  }
  close_table(t, in, w);
}

static void list_of(text *t, input *in, const char *const *words, size_t nwords) {
  int w;
  open_table(t, in, &w);
  for (unsigned i = 0, n = pick(in, 5); i < n; i++) {
    if (pick(in, 6) == 0) put(t, "nil");
    else put(t, words[pick(in, (unsigned)nwords)]);
    put(t, ", ");
  }
  close_table(t, in, w);
}

static void service(text *t, input *in) {
  if (pick(in, 8) == 0) {
    scalar(t, in);
    return;
  }
  int w;
  open_table(t, in, &w);
  for (unsigned i = 0, n = pick(in, 5); i < n; i++) {
    const char *k = SVC_KEYS[pick(in, sizeof SVC_KEYS / sizeof *SVC_KEYS)];
    put(t, k);
    put(t, " = ");
    if (!strcmp(k, "script")) put(t, SCRIPTS[pick(in, sizeof SCRIPTS / sizeof *SCRIPTS)]);
    else if (!strcmp(k, "args")) list_of(t, in, SCALARS, sizeof SCALARS / sizeof *SCALARS);
    else scalar(t, in);
    put(t, ", ");
  }
  close_table(t, in, w);
}

static void config(text *t, input *in) {
  put(t, "return ");
  if (pick(in, 16) == 0) { /* not a table */
    scalar(t, in);
    return;
  }
  int w;
  open_table(t, in, &w);
  for (unsigned i = 0, n = 1 + pick(in, 5); i < n; i++) {
    const char *k = TOP_KEYS[pick(in, sizeof TOP_KEYS / sizeof *TOP_KEYS)];
    put(t, k);
    put(t, " = ");
    int w2;
    if (!strcmp(k, "destinations")) {
      open_table(t, in, &w2);
      for (unsigned j = 0, m = pick(in, 5); j < m; j++) {
        put(t, "[");
        put(t, NAMES[pick(in, sizeof NAMES / sizeof *NAMES)]);
        put(t, "] = ");
        if (pick(in, 8) == 0) scalar(t, in);
        else dest_opts(t, in);
        put(t, ", ");
      }
      close_table(t, in, w2);
    } else if (!strcmp(k, "services")) {
      open_table(t, in, &w2);
      for (unsigned j = 0, m = pick(in, 4); j < m; j++) {
        if (pick(in, 6) == 0) put(t, "nil");
        else service(t, in);
        put(t, ", ");
      }
      close_table(t, in, w2);
    } else if (!strcmp(k, "listeners")) {
      open_table(t, in, &w2);
      for (unsigned j = 0, m = pick(in, 3); j < m; j++) {
        put(t, "[");
        put(t, SCRIPTS[pick(in, sizeof SCRIPTS / sizeof *SCRIPTS)]);
        put(t, "] = ");
        list_of(t, in, NAMES, sizeof NAMES / sizeof *NAMES);
        put(t, ", ");
      }
      close_table(t, in, w2);
    } else {
      scalar(t, in);
    }
    put(t, ", ");
  }
  close_table(t, in, w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  snprintf(dir, sizeof dir, "/tmp/mb-fuzz-config.XXXXXX");
  if (!mkdtemp(dir)) abort();
  snprintf(path, sizeof path, "%s/config.lua", dir);
  char script[96];
  snprintf(script, sizeof script, "%s/a.lua", dir);
  FILE *f = fopen(script, "w");
  if (!f) abort();
  fputs("return function(msg) return msg.payload end\n", f);
  fclose(f);
  snprintf(script, sizeof script, "%s/b.lua", dir);
  f = fopen(script, "w");
  if (!f) abort();
  fputs("return {}\n", f);
  fclose(f);
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "mb", luaopen_mb, 0);
  lua_pop(L, 1);
  if (luaL_dofile(L, MB_SRCDIR "/lua/mb/config.lua")) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    abort();
  }
  lua_getfield(L, -1, "load");
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.config_load");
  lua_settop(L, 0);
  return 0;
}

/* The checks on a configuration the checker accepted (at the top). */
static const char CHECK_ACCEPTED[] =
    "local cfg = ...\n"
    "local declared = {}\n"
    "for _, d in ipairs(cfg.destinations) do\n"
    "  assert(type(d.name) == 'string' and #d.name >= 1 and #d.name <= 255\n"
    "         and d.name:match('^[A-Za-z0-9_./:-]+$'), 'accepted an invalid name')\n"
    "  declared[d.name] = true\n"
    "end\n"
    "for _, l in ipairs(cfg.listeners) do\n"
    "  for i = 1, #l.destinations do\n"
    "    assert(declared[l.destinations[i]], 'a listener at an undeclared destination')\n"
    "  end\n"
    "end\n"
    "for _, s in ipairs(cfg.services) do\n"
    "  assert(type(s.script) == 'string', 'a service without a script')\n"
    "  assert(s.instances == nil or math.type(s.instances) == 'integer' and s.instances > 0,\n"
    "         'accepted a bad instance count')\n"
    "end\n";

/* Raw text may loop for ever: a configuration that does is its author's,
 * but the fuzzer must go on, so long runs are cut short. */
static void too_long(lua_State *l, lua_Debug *ar) {
  (void)ar;
  luaL_error(l, "ran too long");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  lua_sethook(L, too_long, LUA_MASKCOUNT, 10000000);
  input in = {data + 1, data + size};
  text t = {0};
  if (data[0] % 8 == 0) { /* the bytes themselves as the file's text */
    t.s = malloc(size);
    if (!t.s) abort();
    memcpy(t.s, data + 1, size - 1);
    t.len = size - 1;
  } else {
    config(&t, &in);
  }
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  fwrite(t.s, 1, t.len, f);
  fclose(f);

  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.config_load");
  lua_pushstring(L, path);
  if (lua_pcall(L, 1, 2, 0)) {
    fprintf(stderr, "the checker raised: %s\nconfiguration:\n%.*s\n", lua_tostring(L, -1), (int)t.len,
            t.s);
    abort();
  }
  if (lua_isnil(L, -2)) {
    size_t n;
    const char *err = lua_tolstring(L, -1, &n);
    if (!err || strncmp(err, path, strlen(path)) != 0 || memchr(err, '\n', n)) {
      fprintf(stderr, "not one line starting with the path: [%s]\nconfiguration:\n%.*s\n",
              err ? err : "(not a string)", (int)t.len, t.s);
      abort();
    }
  } else {
    if (luaL_loadstring(L, CHECK_ACCEPTED)) abort();
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 1, 0, 0)) {
      fprintf(stderr, "%s\nconfiguration:\n%.*s\n", lua_tostring(L, -1), (int)t.len, t.s);
      abort();
    }
  }
  lua_settop(L, 0);
  free(t.s);
  return 0;
}
