#!/usr/bin/env bash
# One prepared check for a machine with a real GPU (run it whenever one is lent, and put its
# table in the closing note). In under 8 minutes on a 16-core machine it builds, runs the
# whole test suite, the bench's W1 (matmul), W4 (MLP step) and W9 (host cost, eager and
# jitted) on the GPU, and 200 char-GPT steps eager and jitted, then prints one table.
# Usage: tools/device_check.sh [OUT_DIR]   (OUT_DIR: where logs and JSON go; default out/device_check)
# A dry run elsewhere: CHECK_STEPS=2 SKIP_TESTS=1 tools/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/device_check}"
mkdir -p "$out"
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
row() { printf '| %-44s | %-40s |\n' "$1" "$2" | tee -a "$out/table.md" >/dev/null; }
: > "$out/table.md"

echo "== build ($(elapsed) s)"
cargo build --release --workspace --tests --examples >"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; exit 1; }

echo "== adapter ($(elapsed) s)"
adapter=$(cargo run --release --example quickstart 2>/dev/null | head -n 1)

echo "== test suite ($(elapsed) s)"
t0=$(date +%s)
if [ "${SKIP_TESTS:-0}" = 1 ]; then echo "skipped (SKIP_TESTS=1)" >"$out/tests.log"; tests_rc=0
else cargo test --workspace --release >"$out/tests.log" 2>&1; tests_rc=$?; fi
passed=$(grep -Eo '[0-9]+ passed' "$out/tests.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$out/tests.log" | awk '{s+=$1} END {print s+0}')
tests_s=$(( $(date +%s) - t0 ))

echo "== bench W1, W4, W9 ($(elapsed) s)"
cargo run --release --example bench -- --device gpu --quick --only device-check --json "$out/bench.json" \
  >"$out/bench.log" 2>&1
bench_rc=$?

steps="${CHECK_STEPS:-200}"
echo "== char-GPT, $steps steps eager and jitted ($(elapsed) s)"
for mode in eager jit; do
  flag=""; [ "$mode" = eager ] && flag="--eager"
  cargo run --release --example char_gpt -- --device gpu --steps "$steps" --eval-every "$steps" --out "$out/char_gpt_$mode" $flag \
    >"$out/char_gpt_$mode.log" 2>&1
done

# every row of one workload in the bench's JSON lines: "[param] value unit; ..."
bench_row() {
  grep -F "\"workload\":\"$1\"" "$out/bench.json" \
    | sed -E 's/.*"param":"([^"]*)".*"value":([-0-9.eE+]+).*"unit":"([^"]*)".*/[\1] \2 \3/' \
    | awk '{printf "%s%s %.4g %s", (NR > 1 ? "; " : ""), $1, $2, $3}'
}
cg() { grep -F "$2" "$out/char_gpt_$1.log" | tail -n 1 | sed -E "s/.*$2:? *//"; }

row "check" "result"
row "---" "---"
row "adapter" "$adapter"
row "test suite (rc $tests_rc, ${tests_s} s)" "$passed passed, $failed failed"
row "bench (rc $bench_rc)" "$(grep -c '^W' "$out/bench.log") rows, $out/bench.json"
for w in "W1 matmul f32" "W4 MLP step 784-256-256-10 b128" "W4 dispatches per step" \
  "W9 MLP step host eager" "W9 MLP step host jit" "W9 char-GPT step host eager" "W9 char-GPT step host jit" \
  "W9 MLP step dispatches eager" "W9 MLP step dispatches jit" \
  "W9 char-GPT step dispatches eager" "W9 char-GPT step dispatches jit"; do
  row "$w" "$(bench_row "$w")"
done
for mode in eager jit; do
  row "char-GPT $steps steps $mode: time" "$(grep -F 'trained' "$out/char_gpt_$mode.log" | sed -E 's/.*: //')"
  row "char-GPT $steps steps $mode: validation loss" "$(cg "$mode" 'final validation loss')"
  row "char-GPT $steps steps $mode: peak memory" "$(cg "$mode" 'peak memory per step')"
done
row "wall time" "$(elapsed) s"
echo
cat "$out/table.md"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
