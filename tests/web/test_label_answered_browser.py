"""The Label page's Answered list in headless Chromium, against the real server thread and a fake
runtime: the latest answers still in memory are listed; one opens in the same editor with its
stored boxes as ordinary (solid, editable) boxes; Save sends ``POST /api/labels/ID/correct`` with
the edited boxes, "Nothing here" an empty list; Withdraw asks first (an in-page confirmation whose
Cancel has the focus) and then sends ``POST /api/labels/ID/withdraw``; a refusal (409) is said in
one line and leaves the page usable; Esc goes back to the queue. On a 320 px phone the correcting
editor fits and a finger corrects a box. Saves ``label-correct.png`` into
``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``).
"""

import time

import pytest

from console_browser import (LAYOUT_FAULTS, debug_screenshot, emulate_phone, frame_mouse,
                             screenshot, severe_console_entries, tap, touch_drag,
                             wait_answerable, wait_for, watch_pages)
from console_fakes import HOSTILE_NAMES
from edgecl.errors import ConflictError

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.timeout(120)

EDGE_SHARE = """
const [x1, x2, y, hex] = arguments;  // frame pixels, and the box's colour
const canvas = document.getElementById('canvas');
const ctx = canvas.getContext('2d');
const k = canvas.width / 640;  // canvas pixels per frame pixel
const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const from = Math.round((x1 + (x2 - x1) * 0.1) * k), to = Math.round((x2 - (x2 - x1) * 0.1) * k);
let best = 0;
for (const row of [-1, 0, 1].map((d) => Math.floor(y * k) + d)) {
  const px = ctx.getImageData(from, row, to - from, 1).data;
  let hit = 0;
  for (let i = 0; i < px.length; i += 4) {
    const off = Math.abs(px[i] - want[0]) + Math.abs(px[i + 1] - want[1]) + Math.abs(px[i + 2] - want[2]);
    if (off < 90) hit += 1;
  }
  best = Math.max(best, hit / (px.length / 4));
}
return best;
"""
"""Browser script: the share of a box's bottom edge drawn in its colour (solid ~1, dashed ~0.6)."""

CAR, DOG = "#ff7f0e", "#d62728"  # the palette's colours of classes 1 and 3 (console.js)


def js(browser, script, *args):
    return browser.execute_script(script, *args)


def text_of(browser, css):
    """The text of the first match, read in one script call (no stale element between polls)."""
    return js(browser, "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
              css)


def shown(browser, element_id):
    return js(browser, "const e = document.getElementById(arguments[0]);"
                       "return !!e && e.getClientRects().length > 0", element_id)


def frame_ready(browser):
    return js(browser, "const c = document.getElementById('canvas');"
                       "return !c.hidden && !c.classList.contains('loading')")


def entry(browser, item_id):
    return browser.find_element(By.CSS_SELECTOR, f'#answered li[data-id="{item_id}"]')


def open_answer(browser, item_id):
    entry(browser, item_id).click()
    wait_for(lambda: text_of(browser, "#correcting-id") == item_id and shown(browser, "correcting"),
             what=f"correcting {item_id}")
    wait_for(lambda: text_of(browser, "#why strong") == item_id and frame_ready(browser),
             what=f"the frame of {item_id}")


def fetched(browser, fragment):
    return js(browser, "return performance.getEntriesByType('resource').map((e) => e.name)"
                       ".filter((n) => n.includes(arguments[0]))", fragment)


def test_answered_list_correct_and_withdraw(served, browser):
    base, fake = served
    newest, held, bicycle, oldest = fake.store_answers(4)
    fake.merged_names = ["Persn"]  # merged into another class: no longer offered
    watch_pages(browser)
    browser.get(base + "/label")
    wait_for(lambda: text_of(browser, "#why strong") == "f0000" and frame_ready(browser),
             what="the first queued frame")
    options = js(browser, "return [...document.querySelectorAll('#class-select option')]"
                          ".map((o) => o.textContent)")
    assert any("car" in o for o in options) and not any("Persn" in o for o in options), options
    assert not shown(browser, "answered")
    # the tab's count before it is opened (before: blank until the tab was clicked)
    wait_for(lambda: text_of(browser, "#answered-count") == "(4)", what="the answered count")
    # the queue's proposals are dashed: the measure below tells them from solid boxes
    dashed = js(browser, EDGE_SHARE, 60, 200, 330, CAR)
    assert dashed < 0.8, dashed

    # the list: newest first, short ids, box counts and class names, corrections, held out
    browser.find_element(By.ID, "tab-answered").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#answered li[data-id]")) == 4,
             what="four answers listed")
    rows = js(browser, "return [...document.querySelectorAll('#answered li')].map((li) => ({"
                       "id: li.dataset.id, text: li.textContent.replace(/[\\u2068\\u2069]/g, ''),"
                       "chips: [...li.querySelectorAll('.chip')].map((c) => c.textContent"
                       ".replace(/[\\u2068\\u2069]/g, ''))}))")
    assert [r["id"] for r in rows] == [newest, held, bicycle, oldest]
    assert rows[0]["text"].startswith("…" + newest[-10:]) and "2 boxes" in rows[0]["text"]
    assert rows[0]["chips"] == ["car", "person"]
    assert rows[1]["chips"] == ["car ×2", "dog", "held out"] and "3 boxes" in rows[1]["text"]
    assert rows[2]["chips"] == ["bicycle"] and "1 box" in rows[2]["text"]
    assert rows[3]["chips"] == ["car", "person", "corrected 1×"]
    assert "flight_00_8070.jpg" in rows[3]["text"]  # the frame's file name finds an answer
    assert text_of(browser, "#answered-count") == "(4)"
    assert not shown(browser, "queue")  # the queue's tab is the other one

    # open one: its image and its stored boxes, solid, in the editor in "correcting" mode
    open_answer(browser, held)
    assert fetched(browser, f"/api/labels/{held}/image")
    line = text_of(browser, "#correcting")
    assert f"Correcting answer {held} — Save replaces its boxes" in " ".join(line.split())
    assert text_of(browser, "#submit .name") == "Save"
    assert text_of(browser, "#skip .name") == "Withdraw"
    assert "held out" in text_of(browser, "#why") and "flight_02_8072.jpg" in text_of(browser, "#why")
    assert "active" in entry(browser, held).get_attribute("class")
    for x1, x2, y, color in ((40, 160, 350, CAR), (200, 320, 345, CAR), (500, 560, 420, DOG)):
        share = js(browser, EDGE_SHARE, x1, x2, y, color)
        assert share > 0.85, (x1, share)  # drawn solid: an ordinary box, not a proposal
    screenshot(browser, "label-correct", full_page=False)

    canvas = browser.find_element(By.ID, "canvas")
    drag, click = frame_mouse(browser, canvas)

    click(530, 400)                                               # select the dog box
    drag((530, 400), (430, 300))                                  # and move it
    click(60, 300)                                                # select the first car
    ActionChains(browser).send_keys(Keys.DELETE).perform()        # and delete it
    drag((300, 40), (420, 150))                                   # add a box in the sky
    ActionChains(browser).send_keys("3").perform()                # a bicycle
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()         # Save
    wait_for(lambda: fake.corrections, what="the correction")
    sent = fake.corrections[0]
    assert sent["id"] == held and len(sent["boxes"]) == 3, sent
    boxes = {b["class"]: b["xyxy"] for b in sent["boxes"] if b["class"] != "car"}
    assert [b["xyxy"] for b in sent["boxes"] if b["class"] == "car"] == [[200, 270, 320, 345]]
    for name, expected in (("dog", [400, 280, 460, 320]), ("bicycle", [300, 40, 420, 150])):
        assert all(abs(a - b) <= 3 for a, b in zip(boxes[name], expected)), (name, boxes[name])
    assert fake.answers == []  # a correction, not an answer to the queue
    # done: back to the queue's frame, the list refreshed (corrected once now)
    wait_for(lambda: not shown(browser, "correcting"), what="back to the queue")
    wait_for(lambda: text_of(browser, "#why strong") == "f0000", what="the queued frame again")
    assert text_of(browser, "#skip .name") == "Skip" and text_of(browser, "#submit .name") == "Submit"
    wait_for(lambda: "corrected 1×" in entry(browser, held).text, what="list refreshed")
    assert f"corrected {held}: 3 boxes" in text_of(browser, "#toasts")  # before: "3 box(es)"

    # keyboard: A shows the list and focuses its first entry, arrows move, Enter opens
    ActionChains(browser).send_keys("a").perform()
    wait_for(lambda: js(browser, "return document.activeElement.dataset.id") == newest,
             what="the list focused")
    ActionChains(browser).send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ENTER).perform()
    wait_for(lambda: text_of(browser, "#correcting-id") == bicycle and frame_ready(browser),
             what="the third answer opened by keyboard")

    # Withdraw asks first, Cancel focused: S then Enter by mistake keeps the answer
    wait_answerable(browser)
    ActionChains(browser).send_keys("s").perform()
    wait_for(lambda: shown(browser, "confirm-ok"), what="the confirmation")
    assert js(browser, "return document.activeElement.id") == "confirm-cancel"
    assert bicycle in text_of(browser, "#confirm-dialog h2")
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: not shown(browser, "confirm-ok"), what="the confirmation closed")
    time.sleep(0.4)
    assert fake.withdrawals == [] and text_of(browser, "#correcting-id") == bicycle
    wait_answerable(browser)
    browser.find_element(By.ID, "skip").click()
    wait_for(lambda: shown(browser, "confirm-ok"), what="the confirmation again")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: fake.withdrawals == [bicycle], what="the withdrawal")
    wait_for(lambda: not shown(browser, "correcting"), what="back to the queue")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#answered li[data-id]")) == 3,
             what="the withdrawn answer off the list")
    assert f"withdrew {bicycle}" in text_of(browser, "#toasts")

    # the device refuses (409: the sample left the memory): one line, the page stays usable
    open_answer(browser, oldest)
    reason = (f"label item '{oldest}': its sample is no longer in memory (evicted to make room, "
              "or removed)")
    fake.fail_changes.append(ConflictError(reason))
    wait_answerable(browser)
    ActionChains(browser).send_keys("n").perform()               # nothing here: boxes []
    wait_for(lambda: "Not corrected" in text_of(browser, "#toasts"), what="the refusal said")
    said = next(t for t in js(browser, "return [...document.querySelectorAll('#toasts .toast')]"
                                       ".map((t) => t.textContent)") if "Not corrected" in t)
    assert said == f"Not corrected: {reason} (HTTP 409)" and "\n" not in said
    wait_for(lambda: not shown(browser, "correcting"), what="back to the queue after a 409")
    assert fake.corrections == [sent]
    wait_for(lambda: not js(browser, "return ['submit', 'nothing', 'skip']"
                                     ".some((id) => document.getElementById(id).disabled)"),
             what="the queue's frame answerable again")

    # still usable: Esc with no box selected goes back without a word to the device
    open_answer(browser, newest)
    click(425, 260)                                               # select the person
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()        # deselect: still correcting
    assert shown(browser, "correcting")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()        # back
    wait_for(lambda: not shown(browser, "correcting"), what="Esc back to the queue")
    assert text_of(browser, "#why strong") == "f0000" and len(fake.corrections) == 1
    # and the same answer corrected unchanged with the button: its boxes as stored
    open_answer(browser, newest)
    wait_answerable(browser)
    browser.find_element(By.ID, "submit").click()
    wait_for(lambda: len(fake.corrections) == 2, what="the second correction")
    assert fake.corrections[1] == {"id": newest, "boxes": [
        {"class": "car", "xyxy": [60, 250, 200, 330]}, {"class": "person", "xyxy": [400, 200, 450, 330]}]}
    # the queue answers as before meanwhile
    wait_for(lambda: not shown(browser, "correcting") and text_of(browser, "#why strong") == "f0000",
             what="the queue")
    wait_answerable(browser)
    ActionChains(browser).send_keys("n").perform()
    wait_for(lambda: fake.answers == [{"id": "f0000", "boxes": [], "skip": False}], what="answer")
    assert js(browser, "return window.__alerts") == []
    provoked = ("409 (Conflict)",)
    unexpected = [e["message"] for e in severe_console_entries(browser)
                  if not any(p in e["message"] for p in provoked)]
    assert unexpected == []


def test_correcting_fits_a_320_px_phone(served, browser):
    """At 320 px the correcting line, the buttons and the list fit the screen, with hostile class
    names (markup, 100 characters, right to left) shown as text; a finger moves a box and saves."""
    base, fake = served
    newest, second = fake.store_answers(2)  # a bicycle; a car and a person, then hostile names
    fake.stored[1]["boxes"] += [{"class": name, "xyxy": [20.0 + 30 * i, 20.0, 45.0 + 30 * i, 60.0]}
                                for i, name in enumerate(HOSTILE_NAMES[:5])]
    watch_pages(browser)
    emulate_phone(browser, 320, 640)
    browser.get(base + "/label")
    wait_for(lambda: text_of(browser, "#why strong") == "f0000", what="the queue")
    tap(browser, browser.find_element(By.ID, "tab-answered"))
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#answered li[data-id]")) == 2,
             what="the answers listed")
    chips = text_of(browser, f'#answered li[data-id="{second}"]')
    assert HOSTILE_NAMES[0] in chips and "+1 more" in chips  # as text; six names, then a count
    assert js(browser, LAYOUT_FAULTS) == []
    debug_screenshot(browser, "label-answered-320")
    tap(browser, entry(browser, newest))
    wait_for(lambda: text_of(browser, "#correcting-id") == newest and frame_ready(browser),
             what="correcting on the phone")
    top, bottom, nav = js(browser, "const r = document.getElementById('correcting')"
                                   ".getBoundingClientRect(); return [r.top, r.bottom,"
                                   " document.querySelector('nav.top').getBoundingClientRect()"
                                   ".bottom]")
    assert nav - 0.5 <= top and bottom <= 640, (top, bottom, nav)  # the editor brought into view
    assert js(browser, "return document.documentElement.scrollWidth") <= 320
    assert js(browser, LAYOUT_FAULTS) == []
    debug_screenshot(browser, "label-correct-320")

    canvas = browser.find_element(By.ID, "canvas")
    js(browser, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    left, top, width = js(browser, "const r = arguments[0].getBoundingClientRect();"
                                   "return [r.left, r.top, r.width]", canvas)
    scale = width / 640

    def at(x, y):  # frame pixels -> viewport CSS pixels
        return left + x * scale, top + y * scale

    touch_drag(browser, at(340, 300), at(340, 300), steps=0)     # select the bicycle
    touch_drag(browser, at(340, 300), at(240, 200))               # and move it
    time.sleep(0.5)  # a finger's pause (Chromium makes no click of a tap right after a drag)
    wait_answerable(browser)
    tap(browser, browser.find_element(By.ID, "submit"))
    wait_for(lambda: fake.corrections, what="the correction")
    sent = fake.corrections[0]
    assert sent["id"] == newest and len(sent["boxes"]) == 1, sent
    assert sent["boxes"][0]["class"] == "bicycle"
    assert all(abs(a - b) <= 4 for a, b in zip(sent["boxes"][0]["xyxy"], [200, 160, 280, 240])), sent
    wait_for(lambda: not shown(browser, "correcting"), what="back to the queue")

    tap(browser, entry(browser, second))                          # the hostile one opens too
    wait_for(lambda: text_of(browser, "#correcting-id") == second and frame_ready(browser),
             what="the hostile answer")
    assert js(browser, LAYOUT_FAULTS) == [] and js(browser, "return window.__alerts") == []
    assert not js(browser, "return document.querySelector('main img[src=\"x\"], main script')")
    debug_screenshot(browser, "label-correct-320-hostile")
    assert severe_console_entries(browser) == []
