#!/usr/bin/env bash
# The browser tests, run by .ci/run: wgrad on WebGPU in headless Chromium (SwiftShader).
#  1. installs what it needs: the wasm32 target, wasm-bindgen-cli at the version in
#     Cargo.lock, and Debian's chromium with chromium-driver;
#  2. checks that the workspace builds for wasm32-unknown-unknown (and lints the code that
#     only the browser build compiles);
#  3. runs the wasm-bindgen-test suite (examples/web/tests/browser.rs) in Chromium;
#  4. builds the example page (tools/web.sh build), serves it, and runs it end to end
#     (tools/web_e2e.py): at least 90% test accuracy on a WebGPU device.
# Usage: tools/web_test.sh   (EPOCHS=N sets the page's epochs, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
elapsed() { echo "$(( $(date +%s) - started )) s"; }

echo "== tools ($(elapsed))"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$version"; then
  echo "installing wasm-bindgen-cli $version"
  cargo install wasm-bindgen-cli --version "$version"
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y chromium chromium-driver
fi
echo "wasm-bindgen $(wasm-bindgen --version | awk '{print $2}'), $(chromium --version 2>/dev/null | head -n 1)"

echo "== the workspace for wasm32, and lints of the browser-only code ($(elapsed))"
cargo build --release --target wasm32-unknown-unknown -p wgrad
cargo clippy --release --target wasm32-unknown-unknown -p wgrad-web --all-targets -- -D warnings

echo "== browser test suite ($(elapsed))"
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=600
# the runner reads Chromium's flags from examples/web/webdriver.json (its working directory)
(cd examples/web && cargo test --release --target wasm32-unknown-unknown)

echo "== the example page end to end ($(elapsed))"
tools/web.sh build
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory target/web >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
python3 tools/web_e2e.py "http://127.0.0.1:$port/index.html?epochs=${EPOCHS:-3}"
echo "== browser tests passed ($(elapsed))"
