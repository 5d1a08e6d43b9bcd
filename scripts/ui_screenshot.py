"""Screenshot of the page at / after one prediction, for the README (docs/ui.png).

Starts `python -m app` (one worker, CPU) on a free local port with the shipped checkpoint,
opens the page in headless Chromium, uploads a photo through the file input, waits for the
result and the model card, and saves the window as a palette PNG (a ~900×1200 page: ~60 kB).

    python scripts/ui_screenshot.py                         # examples/cat.png → docs/ui.png
    python scripts/ui_screenshot.py --photo my.jpg --out /tmp/ui.png --width 390

Needs Debian's `chromium` and `chromium-driver` and `selenium` (the dev extra).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=REPO / "examples" / "cat.png",
                        help="image to classify (default: examples/cat.png)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui.png",
                        help="where to write the PNG (default: docs/ui.png)")
    parser.add_argument("--width", type=int, default=900, help="window width in CSS pixels "
                        "(default: 900)")
    parser.add_argument("--height", type=int, default=1200, help="window height (default: 1200)")
    parser.add_argument("--chromium", default="/usr/bin/chromium",
                        help="browser binary (default: /usr/bin/chromium)")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver",
                        help="driver binary (default: /usr/bin/chromedriver)")
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server at {url} was not healthy within {timeout_s:g} s")


def main(args: argparse.Namespace) -> int:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_SERVE_")}
    env.update(CNN_SERVE_DEVICE="cpu", CNN_SERVE_WORKERS="1", CNN_SERVE_PORT=str(port),
               CNN_SERVE_LOG_LEVEL="warning")
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        with tempfile.TemporaryDirectory() as profile:
            options = webdriver.ChromeOptions()
            options.binary_location = args.chromium
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--hide-scrollbars",
                         f"--window-size={args.width},{args.height}",
                         f"--user-data-dir={profile}"):
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
            try:
                driver.get(f"{url}/")
                driver.find_element(By.ID, "file").send_keys(str(args.photo.resolve()))
                wait = WebDriverWait(driver, 60)
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-list .result"))
                wait.until(lambda d: d.find_element(By.ID, "model-facts").text)
                png = driver.get_screenshot_as_png()
            finally:
                driver.quit()
    finally:
        server.terminate()
        server.wait(30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.SpooledTemporaryFile() as raw:
        raw.write(png)
        raw.seek(0)
        Image.open(raw).convert("RGB").quantize(colors=128).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
