"""Headless Chromium for the console's real-browser tests (selenium + Debian's chromium).

Reusable: ``make_driver(tmp_dir)`` starts one browser with a fresh profile and console logging;
``severe_console_entries(driver)`` returns the SEVERE entries of its console log; ``screenshot``
saves a PNG into ``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``). The pytest fixture
``browser`` (tests/web/conftest.py) wraps them and skips, with the reason, where no browser exists.
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

    Raises:
        AssertionError: still falsy after ``timeout_s`` seconds (names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
