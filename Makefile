# tollgate: build, test, benchmark, fuzz and install.
#
#   make demo            a local chain, the gateway and paid calls, step by step
#   make                 library (static and shared) and the `tollgate` CLI
#   make test            installs missing dependencies, builds, runs every suite
#   make test SANITIZE=address,undefined   the same under ASan+UBSan
#   make bench           benchmarks (print figures; see docs/PERFORMANCE.md)
#   make soak            memory soak: 10,000 channels, 1,000 connections, SOAK_SECS (default 600)
#   make fuzz            libFuzzer drivers, FUZZ_SECONDS each (default 600)
#   make install PREFIX=/usr/local DESTDIR=
#   make deps            only the dependency step (Debian -dev packages, npm ci)
#   make clean

PREFIX      ?= /usr/local
DESTDIR     ?=
SANITIZE    ?=
FUZZ_SECONDS ?= 600
VERSION     := 0.1.0

CC      ?= cc
PKGS    := libsecp256k1 libsodium jansson libcurl libevent libevent_pthreads sqlite3 libpq libcrypto

ifeq ($(SANITIZE),)
BUILD   ?= build
OPT     ?= -O2
else
BUILD   ?= build-san
OPT     ?= -O1 -fno-omit-frame-pointer -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lsecp256k1 -lpthread -lm

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla \
           -Wno-missing-field-initializers
CFLAGS  ?= $(OPT) -g
ALL_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -fPIC $(WARN) $(CFLAGS) \
              -Iinclude -Igateway $(PKG_CFLAGS)
ALL_LDFLAGS := $(LDFLAGS) $(if $(SANITIZE),-fsanitize=$(SANITIZE))

# The library: every .c under gateway/ except the thin mains.
LIB_SRC  := $(sort $(filter-out gateway/cli/% gateway/daemon/%,$(wildcard gateway/*/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard gateway/cli/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
DMN_SRC  := $(sort $(wildcard gateway/daemon/*.c))
DMN_OBJ  := $(DMN_SRC:%.c=$(BUILD)/obj/%.o)

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(sort $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c)))
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/obj/%.o)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz-replay/%)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_SRC := $(sort $(wildcard tests/bench/bench_*.c))
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

LIBA    := $(BUILD)/libtollgate.a
LIBSO   := $(BUILD)/libtollgate.so.0
CLI     := $(BUILD)/tollgate
DAEMON  := $(if $(DMN_SRC),$(BUILD)/tollgated)

.PHONY: all test unit bench soak fuzz fuzz-build install uninstall clean deps check-tools demo
.DEFAULT_GOAL := all

all: $(LIBA) $(LIBSO) $(CLI) $(DAEMON)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(LIBSO): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libtollgate.so.0 $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(CLI): $(CLI_OBJ) $(LIBA)
	$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(LIBA) $(PKG_LIBS)

$(BUILD)/tollgated: $(DMN_OBJ) $(LIBA)
	$(CC) $(ALL_LDFLAGS) -o $@ $(DMN_OBJ) $(LIBA) $(PKG_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(TEST_LIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(ALL_LDFLAGS) -o $@ $< $(TEST_LIB_OBJ) $(LIBA) $(PKG_LIBS) -lz

# Fuzz drivers built without libFuzzer, with a main that replays the corpus.
$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< tests/fuzz/replay.c $(LIBA) $(PKG_LIBS)

# Test tools: stand-in servers and helpers that tests start as processes.
$(BUILD)/tools/%: tests/tools/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIBA) $(PKG_LIBS)

$(BUILD)/bench/%: tests/bench/%.c $(TEST_LIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(ALL_LDFLAGS) -o $@ $< $(TEST_LIB_OBJ) $(LIBA) $(PKG_LIBS) -lz

deps:
	@tests/deps.sh

# The first run: installs what is missing, builds, and shows paid calls end to end.
demo:
	@tests/deps.sh
	@$(MAKE) --no-print-directory all $(TOOL_BIN)
	@node tests/demo/demo.mjs

unit: all $(UNIT_BIN) $(FUZZ_REPLAY) $(TOOL_BIN)

# The whole suite: dependency step first (it installs what the build needs).
test:
	@tests/deps.sh
	@$(MAKE) --no-print-directory unit
	@BUILD=$(BUILD) SANITIZE=$(SANITIZE) tests/run.sh

bench: all $(BENCH_BIN) $(TOOL_BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done
	@for s in tests/bench/*.sh; do [ -x "$$s" ] || continue; echo "== $$s"; BUILD=$(BUILD) $$s || exit 1; done

# Memory soak (not in `make test`, ~12 min): 10,000 open channels, 1,000 connections of paid calls
# for SOAK_SECS (default 600), tollgated's resident set sampled every 10 s (docs/PERFORMANCE.md).
SOAK_SECS ?= 600
soak: all $(BUILD)/bench/bench_paid $(TOOL_BIN)
	@SOAK_SECS=$(SOAK_SECS) TG_BUILD=$(BUILD) $(BUILD)/bench/bench_paid

# libFuzzer builds (clang) of every driver; each runs FUZZ_SECONDS on its corpus.
FUZZ_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -g -O1 $(WARN) \
               -Iinclude -Igateway $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined
FUZZ_LIB_SRC := $(LIB_SRC)
build-fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIB_SRC) $(PKG_LIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; mkdir -p build-fuzz/corpus-$$n; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      $$( [ -f tests/fuzz/$$n.dict ] && echo -dict=tests/fuzz/$$n.dict ) \
	      build-fuzz/corpus-$$n tests/fuzz/corpus/$${n#fuzz_} || exit 1; done

install: all
	install -d $(DESTDIR)$(PREFIX)/include/tollgate $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	           $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	           $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 644 include/tollgate/*.h $(DESTDIR)$(PREFIX)/include/tollgate/
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libtollgate.so.0 $(DESTDIR)$(PREFIX)/lib/libtollgate.so
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	$(if $(DAEMON),install -m 755 $(DAEMON) $(DESTDIR)$(PREFIX)/bin/)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: tollgate' 'Description: pay-per-call gateway library: Ethereum primitives, x402 payments' \
	  'Version: $(VERSION)' 'Requires.private: $(filter-out libsecp256k1,$(PKGS))' \
	  'Libs: -L$${libdir} -ltollgate' 'Libs.private: -lsecp256k1 -lpthread -lm' 'Cflags: -I$${includedir}' \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tollgate.pc
	for m in docs/man/*.1; do [ -f "$$m" ] && install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man1/; done; true
	for m in docs/man/*.5; do [ -f "$$m" ] && install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man5/; done; true
	for m in docs/man/*.8; do [ -f "$$m" ] && install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man8/; done; true

clean:
	rm -rf build build-san build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(DMN_OBJ:.o=.d) $(TEST_LIB_OBJ:.o=.d)
