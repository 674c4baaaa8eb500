# scriptbox — every target does its own set-up on a fresh Debian machine (as root):
# Docker engine, debootstrap and patchelf, the runtime images this machine can build.

CARGO ?= cargo
BIN := target/debug/scriptbox
# Every Python runtime. Each is built from the first source this machine has: the Dockerfile
# (a registry), Debian's exact CPython (python3.9, python3.11), or a CPython installation here
# (pyenv, uv, /usr/local, /opt/python*). One that has none prints a SKIPPED line naming why.
TEST_RUNTIMES := python3.6 python3.7 python3.8 python3.9 python3.10 python3.11 python3.12
export SCRIPTBOX_LOG ?= warn

.PHONY: all build engine images moto demo test test-rust test-runsc test-bootstrap lint arch-check bench bench-daemon bench-warm security-table conformance clean

all: build

build:
	$(CARGO) build

engine:
	scripts/ensure-engine.sh

images: build engine
	$(BIN) images build --skip-unbuildable $(TEST_RUNTIMES)

## make moto: the AWS emulator the tests run against (moto server, pinned set) in target/moto/venv.
moto:
	scripts/ensure-moto.sh

## make demo: build, make sure an engine answers, build python3.11 offline, run an example step.
demo: build engine
	$(BIN) images build python3.11
	$(BIN) runtimes
	@echo
	$(BIN) invoke --runtime python3.11 --handler script_handler \
		--script examples/hello.py --payload '{"name": "scriptbox"}'

## make test: the same set-up, then the whole suite against the real engine
## (and the engine + adversarial suites again under gVisor when runsc is registered).
test: images moto test-bootstrap test-rust test-runsc

test-rust:
	SCRIPTBOX_REQUIRE_ENGINE=1 SCRIPTBOX_REQUIRE_MOTO=1 $(CARGO) test --all-targets

test-runsc:
	@if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q runsc; then \
		echo "== engine, adversarial and aws suites under runsc (gVisor) =="; \
		SCRIPTBOX_TEST_RUNTIME=runsc SCRIPTBOX_REQUIRE_ENGINE=1 SCRIPTBOX_REQUIRE_MOTO=1 $(CARGO) test --test engine --test adversarial --test aws --test aws_actions; \
	else \
		echo "SKIPPED: the runsc (gVisor) pass: runsc is not registered with Docker (WITH_RUNSC=1 scripts/ensure-engine.sh installs it)"; \
	fi

## make security-table: re-run the adversarial suite under runc and runsc, rewrite SECURITY.md's table.
security-table: images moto
	scripts/security_table.py --write SECURITY.md

test-bootstrap:
	@python3 -c "import vermin" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check vermin
	@# vermin has no __main__: call its entry point. Proves the bootstrap needs nothing newer than 3.6.
	python3 -c "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())" -t=3.6- --violations --no-tips images/python/bootstrap.py
	python3 -m unittest discover -s tests/bootstrap -t . -v

## make lint: formatting, clippy (with the cast lints of Cargo.toml's [lints]) and the
## architecture's guard rails.
lint: arch-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## make arch-check: the architecture's guard rails (long functions, import cycles between top-level
## modules, action names outside runbook/actions/, bollard outside sandbox/); each finding printed.
## `scripts/arch-check.py --report` prints the same and the counts without failing.
arch-check:
	python3 scripts/arch-check.py src

## make bench: one trivial execution end to end, next to `docker run --rm` with the same flags;
## then one row per Python runtime (cold p50 through the library, `docker run --rm`, image size).
bench: engine
	$(CARGO) build --release
	target/release/scriptbox images build --skip-unbuildable $(TEST_RUNTIMES)
	$(CARGO) run --release --example bench_invoke

## make bench-warm: latency warm/cold through the daemon API and the CLI next to `docker run --rm`,
## throughput with 1/2/4/8 clients, the daemon's memory (about 8 minutes).
bench-warm: engine
	$(CARGO) build --release
	target/release/scriptbox images build python3.11
	$(CARGO) run --release --example bench_warm

## make bench-daemon: the daemon's RSS idle and under a 200-submission burst, submissions/s accepted.
bench-daemon: engine
	$(CARGO) build --release
	target/release/scriptbox images build python3.11
	$(CARGO) run --release --example bench_daemon

## make conformance: validate every real runbook in ../shared/conformance/runbooks, then run each
## valid one against a fresh moto server (reset before each document) after its fixture
## (tests/conformance/fixtures/<stem>.py); print per document valid/refused, Success or Failed with
## its reason, the tally, and every difference from tests/conformance/expected.tsv (exit 1 if any).
CONFORMANCE_DIR ?= ../shared/conformance/runbooks
CONFORMANCE_ATTACHMENTS ?= ../shared/conformance/attachments
conformance: images moto
	scripts/conformance.sh $(CONFORMANCE_DIR) $(CONFORMANCE_ATTACHMENTS)

clean:
	$(CARGO) clean
