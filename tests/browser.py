"""The HTML reports in a real browser: headless Chromium (Debian's package) driven by Playwright.

    with launched() as browser:          # pytest.skip when Chromium or Playwright is missing
        page = check_report(browser, out / "report.html", tmp_path / "report.png")
    assert page.ok, page.problems

``check_report`` loads the file, collects console errors, page errors, broken images and every
request that leaves the file (a report is one self-contained page: any http(s) request is a
failure, and is blocked before it goes out), compares the boxes the browser drew for the
plots' text labels (an SVG's ``<text>`` and matplotlib's glyph groups, ``<g id="text_N">``),
and writes a full-page screenshot. Labels of raster (PNG) plots are checked where the plot is
made (``onnxferry.plots.overlapping_labels``), not here.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium (``make system-tools`` installs it); Playwright's own download is not used."""

ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium phones home (updates, sync, field trials) on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

OVERLAP_TOLERANCE_PX = 0.5
"""Boxes that share less than this much width or height only touch (antialiased edges)."""

_LABEL_BOXES = """
() => {
  const found = [];
  for (const svg of document.querySelectorAll('svg')) {
    const nodes = [...svg.querySelectorAll('text, g[id^="text_"]')]
      .filter(n => !(n.tagName === 'text' && n.closest('g[id^="text_"]')));
    const boxes = [];
    for (const n of nodes) {
      const r = n.getBoundingClientRect();
      if (r.width <= 0 || r.height <= 0) continue;
      // matplotlib writes each label's text as a comment before its glyph paths.
      const comment = [...n.childNodes].find(c => c.nodeType === Node.COMMENT_NODE);
      const label = (n.tagName === 'text' ? n.textContent : comment?.textContent) || n.id;
      boxes.push({label: label.trim(), x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
    }
    found.push(boxes);
  }
  return found;
}
"""

_BROKEN_IMAGES = """
() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
  .map(i => i.src.slice(0, 80))
"""


@dataclass
class PageCheck:
    """What the browser saw on one report page."""

    path: Path
    screenshot: Path
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    overlapping_labels: list[tuple[str, str]] = field(default_factory=list)
    plots: int = 0  # <svg> elements
    labels: int = 0  # text labels compared across all plots

    @property
    def problems(self) -> list[str]:
        found = [f"console error: {m}" for m in self.console_errors]
        found += [f"page error: {m}" for m in self.page_errors]
        found += [f"request outside the page: {u}" for u in self.outside_requests]
        found += [f"failed request: {u}" for u in self.failed_requests]
        found += [f"broken image: {u}" for u in self.broken_images]
        found += [f"labels overlap: {a!r} and {b!r}" for a, b in self.overlapping_labels]
        if not self.screenshot.is_file() or self.screenshot.stat().st_size == 0:
            found.append(f"no screenshot at {self.screenshot}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; no browser download)"
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        return f"{CHROMIUM} is missing (make system-tools installs Debian's chromium)"
    return None


@contextmanager
def launched() -> Iterator[Browser]:
    """One headless Chromium for many pages; skips the test when it cannot start."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def check_report(browser: Browser, html_path: Path, screenshot_path: Path) -> PageCheck:
    """Load ``html_path`` from disk, look at it as above, and write the screenshot."""
    check = PageCheck(Path(html_path), Path(screenshot_path))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.on(
            "console",
            lambda m: check.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: check.page_errors.append(str(e)))
        page.on(
            "requestfailed",
            lambda r: check.failed_requests.append(f"{r.url} ({r.failure})"),
        )

        def route(request_route: Any) -> None:
            url = request_route.request.url
            if url.startswith(("file:", "data:", "about:", "blob:")):
                request_route.continue_()
            else:
                check.outside_requests.append(url)
                request_route.abort()

        page.route("**/*", route)
        page.goto(check.path.resolve().as_uri(), wait_until="load")
        check.title = page.title()
        check.broken_images = page.evaluate(_BROKEN_IMAGES)
        plots = page.evaluate(_LABEL_BOXES)
        check.plots = len(plots)
        check.labels = sum(len(boxes) for boxes in plots)
        for boxes in plots:
            check.overlapping_labels += _overlaps(boxes)
        check.screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(check.screenshot), full_page=True)
    finally:
        page.close()
    # An aborted outside request also fires requestfailed: it is reported once, as outside.
    check.failed_requests = [
        f for f in check.failed_requests if f.split(" ")[0] not in check.outside_requests
    ]
    return check


def _overlaps(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    tol = OVERLAP_TOLERANCE_PX
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if (
                a["x0"] < b["x1"] - tol
                and b["x0"] < a["x1"] - tol
                and a["y0"] < b["y1"] - tol
                and b["y0"] < a["y1"] - tol
            ):
                found.append((a["label"], b["label"]))
    return found
