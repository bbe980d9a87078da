# Tally: the two commands a newcomer runs are `make devnet` and `make test`.
#
# Builds share one target folder outside the clone, so a second clone or a CI run reuses the
# compiled RocksDB (≈20 minutes of C++ on 2 cores the first time). sccache is used when it is
# installed; nothing here hides a missing install step: each target installs what it needs.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/tally/target
ifneq ($(shell command -v sccache 2>/dev/null),)
export RUSTC_WRAPPER ?= sccache
endif
TALLY := $(CARGO_TARGET_DIR)/debug/tally
DEVNET_DIR ?= devnet-data

.PHONY: all deps build test lint devnet clean-devnet

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cargo build --workspace --bins

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## make test: every test: formatting, lints, unit and property tests, the storage suite on both
## backends, the kill-during-commit test, CLI tests, doc tests, the vectors in Python, and
## SIM_SEEDS (default 2000) simulated PBFT runs with the negative control.
test: lint
	cargo nextest run --workspace --no-fail-fast
	cargo test --workspace --doc
	python3 scripts/check_vectors.py docs/transactions.md
	cargo build --bin tally
	scripts/sim-suite.sh

## make devnet: a local 4-validator network, and a transaction signed for it.
devnet: build
	rm -rf $(DEVNET_DIR)
	$(TALLY) testnet --validators 4 --consensus pbft --out $(DEVNET_DIR)
	@echo "signing a transfer from account0 to account1 (nonce 0):"
	$(TALLY) tx sign --from $(DEVNET_DIR)/accounts/account0.key \
		--chain-id $$(python3 -c 'import json;print(json.load(open("$(DEVNET_DIR)/network.json"))["chain_id"])') \
		--nonce 0 transfer --amount 25 \
		--to $$(python3 -c 'import json;print(json.load(open("$(DEVNET_DIR)/network.json"))["accounts"][1]["address"])')

clean-devnet:
	rm -rf $(DEVNET_DIR)
