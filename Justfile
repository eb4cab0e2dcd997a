# Common tasks. `just --list` shows them.

# Run the agent on built-in defaults (./fileagent-data, 127.0.0.1:7341).
run:
    cargo run --release -- serve

# Run the whole test suite.
test:
    cargo test

# Everything CI runs: format check, lints, tests.
ci:
    .ci/run

# The web page's screenshots in docs/, from the browser test (Debian's chromium and chromium-driver).
screenshots:
    cargo test --test it browser::
    cp target/ui-screenshots/ui-light.png target/ui-screenshots/ui-dark-narrow.png docs/

# Format the code.
fmt:
    cargo fmt --all

# Lints as CI runs them.
lint:
    cargo clippy --all-targets -- -D warnings

# Release build.
release:
    cargo build --release

# Build target/debian/fileagent_<version>_<arch>.deb (needs debhelper).
deb:
    scripts/build-deb.sh

# Prepare this Debian/Ubuntu host for the Raspberry Pi builds (apt, arm std; once).
cross-setup:
    cross/setup-debian.sh

# The Pi package's binary for 64-bit Raspberry Pi OS (aarch64): built for size, no bridge.
build-arm64:
    cross/cargo.sh arm64 build --profile pi --no-default-features --locked --bin fileagent

# The Pi package's binary for 32-bit Raspberry Pi OS (armv7 hard-float): built for size, no bridge.
build-armhf:
    cross/cargo.sh armhf build --profile pi --no-default-features --locked --bin fileagent

# target/debian/fileagent_<version>_arm64.deb
deb-arm64:
    scripts/build-deb.sh arm64

# target/debian/fileagent_<version>_armhf.deb
deb-armhf:
    scripts/build-deb.sh armhf

# The test suite for an arm target under qemu-user (arm64 or armhf).
test-arm target="arm64":
    cross/cargo.sh {{target}} test --locked

# Release artefacts in target/dist/: the three .debs, the Windows zip, SHA256SUMS.
dist:
    scripts/dist.sh

# Prepare this host for the Windows build (mingw-w64, wine, the test wine prefix; once).
windows-setup:
    cross/windows.sh setup

# fileagent.exe for Windows (x86_64-pc-windows-gnu), from Debian packages only.
build-windows:
    cross/windows.sh build --release --locked

# The workstation tests with fileagent.exe under wine against the native agent.
test-windows:
    cross/windows.sh build --locked
    cross/windows.sh test

# The arm64 .deb under systemd in an emulated arm64 VM (root; first run ~20 min, then a few).
vm-test-arm64:
    tests/e2e/vm-arm64.sh

# Install the .deb into a booted Debian (systemd-nspawn) and test it end to end (root).
e2e-deb:
    tests/e2e/deb-in-systemd.sh

# Every benchmark of docs/performance.md in one run, as ratios against baselines (root; see benches/all.sh).
bench:
    benches/all.sh

# Send a 1 GiB file (or FILE) over loopback; prints time, rate, peak RSS and baselines.
bench-send file="":
    benches/send-1gib.sh {{file}}

# Handshakes per second against plain TCP connects.
bench-handshakes seconds="5" tasks="4":
    cargo bench --bench handshakes -- {{seconds}} {{tasks}}

# Short fuzz runs of every target (cargo-fuzz; stable Rust, no sanitizer).
fuzz seconds="60":
    scripts/fuzz.sh {{seconds}}

# Plain vs zstd over loopback shaped to RATE in a private network namespace (root).
bench-link file="../shared/data/gcode/plate-large.gcode" rate="20mbit":
    benches/compressed-link.sh {{file}} {{rate}}

# Forwarding figures against a real OctoPrint: send -> Printing, RSS while forwarding ~200 MiB.
bench-forward plate="../shared/data/gcode/plate-large.gcode" repeat="9":
    benches/forward.sh {{plate}} {{repeat}}

# The bridge: a slicer's upload through it vs straight to OctoPrint, on loopback and at 20 Mbit/s
# (RATE in bytes/s), and its peak RSS during a 1 GiB upload.
bench-bridge plate="../shared/data/gcode/plate-large.gcode" rate="2500000":
    benches/bridge.sh {{plate}} {{rate}}

# The web page: a plate picked in it (headless chromium) until stored vs fileagent send; its weight; RSS.
bench-ui plate="../shared/data/gcode/plate-large.gcode":
    benches/ui.sh {{plate}}

# A Klipper printer (real Moonraker and klippy): fileagent send -> printing, vs curl to Moonraker.
bench-klipper:
    benches/klipper.sh

# Run a dev OctoPrint with its Virtual Printer on 127.0.0.1 (installs it on first use).
octoprint port="5000":
    scripts/octoprint-dev.sh run {{port}}
