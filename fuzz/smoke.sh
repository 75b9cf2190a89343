#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one at a time, starting from the
# committed seeds in fuzz/corpus/TARGET. New inputs go to fuzz/corpus-run/TARGET (ignored by
# git), crashes to fuzz/artifacts/TARGET/. Exits non-zero on the first crash, leak, OOM or
# timeout (an input running past $FUZZ_TIMEOUT seconds, default 10, wall clock: raise it when
# the machine is shared). Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets its -Z flags
# run on the stable toolchain. Usage: fuzz/smoke.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(onnx safetensors gguf ir_text tokenizer weights)
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$PWD/target"
for t in "${targets[@]}"; do cargo fuzz build -O "$t"; done
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t"
    log="target/smoke-$t.log"
    echo "fuzz/smoke.sh: $t for ${secs}s (log: fuzz/$log)"
    if ! cargo fuzz run -O "$t" "corpus-run/$t" "corpus/$t" -- -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
        grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -5 || true
        echo "fuzz/smoke.sh: $t FAILED (input in fuzz/artifacts/$t/, log fuzz/$log)"
        exit 1
    fi
    grep -E '^#[0-9]+ +DONE|^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" | tr '\n' ' '
    echo
done
