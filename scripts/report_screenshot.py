#!/usr/bin/env python
"""Screenshot of a report's gallery in headless Chromium (the README's docs/img/report.png).

    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html docs/img/report.png --class hook

Opens the page from disk with the browser test's set-up (Debian's chromium + chromedriver,
scripts/_browser.sh; selenium from the `test` extra), optionally filters the gallery by a
class, presses "worst misses first" (worst IoU first; with a class, that class's IoU),
scrolls to the gallery and saves a window-sized PNG. Exits 1 if the page logged a console
error.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", help="report.html written by gcfeat report / a demo")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--class", dest="cls", default=None, help="gallery class filter (a name)")
    p.add_argument("--size", default="1280x737", help="window WxH (default 1280x737)")
    a = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        print("error: chromium / chromedriver not on PATH (scripts/_browser.sh installs them)",
              file=sys.stderr)
        return 2
    w, h = a.size.split("x")
    profile = tempfile.mkdtemp(prefix="gcfeat-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in FLAGS + (f"--window-size={w},{h}", f"--user-data-dir={profile}"):
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        driver.get(Path(a.html).resolve().as_uri())
        # the window holds the page and the browser's frame: grow it until the page is WxH
        iw, ih = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * int(w) - iw, 2 * int(h) - ih)
        if a.cls:
            Select(driver.find_element(By.ID, "f-class")).select_by_value(a.cls)
        driver.find_element(By.ID, "f-worst").click()
        driver.execute_script("document.getElementById('gallery').scrollIntoView()")
        print(driver.find_element(By.ID, "f-count").text)
        driver.save_screenshot(a.out)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    for e in errors:
        print(f"console error: {e.get('message')}", file=sys.stderr)
    print(f"wrote {a.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
