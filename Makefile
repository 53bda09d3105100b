# mb — a Lua-scriptable message bus runtime.
#
#   make run     install what is missing, build, run the Jungle Gyms demo
#   make test    install what is missing, build, run every test: C tests,
#                busted specs, the same under ASan+UBSan, a bounded walk of
#                allocation failures (make failalloc: all of it), the
#                threaded specs under TSan, the C tests, the specs and the
#                demo under valgrind
#   make bench   the benchmarks (bench/README.md)
#   make         build build/mb.so (the Lua module) and build/mbrun
#
# Layers, as in Lua's own makefile: the core (mb_*.c, no Lua), the Lua
# binding (mbl_value.c, lmb.c), the program (mbrun.c).

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CPPFLAGS += -I/usr/include/lua5.4 -Iruntime
LUA_LIB = -llua5.4
LIBS    = -lev -lyajl -lmimalloc -lm
# the sanitizer and valgrind builds allocate with the C library's malloc
# (runtime/mb_alloc.h), so that the tools see every block
TOOL_LIBS = -lev -lyajl -lm
LIBC_MALLOC = -DMB_LIBC_MALLOC

CORE_SRC = runtime/mb_value.c runtime/mb_json.c runtime/mb_map.c runtime/mb_msg.c runtime/mb_observe.c runtime/mb_show.c \
           runtime/mb_runtime.c runtime/mb_dest.c runtime/mb_request.c
LUA_SRC  = runtime/mbl_value.c runtime/lmb.c
MBRUN_SRC = runtime/mbrun.c runtime/mbrepl.c
EDIT_LIB = -ledit
HDRS     = $(wildcard runtime/*.h)

# Debian packages the build and the tests need (see README, "Dependencies").
# graphviz is optional for users (mbrun --graph=svg); the tests check that
# path too, so `make test` installs it.
DEB_PKGS = gcc make pkg-config liblua5.4-dev lua5.4 libev-dev libyajl-dev libedit-dev libmimalloc-dev lua-busted \
           valgrind lua-cjson lua-mediator
TEST_PKGS = graphviz tmux

B  = build
BA = build/asan
BT = build/tsan
BV = build/valgrind
SAN = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

.PHONY: all deps test-deps install-pkgs run test spec asan-spec tsan valgrind clean c-tests bench
.PHONY: install uninstall

all: $(B)/mb.so $(B)/mbrun

deps:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(DEB_PKGS)"

test-deps:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(DEB_PKGS) $(TEST_PKGS)"

install-pkgs:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(B) $(BA) $(BT) $(BV):
	mkdir -p $@

$(B)/mb.so: $(CORE_SRC) $(LUA_SRC) $(HDRS) | $(B)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -fPIC -shared -o $@ $(CORE_SRC) $(LUA_SRC) $(LIBS)

$(B)/mbrun: $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(HDRS) | $(B)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(LUA_LIB) $(EDIT_LIB) $(LIBS)

$(B)/test_core: $(CORE_SRC) spec/c/test_core.c spec/c/check.h $(HDRS) | $(B)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) spec/c/test_core.c $(LIBS)

# the same, instrumented
$(BA)/mb.so: $(CORE_SRC) $(LUA_SRC) $(HDRS) | $(BA)
	$(CC) -O1 -g $(SAN) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -fPIC -shared -o $@ $(CORE_SRC) $(LUA_SRC) $(TOOL_LIBS)

$(BA)/mbrun: $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(HDRS) | $(BA)
	$(CC) -O1 -g $(SAN) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(LUA_LIB) $(EDIT_LIB) $(TOOL_LIBS)

$(BA)/test_core: $(CORE_SRC) spec/c/test_core.c spec/c/check.h $(HDRS) | $(BA)
	$(CC) -O1 -g $(SAN) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) spec/c/test_core.c $(TOOL_LIBS)

# the threaded code under ThreadSanitizer: mbrun runs the worker scenarios
$(BT)/mbrun: $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(HDRS) | $(BT)
	$(CC) -O1 -g -fsanitize=thread $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(LUA_LIB) $(EDIT_LIB) $(TOOL_LIBS)

# as built, but with the C library's malloc, for valgrind
$(BV)/mbrun: $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(HDRS) | $(BV)
	$(CC) $(CFLAGS) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) $(LUA_SRC) $(MBRUN_SRC) $(LUA_LIB) $(EDIT_LIB) $(TOOL_LIBS)

$(BV)/mb.so: $(CORE_SRC) $(LUA_SRC) $(HDRS) | $(BV)
	$(CC) $(CFLAGS) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -fPIC -shared -o $@ $(CORE_SRC) $(LUA_SRC) $(TOOL_LIBS)

$(BV)/test_core: $(CORE_SRC) spec/c/test_core.c spec/c/check.h $(HDRS) | $(BV)
	$(CC) $(CFLAGS) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -o $@ $(CORE_SRC) spec/c/test_core.c $(TOOL_LIBS)

tsan: $(BT)/mbrun $(B)/mb.so
	TSAN_OPTIONS=halt_on_error=1 LUA_CPATH='$(B)/?.so;;' MBRUN=$(BT)/mbrun STRESS_N=20000 \
	  lua5.4 /usr/bin/busted -o utfTerminal spec/workers_spec.lua
	TSAN_OPTIONS=halt_on_error=1 $(BT)/mbrun -w 4 --trace --stats --graph $(DEMO) \
	  > /dev/null 2> $(BT)/demo.err || { grep -v '^trace ' $(BT)/demo.err; exit 1; }
	TSAN_OPTIONS=halt_on_error=1 $(BT)/mbrun -w 4 < spec/tsan/repl_input.txt \
	  > /dev/null 2> $(BT)/repl.err || { grep -v '^trace ' $(BT)/repl.err; exit 1; }
	@echo "tsan: trace, stats, graph and the REPL's output path ran clean"

DEMO = -c examples/jungle-gyms/config.lua examples/jungle-gyms/scenario.lua

# Allocation-failure injection (runtime/mb_alloc.h, runtime/mb_failalloc.c):
# the core and the binding built with ASan+UBSan, every allocation of theirs
# and of each Lua state counted, the Nth failing (MB_FAIL_AT=N).
# tools/failalloc.lua walks N over every allocation of a few scenarios and
# checks each run: no crash, no sanitizer report, no leak, an error reported
# or success, the stats invariant. `make failalloc` walks every N;
# FAILALLOC_RUNS bounds the runs per scenario (make test: about 2 minutes).
BF = build/failalloc
FA_FLAGS = -O1 -g $(SAN) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS)
FA_LIB_OBJ = $(patsubst runtime/%.c,$(BF)/lib/%.o,$(CORE_SRC) $(LUA_SRC) runtime/mb_failalloc.c)
FA_PROG_OBJ = $(patsubst runtime/%.c,$(BF)/prog/%.o,$(MBRUN_SRC))
FAILALLOC_RUNS ?= 0
$(BF)/lib $(BF)/prog:
	mkdir -p $@
$(BF)/lib/%.o: runtime/%.c $(HDRS) | $(BF)/lib
	$(CC) $(FA_FLAGS) -DMB_FAILALLOC -include runtime/mb_alloc.h -fPIC -c -o $@ $<
$(BF)/prog/%.o: runtime/%.c $(HDRS) | $(BF)/prog
	$(CC) $(FA_FLAGS) -c -o $@ $<
$(BF)/mb.so: $(FA_LIB_OBJ)
	$(CC) $(SAN) -shared -o $@ $(FA_LIB_OBJ) $(TOOL_LIBS)
$(BF)/mbrun: $(FA_LIB_OBJ) $(FA_PROG_OBJ)
	$(CC) $(SAN) -o $@ $(FA_LIB_OBJ) $(FA_PROG_OBJ) $(LUA_LIB) $(EDIT_LIB) $(TOOL_LIBS)
FA_CORE_OBJ = $(patsubst runtime/%.c,$(BF)/lib/%.o,$(CORE_SRC) runtime/mb_failalloc.c)
$(BF)/test_failalloc: $(FA_CORE_OBJ) spec/c/test_failalloc.c spec/c/check.h
	$(CC) $(FA_FLAGS) -o $@ spec/c/test_failalloc.c $(FA_CORE_OBJ) $(TOOL_LIBS)

.PHONY: failalloc failalloc-quick
failalloc: $(BF)/mb.so $(BF)/mbrun $(BF)/test_failalloc
	ASAN_OPTIONS=detect_leaks=1 $(BF)/test_failalloc
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BF) --runs $(FAILALLOC_RUNS) --count 1
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BF) --runs $(FAILALLOC_RUNS) --count 3
failalloc-quick: $(BF)/mb.so $(BF)/mbrun $(BF)/test_failalloc
	ASAN_OPTIONS=detect_leaks=1 $(BF)/test_failalloc
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BF) --runs 60 --count 1
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BF) --runs 60 --count 3

run: deps all
	$(B)/mbrun $(DEMO)

BUSTED = lua5.4 /usr/bin/busted --lpath='lua/?.lua;lua/?/init.lua' -o utfTerminal spec

spec: all
	LUA_CPATH='$(B)/?.so;;' MBRUN=$(B)/mbrun $(BUSTED)

c-tests: $(B)/test_core
	$(B)/test_core

asan-spec: $(BA)/mb.so $(BA)/mbrun $(BA)/test_core
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BA)/test_core
	LD_PRELOAD=$$($(CC) -print-file-name=libasan.so):$$($(CC) -print-file-name=libubsan.so) \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  LUA_CPATH='$(BA)/?.so;;' MBRUN=$(BA)/mbrun $(BUSTED)

# memcheck sees what the sanitizers do not: reads of uninitialised memory
VALGRIND = valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	  --show-leak-kinds=definite,indirect,possible -q

valgrind: $(BV)/mbrun $(BV)/mb.so $(BV)/test_core
	$(VALGRIND) $(BV)/test_core
	LUA_CPATH='$(BV)/?.so;;' MBRUN=$(BV)/mbrun $(VALGRIND) $(BUSTED)
	$(VALGRIND) $(BV)/mbrun $(DEMO) > /dev/null

test: test-deps all
	$(MAKE) c-tests
	$(MAKE) spec
	$(MAKE) asan-spec
	$(MAKE) failalloc-quick
	$(MAKE) tsan
	$(MAKE) valgrind
	@echo "make test: all suites passed"

# Benchmarks: each scenario against its baseline, alternately; a table on
# stdout, the same as JSON in build/bench.json (BENCH_OUT=path to change).
BENCH_OUT ?= $(B)/bench.json
bench: deps all $(B)/mb_limit.so
	LUA_CPATH='$(B)/?.so;;' lua5.4 bench/run.lua --out $(BENCH_OUT)

# benchmark 1c's floor: a C ring buffer with no bus around it
$(B)/mb_limit.so: bench/c/limit.c | $(B)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared $(CPPFLAGS) $< -o $@

# ---- make install / make uninstall ---------------------------------------
# PREFIX (default /usr/local) is where the files will live; DESTDIR is
# prepended when copying (staged installs, packaging). LUA_CDIR and
# LUA_LDIR are the folders Debian's lua5.4 searches under /usr/local
# (package.cpath, package.path); mbrun finds its Lua modules at
# ../share/lua/5.4 from its own folder. The header goes into a folder of its
# own (mb.h includes mb_value.h); mb.pc says -I$(PREFIX)/include/mb.
PREFIX   ?= /usr/local
BINDIR    = $(PREFIX)/bin
LIBDIR    = $(PREFIX)/lib
INCDIR    = $(PREFIX)/include/mb
LUA_CDIR  = $(LIBDIR)/lua/5.4
LUA_LDIR  = $(PREFIX)/share/lua/5.4
MAN1DIR   = $(PREFIX)/share/man/man1
DATADIR   = $(PREFIX)/share/mb
PCDIR     = $(LIBDIR)/pkgconfig
MB_VERSION = $(shell sed -n 's/.*define MB_VERSION "\(.*\)".*/\1/p' runtime/mb.h)
INST_HDRS  = runtime/mb.h runtime/mb_value.h
LUA_MODS   = $(wildcard lua/mb/*.lua)
SCRIPTS    = $(wildcard scripts/*.lua) scripts/README.md
SCRIPT_LIB = $(wildcard scripts/lib/*.lua)

# the core alone (no Lua) as a static library for C programs: libmb.a
CORE_OBJ = $(CORE_SRC:runtime/%.c=$(B)/core/%.o)
$(B)/core:
	mkdir -p $@
$(B)/core/%.o: runtime/%.c $(HDRS) | $(B)/core
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -fPIC -c -o $@ $<
$(B)/libmb.a: $(CORE_OBJ)
	rm -f $@
	$(AR) rcs $@ $(CORE_OBJ)

install: all $(B)/libmb.a
	install -D -m 755 $(B)/mbrun $(DESTDIR)$(BINDIR)/mbrun
	install -D -m 644 $(B)/mb.so $(DESTDIR)$(LUA_CDIR)/mb.so
	install -D -m 644 -t $(DESTDIR)$(LUA_LDIR)/mb $(LUA_MODS)
	install -D -m 644 -t $(DESTDIR)$(INCDIR) $(INST_HDRS)
	install -D -m 644 $(B)/libmb.a $(DESTDIR)$(LIBDIR)/libmb.a
	install -D -m 644 doc/mbrun.1 $(DESTDIR)$(MAN1DIR)/mbrun.1
	install -D -m 644 -t $(DESTDIR)$(DATADIR)/scripts $(SCRIPTS)
	install -D -m 644 -t $(DESTDIR)$(DATADIR)/scripts/lib $(SCRIPT_LIB)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(MB_VERSION)|g' mb.pc.in > $(B)/mb.pc
	install -D -m 644 $(B)/mb.pc $(DESTDIR)$(PCDIR)/mb.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mbrun $(DESTDIR)$(LUA_CDIR)/mb.so $(DESTDIR)$(LIBDIR)/libmb.a \
	  $(DESTDIR)$(MAN1DIR)/mbrun.1 $(DESTDIR)$(PCDIR)/mb.pc
	rm -f $(addprefix $(DESTDIR)$(LUA_LDIR)/mb/,$(notdir $(LUA_MODS))) \
	  $(addprefix $(DESTDIR)$(INCDIR)/,$(notdir $(INST_HDRS))) \
	  $(addprefix $(DESTDIR)$(DATADIR)/scripts/,$(notdir $(SCRIPTS))) \
	  $(addprefix $(DESTDIR)$(DATADIR)/scripts/lib/,$(notdir $(SCRIPT_LIB)))
	rmdir $(DESTDIR)$(LUA_LDIR)/mb $(DESTDIR)$(INCDIR) $(DESTDIR)$(DATADIR)/scripts/lib \
	  $(DESTDIR)$(DATADIR)/scripts $(DESTDIR)$(DATADIR) 2>/dev/null || true

clean:
	rm -rf $(B)
