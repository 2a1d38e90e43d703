"""Headless Chromium for the console's real-browser tests (selenium + Debian's chromium).

Reusable: ``make_driver(tmp_dir)`` starts one browser with a fresh profile and console logging;
``severe_console_entries(driver)`` returns the SEVERE entries of its console log; ``screenshot``
saves a PNG into ``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``). The pytest fixture
``browser`` (tests/web/conftest.py) wraps them and skips, with the reason, where no browser exists.
For hostile input and phones: ``watch_pages`` (records ``alert()`` calls), ``LAYOUT_FAULTS`` (a
script naming what breaks a page's layout), ``emulate_phone``, ``touch_drag`` and ``tap``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1")


def _first_executable(*paths: str | None) -> str | None:
    return next((p for p in paths if p and os.access(p, os.X_OK)), None)


def find_browser() -> tuple[str, str] | str:
    """Locate chromium and chromedriver.

    Returns:
        ``(chromium_path, chromedriver_path)``, or a string saying what is missing.
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    chromium = _first_executable(os.environ.get("EDGECL_CHROMIUM"), *CHROMIUM_CANDIDATES,
                                 shutil.which("chromium"))
    driver = _first_executable(os.environ.get("EDGECL_CHROMEDRIVER"), *DRIVER_CANDIDATES,
                               shutil.which("chromedriver"))
    if not chromium or not driver:
        return ("no chromium/chromedriver found (apt-get install chromium chromium-driver; "
                ".ci/run installs them when run as root)")
    return chromium, driver


def make_driver(profile_dir: Path, width: int = 1280, height: int = 860):
    """Start headless Chromium with a fresh profile.

    Args:
        profile_dir: an empty folder for ``--user-data-dir``.
        width: window width in CSS pixels.
        height: window height in CSS pixels.

    Returns:
        A selenium ``WebDriver``; the caller quits it.

    Raises:
        RuntimeError: no browser (the message says what is missing).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.set_page_load_timeout(20)
    browser.set_script_timeout(20)
    return browser


def severe_console_entries(driver) -> list[dict]:
    """SEVERE entries of the browser console since the last call (the log drains on read)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the current page as ``<dir>/<name>.png``.

    Args:
        driver: the WebDriver.
        name: file stem (``live``, ``label``, ...).
        full_page: grow the window to the page's height (at most 2000 px) for the shot.

    Returns:
        The PNG's path (``$EDGECL_SCREENSHOT_DIR`` or ``docs/console``).
    """
    folder = Path(os.environ.get("EDGECL_SCREENSHOT_DIR") or REPO / "docs" / "console")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = path.with_suffix(".tmp.png")
    size = driver.get_window_size()
    if full_page:
        page_h, inner_h = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.innerHeight]")
        if page_h > inner_h:
            driver.set_window_size(size["width"], min(2000, size["height"] + page_h - inner_h))
    try:
        driver.save_screenshot(str(tmp))
    finally:
        driver.set_window_size(size["width"], size["height"])
    os.replace(tmp, path)
    return path


def wait_for(predicate, timeout_s=10.0, what="condition"):
    """Poll ``predicate`` every 50 ms until it returns something truthy; return that.

    An element the page has not created yet (the toast box appears with the first toast) or
    has just replaced counts as falsy, not as a failure.

    Raises:
        AssertionError: still falsy after ``timeout_s`` seconds (names ``what``).
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_answerable(driver, timeout_s=10.0, button="submit"):
    """Wait until the Label page's frame can be answered: its buttons are enabled once a
    queued frame has shown for the page's guard (``SEEN_GUARD_MS``; a double Enter saved the
    next frame unseen), and while no answer is being sent (``button``: ``skip`` for a frame
    whose image did not load, which can only be skipped)."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_element(By.ID, button).is_enabled(), timeout_s,
             f"the frame to be answerable ({button})")


PAGE_HOOK = "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"
"""Run in every new document: records what a script injected through a name would alert."""

LAYOUT_FAULTS = """
const faults = [];
const root = document.documentElement;
if (root.scrollWidth > root.clientWidth + 1) {
  faults.push(`page ${root.scrollWidth}px wide in a ${root.clientWidth}px viewport`);
}
const nav = document.querySelector("nav.top");
if (nav && nav.scrollWidth > nav.clientWidth + 1) faults.push("navigation wider than the screen");
const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
  (e.className && typeof e.className === "string" ? "." + e.className.split(" ").join(".") : "");
for (const e of document.querySelectorAll("main *")) {
  if (e instanceof SVGElement || e.tagName === "CANVAS" || e.tagName === "SELECT") continue;
  const style = getComputedStyle(e);
  if (["inline", "none", "contents"].includes(style.display) || style.overflowX !== "visible") continue;
  if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
    faults.push(`${name(e)}: content ${e.scrollWidth}px in ${e.clientWidth}px`);
  }
}
for (const svg of document.querySelectorAll("main svg")) {
  const box = svg.getBoundingClientRect();
  for (const t of svg.querySelectorAll("text")) {
    const r = t.getBoundingClientRect();
    const outside = r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 ||
      r.bottom > box.bottom + 1;
    if (outside) {
      faults.push(`chart text '${t.textContent.slice(0, 24)}' outside its chart`);
    }
  }
}
return faults.slice(0, 8);
"""
"""Browser script: what breaks the layout (a page wider than the screen, text spilling out of
its box, chart text cut off at the chart's edge), as one line each."""


def watch_pages(driver) -> None:
    """Record ``alert()`` calls in every page the driver opens from now on (``window.__alerts``)."""
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_HOOK})


def emulate_phone(driver, width: int, height: int) -> None:
    """Make the page a phone's: ``width`` x ``height`` CSS pixels, 2x pixels, touch input."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True,
                                                                  "maxTouchPoints": 5})


def touch_drag(driver, start, end, steps: int = 6) -> None:
    """One finger from ``start`` to ``end`` (viewport CSS pixels), lifted at the end."""
    def send(kind, x, y):
        points = [] if kind == "touchEnd" else [{"x": x, "y": y}]
        driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    send("touchStart", *start)
    for k in range(1, steps + 1):
        send("touchMove", start[0] + (end[0] - start[0]) * k / steps,
             start[1] + (end[1] - start[1]) * k / steps)
    send("touchEnd", *end)


def tap(driver, element) -> None:
    """A finger's tap on the middle of ``element`` (scrolled into view first)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    x, y = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return [r.left + r.width / 2, r.top + r.height / 2]", element)
    touch_drag(driver, (x, y), (x, y), steps=0)


def debug_screenshot(driver, name: str) -> Path | None:
    """:func:`screenshot` only when ``$EDGECL_SCREENSHOT_DIR`` is set (never into the docs)."""
    if not os.environ.get("EDGECL_SCREENSHOT_DIR"):
        return None
    return screenshot(driver, name, full_page=False)


def frame_mouse(driver, canvas, frame_width: int = 640):
    """Mouse helpers in a Label canvas's frame pixels: ``(drag(frm, to), click(x, y))``, each
    point ``(x, y)`` in pixels of a ``frame_width`` wide frame (selenium offsets are from the
    element's centre, in CSS pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains

    width, height = canvas.size["width"], canvas.size["height"]
    scale = width / frame_width

    def at(x, y):
        return round(x * scale - width / 2), round(y * scale - height / 2)

    def drag(frm, to):
        a, b = at(*frm), at(*to)
        (ActionChains(driver).move_to_element_with_offset(canvas, *a).click_and_hold()
         .move_to_element_with_offset(canvas, (a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
         .move_to_element_with_offset(canvas, *b).release().perform())

    def click(x, y):
        ActionChains(driver).move_to_element_with_offset(canvas, *at(x, y)).click().perform()

    return drag, click
