#!/usr/bin/env python3
"""End-to-end test of the example page (examples/web) in headless Chromium with WebGPU.

Drives Chromium through chromedriver's WebDriver protocol (standard library only), opens
the page that `tools/web.sh build` wrote and a local server serves, waits for the line
`final test accuracy: NN.NN% (device: NAME)` in #status, and fails unless the accuracy
is at least 90% on a WebGPU device and the Hessian panel agrees with its closed form.
Prints the status, the training throughput and the Hessian difference.

usage: tools/web_e2e.py URL [--timeout SECONDS]
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

# Chromium's flags (headless, WebGPU on SwiftShader): the ones the browser test suite's
# runner takes, from examples/web/webdriver.json
WEBDRIVER_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "web", "webdriver.json")
with open(WEBDRIVER_JSON) as f:
    CHROME_ARGS = json.load(f)["goog:chromeOptions"]["args"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}").get("value")


def main():
    url = sys.argv[1]
    timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 900.0
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium", "args": CHROME_ARGS}}}}
        session = call(base, "POST", "/session", caps)["sessionId"]
        s = f"/session/{session}"
        started = time.time()
        call(base, "POST", s + "/url", {"url": url})
        script = ("return ['status', 'throughput', 'hessian', 'device', 'progress']"
                  ".map(id => (document.getElementById(id) || {}).textContent || '')")
        status = ""
        while time.time() - started < timeout:
            status, throughput, hessian, device, progress = call(base, "POST", s + "/execute/sync",
                                                                 {"script": script, "args": []})
            if status.startswith("final test accuracy") or status.startswith("error"):
                break
            time.sleep(2)
        elapsed = time.time() - started
        call(base, "DELETE", s)
    finally:
        driver.terminate()
        driver.wait()
    print(f"page: {status}")
    print(f"page: {throughput}")
    print(f"page: {device}; {progress}")
    diff = re.search(r"largest difference: ([0-9.e+-]+)", hessian)
    print(f"page: Hessian panel largest difference {diff.group(1) if diff else '(missing)'}")
    print(f"page: finished in {elapsed:.0f} s")
    m = re.fullmatch(r"final test accuracy: (\d+\.\d\d)% \(device: (.*)\)", status)
    if not m:
        sys.exit(f"FAIL: the page did not finish within {timeout:.0f} s: status {status!r}")
    accuracy, name = float(m.group(1)), m.group(2)
    if "WebGpu" not in name:
        sys.exit(f"FAIL: the page ran on {name!r}, not on a WebGPU device")
    if accuracy < 90.0:
        sys.exit(f"FAIL: test accuracy {accuracy}% < 90%")
    if not diff or float(diff.group(1)) > 1e-3:
        sys.exit(f"FAIL: the Hessian panel disagrees with its closed form: {hessian!r}")
    print("page: PASS")


if __name__ == "__main__":
    main()
