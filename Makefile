# sakuin — the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# cargo-lambda, zig, sam and cfn-lint come from the project virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
REGION ?= ap-northeast-1

.PHONY: help venv build demo test test-durability test-others lint-build sam-build-check-idle test-fast lint fmt template sam-build sam-build-check lambda bench model-long clean netns-tools

help:
	@echo "make demo    run the whole pipeline locally (stack, functions, samples, probe, search)"
	@echo "make test    run every test: lint, template checks and scan, sam build, unit, adapter and end-to-end tests"
	@echo "make bench   print performance figures (cold start, ingest, embed-index)"
	@echo "make test-fast  the inner loop: the library's and the command line's unit tests and the model test (no stack)"
	@echo "make model-long  the model-based pipeline test, long: 2,000 generated sequences, with figures"
	@echo "make sam-build  build the arm64 Lambda artifacts with SAM (offline)"

$(VENV)/.installed: dev/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r dev/requirements.txt
	touch $@

venv: $(VENV)/.installed

build:
	cargo build --workspace

demo: venv build
	target/debug/sakuin-local demo

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

fmt:
	cargo fmt --all

template: venv
	sam validate --lint --template template.yaml --region $(REGION)
	cfn-lint template.yaml
	checkov --config-file dev/checkov.yaml --file template.yaml
	$(PY) -m unittest -q dev/test_template.py

# SAM runs `cargo lambda build --release --arm64 --bin <name>` at the workspace root for each
# function; CARGO_TARGET_DIR must not be set for its copy step to find the bootstrap.
sam-build: venv
	@rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$$' || rustup target add aarch64-unknown-linux-gnu
	env -u CARGO_TARGET_DIR sam build

# What `make test` runs: the same `sam build`, with a quicker release profile (no LTO, no
# optimisation) — it proves that SAM builds the three arm64 artifacts, in half the time; the
# artifacts deployed come from `make sam-build`, with the workspace's own profile.
sam-build-check: venv
	@rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$$' || rustup target add aarch64-unknown-linux-gnu
	env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
	  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 sam build

lambda: venv
	cargo lambda build --release --arm64

# The path-MTU tests build networks of namespaces: as root, install what they need from Debian
# (without it, or without root, they skip and say why).
NETNS_TOOLS := iproute2 iptables openssl
netns-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	    && ! { command -v ip && command -v iptables && command -v openssl; } >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(NETNS_TOOLS) >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 \
	       && apt-get install -y -qq --no-install-recommends $(NETNS_TOOLS) >/dev/null 2>&1; } \
	  || echo "netns-tools: could not install $(NETNS_TOOLS); the path-MTU tests will skip"; \
	fi

# `make test` in three stages, each as parallel as two cores allow:
#   1. the virtualenv installs (mostly download) while cargo compiles the workspace once, with
#      clippy's lints as it goes (clippy-driver as the workspace crates' compiler, which is what
#      `cargo clippy` runs, so linting and building share one compile instead of two);
#   2. the template checks and the Python tests;
#   3. the Rust tests — the durability scenarios (mostly waiting on visibility timeouts and
#      outages) beside every other test binary — and, at the lowest CPU priority so the tests'
#      timings keep theirs, `sam build` of the arm64 artifacts in the cores' idle time.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target venv lint-build netns-tools
	$(MAKE) --no-print-directory template
	$(PY) -m unittest discover --start-directory dev --pattern 'test_*.py'
	$(PY) -m unittest -q dev/retrieval/test_dataset.py
	rm -rf $(TEST_LOGS) && mkdir -p $(TEST_LOGS)
	$(MAKE) --no-print-directory -j3 --output-sync=target test-durability test-others sam-build-check-idle \
	  || { python3 dev/failed_tests.py $(TEST_LOGS)/*.log; exit 1; }

# Each test run's output is kept here as well as printed; when a run fails, dev/failed_tests.py
# prints the failed tests and their panics last, where the tail of a CI log shows them.
TEST_LOGS := target/test-logs

# clippy-driver reads its flags from CLIPPY_ARGS, separated as cargo-clippy separates them.
LINTED := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# Every integration-test target of the workspace (from cargo metadata) but the durability
# scenarios. Each cargo command below selects the whole workspace, so features resolve as in
# the build and nothing compiles again.
OTHER_TESTS = $(shell cargo metadata --no-deps --format-version 1 | python3 -c 'import json, sys; \
  print(" ".join(sorted({t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] \
  if "test" in t["kind"] and t["name"] != "durability"})))')

sam-build-check-idle:
	nice -n 19 $(MAKE) --no-print-directory sam-build-check

lint-build:
	cargo fmt --all --check
	$(LINTED) cargo build --workspace --all-targets

test-durability:
	mkdir -p $(TEST_LOGS); set -o pipefail; $(LINTED) cargo test --workspace --no-fail-fast --test durability \
	  2>&1 | tee $(TEST_LOGS)/durability.log

test-others:
	mkdir -p $(TEST_LOGS); set -o pipefail; $(LINTED) cargo test --workspace --no-fail-fast --lib --bins \
	  $(addprefix --test ,$(OTHER_TESTS)) 2>&1 | tee $(TEST_LOGS)/others.log
	set -o pipefail; $(LINTED) cargo test --workspace --doc 2>&1 | tee $(TEST_LOGS)/doc.log

# The inner loop: unit tests of the library (the handlers against the seams' fakes, the pacer's
# simulations, the configuration reference) and of the command line, and the model-based test.
test-fast:
	cargo test -p sakuin --features test-util --lib --test model
	cargo test -p sakuin-cli --lib

# The model-based test of the whole pipeline (shared/tests/model.rs) with 2,000 sequences of up to
# 40 operations, a new seed each run (printed; SAKUIN_MODEL_SEED replays it). The functions' metric
# lines are left out of the output.
model-long:
	set -o pipefail; SAKUIN_MODEL_CASES=$${SAKUIN_MODEL_CASES:-2000} SAKUIN_MODEL_OPS=$${SAKUIN_MODEL_OPS:-40} \
	  cargo test -p sakuin --features test-util --test model -- --nocapture the_index_ends_equal_to_the_bucket \
	  2>&1 | grep -v '^{"'

bench: venv
	cargo build --workspace --release
	target/release/sakuin-local bench

clean:
	cargo clean
	rm -rf .aws-sam
