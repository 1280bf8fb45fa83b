"""Headless Chromium for the dashboard: render checks, timings and screenshots.

Used by the browser tests, ``bench/dashboard_bench.py`` and the docs'
screenshot.  It drives Debian's ``chromium`` through ``chromium-driver``
with Selenium (the ``test`` extra), never a downloaded browser: both
binaries are looked up on PATH (or ``FPUREPLAY_CHROMIUM`` /
``FPUREPLAY_CHROMEDRIVER``), and Selenium Manager is not consulted.

Command line::

    python -m dashboards.browser render report.html            # time, figures, console errors
    python -m dashboards.browser screenshot report.html out.png [--width 1400]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Flags of every run: no GPU, no network of Chromium's own, a throwaway profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def binaries() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) paths, None where not found."""
    chromium = os.environ.get("FPUREPLAY_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    driver = os.environ.get("FPUREPLAY_CHROMEDRIVER") or shutil.which("chromedriver")
    return chromium, driver


def missing() -> str | None:
    """Why a browser cannot be driven here (for a test's skip reason); None when it can."""
    chromium, driver = binaries()
    if chromium is None:
        return "no chromium on PATH (Debian: apt-get install -y chromium chromium-driver)"
    if driver is None:
        return "no chromedriver on PATH (Debian: apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver) with a fresh profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = missing()
    if reason:
        raise RuntimeError(reason)
    browser, driver_path = binaries()
    with tempfile.TemporaryDirectory(prefix="fpureplay-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(browser)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An alert left open must fail the next command, not be dismissed quietly.
        options.set_capability("unhandledPromptBehavior", "ignore")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


@dataclass
class Render:
    """What loading a dashboard in the browser gave."""

    ready_ms: float  # navigation start -> every figure drawn (the page's own clock)
    wall_s: float  # driver.get() -> ready, as the caller waited
    figures: int
    traces: dict[str, int] = field(default_factory=dict)  # figure div id -> traces drawn
    console: list[dict[str, Any]] = field(default_factory=list)  # browser log entries
    resources: list[str] = field(default_factory=list)  # anything the page fetched

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught page errors."""
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]


def load(driver: Any, html: str | Path, timeout: float = 60.0) -> Render:
    """Open ``html`` and wait until the page says every figure is drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    driver.get(Path(html).resolve().as_uri())
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script("return window.fpureplayDashboard || null") is not None
    )
    wall = time.perf_counter() - start
    state = driver.execute_script(
        """
        var traces = {};
        document.querySelectorAll("div.fig").forEach(function (div) {
          traces[div.id] = div.data ? div.data.length : 0;
        });
        return {ready: window.fpureplayDashboard, traces: traces,
                resources: performance.getEntriesByType("resource").map(function (r) {
                  return r.name; })};
        """
    )
    return Render(
        ready_ms=float(state["ready"]["readyMs"]),
        wall_s=wall,
        figures=int(state["ready"]["figures"]),
        traces=dict(state["traces"]),
        console=driver.get_log("browser"),
        resources=list(state["resources"]),
    )


def screenshot(driver: Any, png: str | Path, *, full_page: bool = True) -> Path:
    """Save the current page as a PNG (the whole page by default, via DevTools)."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page}
    )
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def main(argv: list[str] | None = None) -> int:
    """``render`` or ``screenshot`` a dashboard file (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.browser")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="load a dashboard, print timings and errors as JSON")
    render.add_argument("html", type=Path)
    shot = sub.add_parser("screenshot", help="save a PNG of a dashboard")
    shot.add_argument("html", type=Path)
    shot.add_argument("png", type=Path)
    shot.add_argument("--width", type=int, default=1400)
    shot.add_argument("--height", type=int, default=1000)
    shot.add_argument("--viewport", action="store_true", help="only the first screenful")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    width, height = (args.width, args.height) if args.command == "screenshot" else (1400, 1000)
    with chromium(width, height) as driver:
        result = load(driver, args.html)
        if args.command == "screenshot":
            screenshot(driver, args.png, full_page=not args.viewport)
        print(
            json.dumps(
                {
                    "ready_ms": round(result.ready_ms, 1),
                    "figures": result.figures,
                    "errors": result.errors,
                    "resources": result.resources,
                },
                indent=1,
            )
        )
    return 1 if result.errors or result.resources else 0


if __name__ == "__main__":
    sys.exit(main())
