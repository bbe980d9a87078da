# Tally: the two commands a newcomer runs are `make devnet` and `make test`.
#
# Builds share one target folder outside the clone, so a second clone or a CI run reuses the
# compiled RocksDB (≈20 minutes of C++ on 2 cores the first time); scripts/claim-target.sh
# rebuilds this workspace's own crates when another clone built there last. sccache is used
# when it is installed; nothing here hides a missing install step: each target installs what
# it needs.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target
ifneq ($(shell command -v sccache 2>/dev/null),)
export RUSTC_WRAPPER ?= sccache
endif
TALLY := $(CARGO_TARGET_DIR)/debug/tally
DEVNET_DIR ?= devnet-data

.PHONY: all deps build test lint devnet bench clean-devnet

all: build

deps:
	@scripts/install-deps.sh promtool:prometheus nft:nftables
	@scripts/claim-target.sh

build: deps
	cargo build --workspace --bins

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## make test: every test: formatting, lints, unit and property tests, the storage suite on both
## backends, the kill-during-commit test, CLI tests, doc tests, the vectors in Python, and
## SIM_SEEDS (default 1000) simulated PBFT runs (every adversary) with the negative control,
## RAFT_SIM_SEEDS and PAXOS_SIM_SEEDS (default 2000 per cluster size, n = 3 and 5) simulated Raft
## and Multi-Paxos runs with their negative controls, and
## SIM_DISSEMINATION_SEEDS (default 200 per configuration) simulated batch-dissemination runs,
## and every fuzz target for FUZZ_SECONDS (default 10) each (scripts/fuzz-smoke.sh).
test: lint
	cargo nextest run --workspace --no-fail-fast
	cargo test --workspace --doc
	python3 scripts/check_vectors.py docs/transactions.md
	cargo build --bin tally
	scripts/sim-suite.sh
	scripts/fuzz-smoke.sh

## make devnet: a local 4-validator PBFT network (one process per validator, real libp2p and
## RocksDB on loopback) with a stream of demo transfers and a live status line. Ctrl-C stops it.
## DEVNET_SECONDS=N stops it after N seconds. CONSENSUS=raft or CONSENSUS=multipaxos runs that
## protocol instead, with 3 validators (VALIDATORS=N overrides).
CONSENSUS ?= pbft
VALIDATORS ?= $(if $(filter pbft,$(CONSENSUS)),4,3)
devnet: build
	$(TALLY) devnet --validators $(VALIDATORS) --consensus $(CONSENSUS) --data $(DEVNET_DIR) --fresh \
		$(if $(DEVNET_SECONDS),--duration $(DEVNET_SECONDS))

## make bench: the throughput benchmark (release build). RATE=… (one rate, or a sweep: 3000,4000,5000) DURATION=… RUNS=… override.
RATE ?= 4000
DURATION ?= 60s
RUNS ?= 1
bench: deps
	cargo build --release --bin tally
	$(CARGO_TARGET_DIR)/release/tally bench --validators 4 --tx-bytes 512 --rate $(RATE) --duration $(DURATION) --runs $(RUNS)

clean-devnet:
	rm -rf $(DEVNET_DIR)
