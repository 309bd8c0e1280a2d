# The two commands of the README:
#   make dev    run the service on a throwaway local Postgres, with the demo page at /demo/
#               (builds the SDK it loads; installs what is missing)
#   make test   run every test (installs what is missing)

# Build output lives outside the clone, so a fresh clone starts clean but builds stay warm.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/realtime-target
export CARGO_TERM_COLOR ?= never

.PHONY: dev test setup lint bench

setup:
	bash .ci/setup

dev: setup
	cd sdk-ts && npm run build
	cargo run --bin realtime -- dev

test: setup lint
	cargo build --bins
	cargo nextest run --workspace --no-fail-fast
	@if [ -f tests/js/package.json ]; then cd tests/js && npm test; fi
	cd sdk-ts && npm ci --no-audit --no-fund --loglevel=error && npm test

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench:
	cargo run --release --bin realtime-bench -- cdc
	cargo run --release --bin realtime-bench -- broadcast
	cargo run --release --bin realtime-bench -- db-broadcast
