# mb — a Lua-scriptable message bus runtime.
#
#   make run     install what is missing, build, run the Jungle Gyms demo
#   make check   the quick round (about a minute): build, C tests, busted specs
#   make test    install what is missing, build, run every test: C tests,
#                busted specs, the same under ASan+UBSan, a bounded walk of
#                allocation failures (make failalloc: all of it), the
#                threaded C tests and specs under TSan, the C tests, the
#                specs and the demo under valgrind
#   make bench   the benchmarks (bench/README.md)
#   make         build build/mb.so (the Lua module) and build/mbrun

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
# libraries that ship a .pc file come through pkg-config; libev and
# mimalloc ship none
PC_LIBS  = lua5.4 yajl libedit
CPPFLAGS += -Iruntime -Iruntime/core -Iruntime/lua -Iruntime/cli $(shell pkg-config --cflags $(PC_LIBS) 2>/dev/null)
LUA_LIB  = $(shell pkg-config --libs lua5.4 2>/dev/null)
EDIT_LIB = $(shell pkg-config --libs libedit 2>/dev/null)
YAJL_LIB = $(shell pkg-config --libs yajl 2>/dev/null)
# libnats (the NATS client, runtime/cluster) ships a .pc file as well
NATS_LIB = $(shell pkg-config --libs libnats 2>/dev/null || echo -lnats)
LIBS    = -lev $(YAJL_LIB) -lmimalloc -lpthread -lm
# the sanitizer and valgrind builds allocate with the C library's malloc
# (runtime/core/mb_alloc.h), so that the tools see every block
TOOL_LIBS = -lev $(YAJL_LIB) -lpthread -lm
LIBC_MALLOC = -DMB_LIBC_MALLOC

# The layers, as in Lua's own makefile: the core (runtime/core, no Lua;
# runtime/mb.h is its face), the cluster (runtime/cluster: the core's link
# over NATS), the Lua binding (runtime/lua), the program (runtime/cli:
# mbrun and the REPL's terminal side).
CORE_SRC = $(addprefix runtime/core/,mb_value.c mb_json.c mb_map.c mb_base.c mb_msg.c mb_worker.c mb_service.c \
           mb_observe.c mb_show.c mb_dest.c mb_request.c mb_delivery.c mb_dispatch.c mb_send.c mb_runtime.c)
CLUSTER_SRC = $(addprefix runtime/cluster/,mb_nats_lib.c mb_nats_ev.c mb_wire.c mb_link_pub.c mb_link_acks.c \
              mb_link_recv.c mb_link_stats.c mb_cluster.c mb_durable.c)
LUA_SRC  = $(CLUSTER_SRC) $(addprefix runtime/lua/,mbl_cluster.c mbl_value.c mbl_show.c mbl_task.c \
           mbl_time.c mbl_dest.c mbl_msg.c mbl_share.c \
           mbl_service.c mbl_reload.c mbl_svclist.c mbl_watch.c lmb.c)
MBRUN_SRC = $(addprefix runtime/cli/,mbrun.c mbrun_stats.c mbrun_graph.c mbrun_stop.c mbrepl.c)
TEST_SRC = $(addprefix spec/c/,test_core.c helpers.c test_values.c test_json.c test_show.c test_dest.c \
           test_delivery.c test_request.c test_observe.c test_runtime.c test_threads.c)

# Debian packages the build and the tests need (see README, "Dependencies").
# graphviz is optional for users (mbrun --graph=svg); the tests check that
# path too, so `make test` installs it.
DEB_PKGS = gcc make pkg-config liblua5.4-dev lua5.4 libev-dev libyajl-dev libedit-dev libmimalloc-dev lua-busted \
           valgrind lua-cjson lua-mediator libnats-dev nats-server
TEST_PKGS = graphviz tmux clang libclang-rt-14-dev openssl

B  = build
BA = build/asan
BT = build/tsan
BV = build/valgrind
SAN = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

.PHONY: all deps test-deps install-pkgs run run-cluster run-durable test check spec asan-spec tsan valgrind clean c-tests \
        bench bench-cluster bench-durable
.PHONY: install uninstall fuzz fuzz-short nats-tests nats-spec

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

# ---- build flavours --------------------------------------------------------
# Each flavour compiles every source once into DIR/obj/ (position-independent,
# so the same objects make mb.so, mbrun and test_core) with a dependency file
# beside each object, and links DIR/mb.so, DIR/mbrun and DIR/test_core.
#   $(call flavour,DIR,CFLAGS,LIBS)
objs = $(patsubst %.c,$(1)/obj/%.o,$(2))
define flavour
$(1)/obj/%.o: %.c
	@mkdir -p $$(@D)
	$$(CC) $(2) $$(WARN) $$(CPPFLAGS) -fPIC -MMD -MP -c -o $$@ $$<
$(1)/mb.so: $$(call objs,$(1),$$(CORE_SRC) $$(LUA_SRC))
	$$(CC) $(2) -shared -o $$@ $$^ $(3)
$(1)/mbrun: $$(call objs,$(1),$$(CORE_SRC) $$(LUA_SRC) $$(MBRUN_SRC))
	$$(CC) $(2) -o $$@ $$^ $$(LUA_LIB) $$(EDIT_LIB) $(3)
$(1)/test_core: $$(call objs,$(1),$$(CORE_SRC) $$(TEST_SRC))
	$$(CC) $(2) -o $$@ $$^ $(3)
-include $$(wildcard $(1)/obj/*/*.d $(1)/obj/*/*/*.d)
endef

$(eval $(call flavour,$(B),$(CFLAGS),$(LIBS)))
$(eval $(call flavour,$(BA),-O1 -g $(SAN) $(LIBC_MALLOC),$(SAN) $(TOOL_LIBS)))
# the threaded code under ThreadSanitizer: the C tests of the hand-off
# between workers (test_core threads), mbrun running the worker scenarios
$(eval $(call flavour,$(BT),-O1 -g -fsanitize=thread $(LIBC_MALLOC),-fsanitize=thread $(TOOL_LIBS)))
# as built, but with the C library's malloc, for valgrind
$(eval $(call flavour,$(BV),$(CFLAGS) $(LIBC_MALLOC),$(TOOL_LIBS)))

# ---- NATS (SPEC §6): the libev adapter for nats.c, its tests, the baseline
# benchmark. libnats ships a .pc file; kept apart from PC_LIBS so that the
# rest builds without it.
NATS_EV_SRC = runtime/cluster/mb_nats_lib.c runtime/cluster/mb_nats_ev.c
define nats_flavour
$(1)/test_nats_ev: $$(call objs,$(1),$$(NATS_EV_SRC) spec/c/test_nats_ev.c)
	$$(CC) $(2) -o $$@ $$^ $$(NATS_LIB) $(3)
endef
$(eval $(call nats_flavour,$(B),$(CFLAGS),$(LIBS)))
$(eval $(call nats_flavour,$(BA),-O1 -g $(SAN) $(LIBC_MALLOC),$(SAN) $(TOOL_LIBS)))
$(eval $(call nats_flavour,$(BT),-O1 -g -fsanitize=thread $(LIBC_MALLOC),-fsanitize=thread $(TOOL_LIBS)))

# each build starts its own nats-server on a free loopback port (never the
# system service); without nats-server they skip, with CI=true they fail
# the cluster specs (spec/cluster) run in `make spec` and `make asan-spec`
# with the rest; here the adapter's C tests and, under TSan, mbrun nodes
nats-tests: $(B)/test_nats_ev $(BA)/test_nats_ev $(BT)/test_nats_ev $(B)/mb.so $(BT)/mbrun
	$(B)/test_nats_ev
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BA)/test_nats_ev
	TSAN_OPTIONS="halt_on_error=1 suppressions=spec/tsan/nats.supp" $(BT)/test_nats_ev
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/spec/tsan/nats.supp" \
	  LUA_CPATH='$(B)/?.so;;' MBRUN=$(BT)/mbrun $(BUSTED)/cluster/cluster_spec.lua \
	  spec/cluster/durable_spec.lua

tsan: $(BT)/mbrun $(B)/mb.so $(BT)/test_core
	TSAN_OPTIONS=halt_on_error=1 $(BT)/test_core threads
	TSAN_OPTIONS=halt_on_error=1 LUA_CPATH='$(B)/?.so;;' MBRUN=$(BT)/mbrun STRESS_N=20000 RELOAD_N=20000 \
	  lua5.4 /usr/bin/busted -o utfTerminal spec/workers/workers_spec.lua
	TSAN_OPTIONS=halt_on_error=1 LUA_CPATH='$(B)/?.so;;' MBRUN=$(BT)/mbrun SOAK_SECONDS=2 \
	  lua5.4 /usr/bin/busted -o utfTerminal spec/workers/soak_spec.lua
	TSAN_OPTIONS=halt_on_error=1 $(BT)/mbrun -w 4 --trace --stats --graph $(DEMO) \
	  > /dev/null 2> $(BT)/demo.err || { grep -v '^trace ' $(BT)/demo.err; exit 1; }
	TSAN_OPTIONS=halt_on_error=1 $(BT)/mbrun -w 4 < spec/tsan/repl_input.txt \
	  > /dev/null 2> $(BT)/repl.err || { grep -v '^trace ' $(BT)/repl.err; exit 1; }
	@echo "tsan: trace, stats, graph and the REPL's output path ran clean"

DEMO = -c examples/jungle-gyms/config.lua examples/jungle-gyms/scenario.lua

# Allocation-failure injection (runtime/core/mb_alloc.h, runtime/core/mb_failalloc.c):
# the core and the binding built with ASan+UBSan, every allocation of theirs
# and of each Lua state counted, the Nth failing (MB_FAIL_AT=N).
# tools/failalloc.lua walks N over every allocation of a few scenarios and
# checks each run: no crash, no sanitizer report, no leak, an error reported
# or success, the stats invariant. `make failalloc` walks every N;
# FAILALLOC_RUNS bounds the runs per scenario (make test: about 2 minutes).
BFA = build/failalloc
FA_FLAGS = -O1 -g $(SAN) $(LIBC_MALLOC) $(WARN) $(CPPFLAGS)
FA_LIB_OBJ = $(patsubst %.c,$(BFA)/lib/%.o,$(CORE_SRC) $(LUA_SRC) runtime/core/mb_failalloc.c)
FA_CORE_OBJ = $(patsubst %.c,$(BFA)/lib/%.o,$(CORE_SRC) runtime/core/mb_failalloc.c)
FA_PROG_OBJ = $(patsubst %.c,$(BFA)/prog/%.o,$(MBRUN_SRC))
FAILALLOC_RUNS ?= 0
# the core and the binding count their allocations; the program does not
$(BFA)/lib/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(FA_FLAGS) -DMB_FAILALLOC -include runtime/core/mb_alloc.h -fPIC -MMD -MP -c -o $@ $<
$(BFA)/prog/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(FA_FLAGS) -MMD -MP -c -o $@ $<
-include $(wildcard $(BFA)/*/*/*/*.d $(BFA)/*/*/*/*/*.d)
$(BFA)/mb.so: $(FA_LIB_OBJ)
	$(CC) $(SAN) -shared -o $@ $(FA_LIB_OBJ) $(TOOL_LIBS)
$(BFA)/mbrun: $(FA_LIB_OBJ) $(FA_PROG_OBJ)
	$(CC) $(SAN) -o $@ $(FA_LIB_OBJ) $(FA_PROG_OBJ) $(LUA_LIB) $(EDIT_LIB) $(TOOL_LIBS)
$(BFA)/test_failalloc: $(FA_CORE_OBJ) spec/c/test_failalloc.c spec/c/check.h
	$(CC) $(FA_FLAGS) -o $@ spec/c/test_failalloc.c $(FA_CORE_OBJ) $(TOOL_LIBS)

.PHONY: failalloc failalloc-quick
failalloc: $(BFA)/mb.so $(BFA)/mbrun $(BFA)/test_failalloc
	ASAN_OPTIONS=detect_leaks=1 $(BFA)/test_failalloc
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BFA) --runs $(FAILALLOC_RUNS) --count 1
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BFA) --runs $(FAILALLOC_RUNS) --count 3
failalloc-quick: $(BFA)/mb.so $(BFA)/mbrun $(BFA)/test_failalloc
	ASAN_OPTIONS=detect_leaks=1 $(BFA)/test_failalloc
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BFA) --runs 60 --count 1
	CC=$(CC) lua5.4 tools/failalloc.lua --dir $(BFA) --runs 60 --count 3

run: deps
	@$(MAKE) --no-print-directory all
	$(B)/mbrun $(DEMO)

# the cluster example: a private nats-server and three mbrun nodes
run-cluster: deps
	@$(MAKE) --no-print-directory all
	sh examples/cluster/run.sh $(B)/mbrun

# its durable part: a private nats-server -js killed and restarted on its store
run-durable: deps
	@$(MAKE) --no-print-directory all
	sh examples/cluster/durable.sh $(B)/mbrun

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

# The C tests with every area, threads too, under valgrind's fair scheduler.
# valgrind runs one thread at a time under one lock, and its default lock
# is not fair on multicore machines: a thread that drops it may take it
# straight back. In test_threads_stop_* one worker resends to itself flat
# out and drops the lock only at the end of a quantum (~100k blocks) or at
# a system call; worker 0 sees the stop the first time it gets the lock
# (measured: within 0.2 s at each of 150 stops), but on a
# loaded machine it can lose that race long enough for its run to end by
# the 25 s bound instead (2 of 4 `make test` runs on 2026-12-03). The
# ticket lock of --fair-sched=yes hands the lock round in turn.
valgrind: $(BV)/mbrun $(BV)/mb.so $(BV)/test_core
	$(VALGRIND) --fair-sched=yes $(BV)/test_core
	LUA_CPATH='$(BV)/?.so;;' MBRUN=$(BV)/mbrun $(VALGRIND) $(BUSTED)
	$(VALGRIND) $(BV)/mbrun $(DEMO) > /dev/null

# the quick round: the normal build, the C tests and the specs
check: test-deps
	@$(MAKE) --no-print-directory all
	$(MAKE) c-tests
	$(MAKE) spec
	@echo "make check: passed (make test runs the sanitizer and valgrind rounds too)"

test: test-deps
	@$(MAKE) --no-print-directory all
	$(MAKE) c-tests
	$(MAKE) fuzz-short
	$(MAKE) spec
	$(MAKE) asan-spec
	$(MAKE) failalloc-quick
	$(MAKE) tsan
	$(MAKE) valgrind
	$(MAKE) nats-tests
	@echo "make test: all suites passed"

# ---- fuzzing (fuzz/README.md) ---------------------------------------------
# libFuzzer harnesses built with Debian's clang, under ASan and UBSan. Each
# starts from its committed seed corpus (fuzz/corpus/NAME) and keeps what it
# finds in build/fuzz/corpus/NAME; a crash leaves build/fuzz/crash-NAME-*.
# `make fuzz FUZZ_TIME=60` runs each for FUZZ_TIME seconds, one after the
# other; `make fuzz-short` (part of `make test`) for FUZZ_SHORT seconds each.
FUZZ_CC    = clang-14
FUZZ_FLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
             -fno-omit-frame-pointer $(LIBC_MALLOC) $(WARN) $(CPPFLAGS) -DMB_SRCDIR='"$(CURDIR)"'
FUZZERS    = json value show pretty config
FUZZ_TIME ?= 60
FUZZ_SHORT ?= 10
BF = $(B)/fuzz
HDRS = $(wildcard runtime/*.h runtime/*/*.h)

$(BF):
	mkdir -p $@

$(BF)/json $(BF)/show: $(BF)/%: fuzz/fuzz_%.c $(CORE_SRC) $(HDRS) | $(BF)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) $(TOOL_LIBS)

FUZZ_LUA_SRC = runtime/lua/mbl_value.c runtime/lua/mbl_show.c
$(BF)/value $(BF)/pretty: $(BF)/%: fuzz/fuzz_%.c fuzz/fuzz_lua.h $(CORE_SRC) $(FUZZ_LUA_SRC) $(HDRS) | $(BF)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) $(FUZZ_LUA_SRC) $(LUA_LIB) $(TOOL_LIBS)

$(BF)/config: fuzz/fuzz_config.c $(CORE_SRC) $(LUA_SRC) $(HDRS) | $(BF)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRC) $(LUA_SRC) $(LUA_LIB) $(TOOL_LIBS)

# runs each harness for $(1) seconds on one core
define run_fuzzers
	@for f in $(FUZZERS); do \
	  mkdir -p $(BF)/corpus/$$f; \
	  echo "fuzz $$f: $(1) s"; \
	  $(BF)/$$f -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(BF)/crash-$$f- $(BF)/corpus/$$f fuzz/corpus/$$f \
	    > $(BF)/$$f.log 2>&1 || { tail -50 $(BF)/$$f.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|DONE' $(BF)/$$f.log | tr '\n' ' '; echo; \
	done
endef

fuzz: $(addprefix $(BF)/,$(FUZZERS))
	$(call run_fuzzers,$(FUZZ_TIME))

fuzz-short: $(addprefix $(BF)/,$(FUZZERS))
	$(call run_fuzzers,$(FUZZ_SHORT))

# Benchmarks: each scenario against its baseline, alternately; a table on
# stdout, the same as JSON in build/bench.json (BENCH_OUT=path to change).
BENCH_OUT ?= $(B)/bench.json
bench: deps
	@$(MAKE) --no-print-directory all $(B)/mb_limit.so $(B)/nats_raw $(B)/js_raw
	LUA_CPATH='$(B)/?.so;;' lua5.4 bench/run.lua --out $(BENCH_OUT)
	LUA_CPATH='$(B)/?.so;;' MBRUN=$(B)/mbrun lua5.4 bench/cluster.lua
	LUA_CPATH='$(B)/?.so;;' MBRUN=$(B)/mbrun lua5.4 bench/durable.lua

# the cluster benchmarks alone (issue 14): mbrun nodes over a private
# nats-server against build/nats_raw, alternately (bench/README.md)
bench-cluster: deps
	@$(MAKE) --no-print-directory all $(B)/nats_raw
	LUA_CPATH='$(B)/?.so;;' MBRUN=$(B)/mbrun lua5.4 bench/cluster.lua

# the durable benchmark alone (issue 16): an mbrun node's durable sends and
# deliveries against build/js_raw (plain libnats JetStream), alternately
bench-durable: deps
	@$(MAKE) --no-print-directory all $(B)/js_raw
	LUA_CPATH='$(B)/?.so;;' MBRUN=$(B)/mbrun lua5.4 bench/durable.lua

$(B)/js_raw: bench/c/js_raw.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -o $@ bench/c/js_raw.c $(NATS_LIB) -lpthread

# the C floors of benchmarks 1c, 1p, 1sc, 1zc, 1zk, 2c, 3c and 7c: SPEC's message with no bus
$(B)/mb_limit.so: bench/c/limit.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared $(CPPFLAGS) $< -o $@

# the NATS baselines (issue 14): plain libnats on a libev loop, with the
# same loop integration inlined or through runtime/cluster/mb_nats_ev.c
# (--adapter mb), and nats.c's own threads for comparison: build/nats_raw -h
$(B)/nats_raw: bench/c/nats_raw.c $(NATS_EV_SRC) runtime/cluster/mb_nats_ev.h spec/c/nats_server.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -DMB_NATS_DIRECT -o $@ bench/c/nats_raw.c $(NATS_EV_SRC) $(NATS_LIB) -lev -lpthread -lm

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
$(B)/libmb.a: $(call objs,$(B),$(CORE_SRC))
	rm -f $@
	$(AR) rcs $@ $^

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
