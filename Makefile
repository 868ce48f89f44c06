# gce-guest — build, test, demo, bench. `make` builds the static release binary.

TARGET      := x86_64-unknown-linux-musl
CARGO       ?= cargo
RELEASE_BIN := target/$(TARGET)/release/gce-guest
TINY_BIN    := target/tiny/$(TARGET)/release/gce-guest
EMU_BIN     := target/emulator/$(TARGET)/release/gce-guest
DESTDIR     ?=
PREFIX      ?= /usr
BINDIR      ?= $(PREFIX)/bin

.PHONY: all release tiny emulator test test-long demo bench hot-code install prereqs clean fmt lint

all: release

# The musl target and musl-gcc (for the C in TLS crates) are installed when missing.
prereqs:
	@rustup target list --installed 2>/dev/null | grep -qx $(TARGET) || rustup target add $(TARGET)
	@command -v musl-gcc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null; }

release: prereqs
	$(CARGO) build --release --locked --target $(TARGET)
	@printf '%s  %s bytes\n' "$(RELEASE_BIN)" "$$(stat -c %s $(RELEASE_BIN))"

# Without built-in TLS (the metadata server is plain HTTP; https scripts use curl/wget).
tiny: prereqs
	CARGO_TARGET_DIR=target/tiny $(CARGO) build --release --locked --target $(TARGET) --no-default-features
	@printf '%s  %s bytes\n' "$(TINY_BIN)" "$$(stat -c %s $(TINY_BIN))"

# Release build with the metadata-server emulator applet, for the demo and the bench.
emulator: prereqs
	CARGO_TARGET_DIR=target/emulator $(CARGO) build --release --locked --target $(TARGET) --no-default-features --features emulator
	@printf '%s  %s bytes\n' "$(EMU_BIN)" "$$(stat -c %s $(EMU_BIN))"

# Unit and integration tests, run against the static musl build.
test: prereqs
	bash tests/run-tests.sh --locked --target $(TARGET) --features emulator

# Minutes-long runs kept out of CI: fuzzing and real-time outages.
test-long: prereqs
	GCE_GUEST_LONG=1 $(CARGO) test --locked --target $(TARGET) --features emulator -- --ignored
	bash tests/fuzz/run-all.sh

demo: emulator
	bash tests/demo.sh $(EMU_BIN)

# Each part prints its own table; numbers are measured here, never asserted. The release
# test builds go to target/bench so they never replace the product binary; the accounts
# daemon measured there is the product binary itself (its memory depends on its layout).
bench: release tiny emulator
	python3 tests/bench.py
	GCE_GUEST_BENCH_BINARY=$(CURDIR)/$(RELEASE_BIN) \
	  CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator \
	  --test bench_accounts --test bench_scripts -- --ignored --nocapture --test-threads=1
	CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator \
	  --test ip_forwarding -- --ignored bench --nocapture --test-threads=1
	CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator \
	  --test disk_expand -- --ignored bench --nocapture --test-threads=1

# Re-profiles which code the daemons run and rewrites src/link/hot-code.ld (see
# tests/hot_code.py). Needs valgrind; run it when `make bench` shows the idle RSS creeping up.
# The profiled build is the release build with symbols kept: RUSTFLAGS leave symbol names
# alone, while another cargo profile setting would change their hashes.
PROFILE_DIR := target/profile
hot-code: prereqs emulator
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	CARGO_TARGET_DIR=$(PROFILE_DIR) \
	  RUSTFLAGS="-C strip=none -C link-arg=-Wl,-Map=$(CURDIR)/$(PROFILE_DIR)/gce-guest.map" \
	  $(CARGO) build --release --locked --target $(TARGET)
	python3 tests/hot_code.py $(PROFILE_DIR)/$(TARGET)/release/gce-guest $(PROFILE_DIR)/gce-guest.map src/link/hot-code.ld

install: release
	install -D -m 0755 $(RELEASE_BIN) $(DESTDIR)$(BINDIR)/gce-guest
	$(DESTDIR)$(BINDIR)/gce-guest --install -s -f $(DESTDIR)$(BINDIR) >/dev/null

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --all-targets --features emulator -- -D warnings

clean:
	$(CARGO) clean
