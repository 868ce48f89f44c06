# gce-guest — build, test, demo, bench. `make` builds the static release binary.

TARGET      := x86_64-unknown-linux-musl
CARGO       ?= cargo
RELEASE_BIN := target/$(TARGET)/release/gce-guest
TINY_BIN    := target/tiny/$(TARGET)/release/gce-guest
EMU_BIN     := target/emulator/$(TARGET)/release/gce-guest
DESTDIR     ?=
PREFIX      ?= /usr
BINDIR      ?= $(PREFIX)/bin
# make install / deb / rpm / tarball: the binary packaged (BIN=... reuses another build,
# e.g. a test build, instead of building the release binary), the init system, the
# optional rsyslog console rule, where packages go; the version comes from Cargo.toml.
BIN         ?= $(RELEASE_BIN)
INIT        ?= systemd
RSYSLOG     ?= 0
DISTDIR     ?= target/dist
VERSION     := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
BIN_DEP     := $(if $(filter $(RELEASE_BIN),$(BIN)),release)

.PHONY: all release tiny emulator test test-long vm-test demo bench hot-code install deb rpm tarball packages prereqs clean fmt lint

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

# Release build with the metadata-server emulator applet and the test hooks (the demo
# speeds time up), for the demo and the bench.
emulator: prereqs
	CARGO_TARGET_DIR=target/emulator $(CARGO) build --release --locked --target $(TARGET) --no-default-features --features emulator,test-hooks
	@printf '%s  %s bytes\n' "$(EMU_BIN)" "$$(stat -c %s $(EMU_BIN))"

# Unit and integration tests, run against the static musl build, with the test-only hooks
# (time scale, fault injection, test endpoints) on. tools/prereqs.sh installs the packages
# the tests use when they are missing. The release binary is built first: a test checks
# that the product has none of the hooks.
test: prereqs release
	bash tools/prereqs.sh
	GCE_GUEST_PRODUCT_BINARY=$(CURDIR)/$(RELEASE_BIN) GCE_GUEST_VENDORED_TESTS=vendor/minreq/Cargo.toml \
	  bash tools/run-tests.sh --locked --target $(TARGET) --features emulator,test-hooks

# Minutes-long runs kept out of CI: fuzzing and real-time outages.
test-long: prereqs
	bash tools/prereqs.sh
	GCE_GUEST_LONG=1 $(CARGO) test --locked --target $(TARGET) --features emulator,test-hooks \
	  --test integration -- --ignored accounts_long::
	bash tests/fuzz/run-all.sh

# Boots busybox-only guests whose only agent is gce-guest under QEMU (TCG unless KVM
# works; VM_KVM=1 asks for KVM), installed with INIT=busybox and INIT=openrc, and prints
# one `vm-check RUN/NAME: ok|FAILED` line per check (tools/vm/, README "VM test"). Needs
# root; CI runs it after `make test`.
vm-test: release emulator
	sh tools/vm/prereqs.sh
	bash tools/vm/build-guest.sh $(RELEASE_BIN)
	bash tools/vm/run.sh $(RELEASE_BIN) $(EMU_BIN)

demo: emulator
	bash tools/demo.sh $(EMU_BIN)

# Each part prints its own table; numbers are measured here, never asserted. The release
# test builds go to target/bench so they never replace the product binary; the accounts
# daemon measured there is the product binary itself (its memory depends on its layout).
bench: release tiny emulator
	python3 tools/bench.py
	GCE_GUEST_BENCH_BINARY=$(CURDIR)/$(RELEASE_BIN) \
	  CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator,test-hooks \
	  --test integration -- --ignored --nocapture --test-threads=1 bench_accounts:: bench_scripts:: bench_setup::
	CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator,test-hooks \
	  --test integration -- --ignored --nocapture --test-threads=1 ip_forwarding::bench_ disk_expand::bench_
	CARGO_TARGET_DIR=target/bench $(CARGO) test --release --locked --target $(TARGET) --features emulator,test-hooks \
	  --lib -- --ignored --nocapture accounts::round_costs::

# Re-profiles which code the daemons run and rewrites src/link/hot-code.ld (see
# tools/hot_code.py). Needs valgrind; run it when `make bench` shows the idle RSS creeping up.
# The profiled build is the release build with symbols kept: RUSTFLAGS leave symbol names
# alone, while another cargo profile setting would change their hashes.
PROFILE_DIR := target/profile
hot-code: prereqs emulator
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	CARGO_TARGET_DIR=$(PROFILE_DIR) \
	  RUSTFLAGS="-C strip=none -C link-arg=-Wl,-Map=$(CURDIR)/$(PROFILE_DIR)/gce-guest.map" \
	  $(CARGO) build --release --locked --target $(TARGET)
	python3 tools/hot_code.py $(PROFILE_DIR)/$(TARGET)/release/gce-guest $(PROFILE_DIR)/gce-guest.map src/link/hot-code.ld

# The binary, its applet links, the init files of INIT (systemd, sysvinit, upstart, openrc,
# busybox), the google_configs files (sysctl, udev, modprobe; rsyslog with RSYSLOG=1) and
# /etc/default/instance_configs.cfg when absent. packaging/install.sh does the work (the
# tarball's install.sh is the same script).
install: $(BIN_DEP)
	BINDIR=$(BINDIR) sh packaging/install.sh --destdir "$(DESTDIR)" --bin $(BIN) --init $(INIT) \
	  $(if $(filter 1,$(RSYSLOG)),--rsyslog)

# Packages, into $(DISTDIR): dpkg-deb, rpmbuild (packaging/rpm/gce-guest.spec), and a
# tarball with install.sh.
deb: $(BIN_DEP)
	sh packaging/deb/build.sh $(VERSION) $(BIN) $(DISTDIR)

rpm: $(BIN_DEP)
	sh packaging/rpm/build.sh $(VERSION) $(BIN) $(DISTDIR)

tarball: $(BIN_DEP)
	sh packaging/tarball/build.sh $(VERSION) $(BIN) $(DISTDIR)

packages: deb rpm tarball

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --all-targets --features emulator,test-hooks -- -D warnings

clean:
	$(CARGO) clean
