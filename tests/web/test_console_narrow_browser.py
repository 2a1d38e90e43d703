"""The console on a 320 px phone (a small Android phone, or a bigger one with larger text) in
headless Chromium, against the real server thread and a fake runtime.

Before: at 320 px the navigation bar was 342 px wide (the API link off the screen, reached only
by swiping the bar), the API page 664 px wide (its route table), and with the text at 125 % the
bar was 408 px wide, the Forgetting page 376 px (the reliability protocol) and Live's Throughput
heading spilled out of its card. Now the bar compacts, and wraps where it still does not fit;
every page is as wide as the screen, at the default text size and at 125 %.
"""

import time

import pytest

from console_browser import (LAYOUT_FAULTS, debug_screenshot, emulate_phone,
                             severe_console_entries, touch_drag, wait_answerable, wait_for,
                             watch_pages)

pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.timeout(120)

PAGES = {"live": "#alerts li", "label": "#why strong", "models": "#models tr[data-version]",
         "forgetting": "#heatmap svg", "api-docs": "#routes tr"}
"""Each page and an element that shows once its data is in."""

FITS = """
const root = document.documentElement;
const nav = document.querySelector('nav.top');
const links = [...nav.querySelectorAll('a')].map((a) => {
  const r = a.getBoundingClientRect();
  return {text: a.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom,
          height: r.height};
});
const navBox = nav.getBoundingClientRect();
return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
        navBottom: navBox.bottom, links};
"""
"""Browser script: the page's width against the screen's, and where each link of the bar is."""


def js(browser, script, *args):
    return browser.execute_script(script, *args)


def open_page(browser, base, page, text_scale):
    browser.get(f"{base}/{page}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, PAGES[page]), what=page)
    if text_scale != 1:  # a phone's larger-text setting: the root font size raised
        js(browser, "const r = document.documentElement;"
                    "r.style.fontSize = parseFloat(getComputedStyle(r).fontSize) * arguments[0] + 'px'",
           text_scale)
    time.sleep(0.3)  # the rest of the page's first refresh


def check_fits(browser, where):
    seen = js(browser, FITS)
    assert seen["scrollWidth"] <= seen["clientWidth"] == 320, (where, seen)
    assert seen["innerWidth"] == 320, (where, seen)  # not zoomed out to show a wider page
    for link in seen["links"]:  # every link of the bar on the screen
        assert link["left"] >= -0.5 and link["right"] <= 320.5, (where, link)
        assert link["bottom"] <= seen["navBottom"] + 0.5, (where, link)
    faults = js(browser, LAYOUT_FAULTS)
    assert faults == [], (where, faults)
    for link in seen["links"]:  # and a finger's height
        assert link["height"] >= 40, (where, link)


def test_every_page_fits_a_320_px_phone(served, console_server, browser):
    base, fake = served
    watch_pages(browser)
    emulate_phone(browser, 320, 640)
    for text_scale in (1, 1.25):
        for page in PAGES:
            open_page(browser, base, page, text_scale)
            check_fits(browser, (page, text_scale))
            if page == "models":  # before: "v000" above "3" at 125 % (the gate's reason beside)
                lines = js(browser, "return [...document.querySelectorAll('td.version strong')]"
                                    ".map((e) => { const r = document.createRange();"
                                    " r.selectNodeContents(e); return r.getClientRects().length; })")
                assert lines and set(lines) == {1}, (text_scale, lines)
            debug_screenshot(browser, f"narrow-320-{int(text_scale * 100)}-{page}")

    # Label: the frame above the queue, on the screen; a finger draws a box on it
    open_page(browser, base, "label", 1)
    canvas = wait_for(lambda: next((c for c in browser.find_elements(By.ID, "canvas")
                                    if c.is_displayed()), None), what="the frame")
    frame_top, queue_top = js(browser, "return [document.getElementById('canvas'),"
                                       " document.querySelector('.queue')]"
                                       ".map((e) => e.getBoundingClientRect().top)")
    assert frame_top < queue_top
    js(browser, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    left, top, width, right = js(browser, "const r = arguments[0].getBoundingClientRect();"
                                          "return [r.left, r.top, r.width, r.right]", canvas)
    assert left >= 0 and right <= 320
    scale = width / 640

    def at(x, y):  # frame pixels -> viewport CSS pixels
        return left + x * scale, top + y * scale

    first = js(browser, "return document.querySelector('#why strong').textContent")
    touch_drag(browser, at(250, 40), at(370, 150))                # draw a box
    js(browser, "const s = document.getElementById('class-select'); s.value = 'car';"
                "s.dispatchEvent(new Event('change'))")
    wait_answerable(browser)
    browser.find_element(By.ID, "submit").click()
    wait_for(lambda: fake.answers, what="the answer")
    answer = fake.answers[0]
    assert answer["id"] == first and answer["skip"] is False, answer
    drawn = [b["xyxy"] for b in answer["boxes"] if b["class"] == "car"]
    assert any(all(abs(a - b) <= 4 for a, b in zip(xyxy, [250, 40, 370, 150])) for xyxy in drawn), \
        answer

    # the names turn hostile (100 characters without a space, right to left, CJK): still fits
    fake.make_hostile()
    for text_scale in (1, 1.25):
        for page in PAGES:
            open_page(browser, base, page, text_scale)
            check_fits(browser, ("hostile", page, text_scale))

    # the device stops: the banner shows below the bar (two rows at 125 %), not under it
    open_page(browser, base, "live", 1.25)
    console_server.stop()
    banner = wait_for(lambda: next((e for e in browser.find_elements(By.ID, "offline")
                                    if e.is_displayed()), None), 12, "offline banner")
    js(browser, "window.scrollTo(0, 400)")
    time.sleep(0.2)
    banner_top, nav_bottom = js(browser, "return [arguments[0].getBoundingClientRect().top,"
                                         " document.querySelector('nav.top')"
                                         ".getBoundingClientRect().bottom]", banner)
    assert nav_bottom > 60 and abs(banner_top - nav_bottom) <= 1, (banner_top, nav_bottom)
    debug_screenshot(browser, "narrow-320-125-offline")
    assert js(browser, "return window.__alerts") == []
    provoked = ("ERR_CONNECTION_REFUSED",)
    unexpected = [e["message"] for e in severe_console_entries(browser)
                  if not any(p in e["message"] for p in provoked)]
    assert unexpected == []


@pytest.mark.parametrize("width, height", [(844, 390), (640, 360), (1024, 768)])
def test_a_phone_held_sideways_shows_the_frame_and_submit_with_finger_sized_targets(
        served, browser, width, height):
    """Before, at 844x390 the frame's bottom 27 px lay below the fold (107 px at 640x360) and
    scrolling to it took Submit off the screen under the sticky bar; the zoom buttons were 30 px
    wide and the bar's links 34 px high on a phone held sideways or a tablet."""
    base, _ = served
    emulate_phone(browser, width, height)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "pointer", "value": "coarse"}]})
    open_page(browser, base, "label", 1)
    wait_for(lambda: js(browser, "return document.getElementById('canvas').offsetHeight > 0"),
             what="the frame")
    time.sleep(0.5)
    canvas, submit, small = js(browser, """
        const box = (id) => document.getElementById(id).getBoundingClientRect();
        const targets = [...document.querySelectorAll('nav.top a, .toolbar button')]
          .filter((e) => e.offsetParent !== null).map((e) => e.getBoundingClientRect());
        return [box('canvas'), box('submit'),
                targets.filter((r) => r.width < 44 || r.height < 44).length];""")
    assert canvas["bottom"] <= height and submit["top"] >= 0, (canvas, submit)
    assert small == 0
