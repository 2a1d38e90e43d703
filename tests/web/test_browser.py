"""The console in headless Chromium against the real server thread and a fake runtime.

Opens every page, labels three frames (draw a box, name a new class, submit; nothing here; skip),
promotes and rolls back a model with confirmation, and checks the browser console has no SEVERE
entry. Saves a PNG of each page into ``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``).
Then, in the same browser, every name the pages show turns hostile (markup, 100 characters, right
to left, CJK, emoji) and the pages are read on a laptop and on two phones (390x844, 360x640,
touch): nothing runs, nothing spills; a finger draws, resizes, names and submits a box; an answer
the device refuses keeps the operator's boxes; the device going away and coming back is said in
words and recovered from without a reload.
"""

import time

import pytest

from console_browser import (LAYOUT_FAULTS, debug_screenshot, emulate_phone, frame_mouse,
                             screenshot, severe_console_entries, tap, touch_drag,
                             wait_answerable, wait_for, watch_pages)
from console_fakes import HOSTILE_NAMES
from edgecl.errors import UnavailableError

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.timeout(120)




def js(browser, script, *args):
    return browser.execute_script(script, *args)


def text_of(browser, css):
    """The text of the first match, read in one script call (no stale element between polls)."""
    return js(browser, "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
              css)


def check_console(browser, page, log):
    entries = severe_console_entries(browser)
    log.extend(f"{page}: {e['message']}" for e in entries)


def test_every_page_in_a_real_browser(served, console_server, browser):
    base, fake = served
    errors: list[str] = []
    watch_pages(browser)

    # Live: the frame and the vital signs
    browser.get(base + "/")
    wait_for(lambda: js(browser, "const i=document.getElementById('frame');"
                                 "return !i.hidden && i.naturalWidth > 0"), what="live frame")
    wait_for(lambda: text_of(browser, "#fps").startswith("29.5"), what="fps")
    assert browser.find_element(By.ID, "model").text == "v0002"
    assert "round 4" in browser.find_element(By.ID, "learner").text
    assert "rejected" in browser.find_element(By.ID, "alerts").text
    time.sleep(0.6)  # a few frame refreshes
    screenshot(browser, "live", full_page=False)
    check_console(browser, "live", errors)

    # Label: draw a box, name a new class, submit with Enter; the next item shows at once
    browser.get(base + "/label")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#queue li")) == 3, what="queue")
    canvas = wait_for(lambda: next((c for c in browser.find_elements(By.ID, "canvas")
                                    if c.is_displayed()), None), what="canvas")
    wait_for(lambda: "f0000" in text_of(browser, "#why"), what="first item")
    width, height = canvas.size["width"], canvas.size["height"]
    scale = width / 640
    assert abs(height / scale - 480) < 2

    drag, click = frame_mouse(browser, canvas)

    drag((250, 40), (370, 150))                                   # draw a box
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    name_box = browser.find_element(By.ID, "new-class")
    wait_for(name_box.is_displayed, what="new class input")
    name_box.send_keys("forklift", Keys.ENTER)
    wait_for(lambda: Select(browser.find_element(By.ID, "class-select"))
             .first_selected_option.get_attribute("value") == "forklift", what="class picked")
    screenshot(browser, "label", full_page=False)

    drag((310, 95), (330, 105))                                   # move the new box
    click(130, 290)                                               # select the proposed car
    ActionChains(browser).send_keys("3").perform()                # change its class: bicycle
    drag((200, 330), (220, 340))                                  # resize it by a corner
    click(425, 260)                                               # select the proposed person
    ActionChains(browser).send_keys(Keys.DELETE).perform()        # and delete it
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer received")
    wait_for(lambda: "f0001" in text_of(browser, "#why"), 2.0, "next item at once")
    answer = fake.answers[0]
    assert answer["id"] == "f0000" and answer["skip"] is False
    boxes = {b["class"]: b["xyxy"] for b in answer["boxes"]}
    assert sorted(boxes) == ["bicycle", "forklift"], answer
    for name, expected in (("forklift", [270, 50, 390, 160]), ("bicycle", [60, 250, 220, 340])):
        assert all(abs(a - b) <= 3 for a, b in zip(boxes[name], expected)), (name, boxes[name])

    # "nothing here" (N), then skip (S): the queue empties
    wait_answerable(browser)
    ActionChains(browser).send_keys("n").perform()
    wait_for(lambda: len(fake.answers) == 2, what="nothing-here answer")
    wait_for(lambda: "f0002" in text_of(browser, "#why"), 2.0, "third item")
    wait_answerable(browser)
    ActionChains(browser).send_keys("s").perform()
    wait_for(lambda: len(fake.answers) == 3, what="skip answer")
    assert fake.answers[1] == {"id": "f0001", "boxes": [], "skip": False}
    assert fake.answers[2] == {"id": "f0002", "boxes": [], "skip": True}
    wait_for(lambda: browser.find_element(By.ID, "label-empty").is_displayed(), what="empty queue")
    # before: the stylesheet's display rule beat the hidden attribute: the last frame's black
    # canvas stayed under "Nothing to label"
    assert not browser.find_element(By.ID, "canvas").is_displayed()
    check_console(browser, "label", errors)

    # Models: promote v0001 and roll back, each after a confirmation
    browser.get(base + "/models")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")) == 3,
             what="model rows")
    screenshot(browser, "models")
    # a version the gate rejected is never served (the device refuses it): no button
    assert not browser.find_elements(By.CSS_SELECTOR, "button.promote[data-version='v0003']")
    assert text_of(browser, "tr[data-version='v0003'] td:last-child") == "not served (rejected)"
    # a fleet-adopted version says so under its name (before: only /api/models did)
    assert text_of(browser, "tr[data-version='v0002'] td.version") == "v0002from v0001fleet round 3"
    assert "fleet" not in text_of(browser, "tr[data-version='v0003'] td.version")
    browser.find_element(By.CSS_SELECTOR, "button.promote[data-version='v0001']").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: fake.promoted == ["v0001"], what="promotion")
    assert fake.promote_from == ["v0002"], "asked from the version the page shows as current"
    wait_for(lambda: text_of(browser, "tr[data-version='v0001'] .badge") == "current",
             what="v0001 current")
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-cancel").is_displayed(), what="confirm")
    # before: "go back to the previous current version", the page knowing which one it is
    assert text_of(browser, "#confirm-dialog p") == "The device will go back to v0002."
    browser.find_element(By.ID, "confirm-cancel").click()
    time.sleep(0.3)
    assert fake.rollbacks == 0  # cancelled: nothing changed
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: fake.rollbacks == 1, what="rollback")
    assert fake.rollback_from == ["v0001"], "asked from the version the page shows as current"
    wait_for(lambda: text_of(browser, "tr[data-version='v0002'] .badge") == "current",
             what="v0002 current again")
    check_console(browser, "models", errors)

    # Forgetting: three charts drawn by the page's own SVG code
    browser.get(base + "/forgetting")
    for chart in ("heatmap", "lines", "reliability"):
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"#{chart} svg"), what=chart)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap rect")) >= 16
    assert "gap to the diagonal" in text_of(browser, "#reliability .legend")
    # before: no ACC, BWT or forgetting figure on the page the learner's log pointed to
    assert text_of(browser, "#summary") == ("v0004: ACC 0.493 · BWT -0.013 · mean forgetting "
                                            "0.027 (over every class with held-out samples)")
    screenshot(browser, "forgetting")
    check_console(browser, "forgetting", errors)
    # a version that detected nothing held out: before, 10 red bars reached the diagonal
    fake.detections_held_out = False
    browser.get(base + "/forgetting")
    wait_for(lambda: "Not measured" in text_of(browser, "#reliability"), what="no detections")
    assert text_of(browser, "#reliability") == ("Not measured: the current version made no "
                                                "detection with confidence ≥ 0.30 on its held-out "
                                                "images.")
    assert not browser.find_elements(By.CSS_SELECTOR, "#reliability svg")
    fake.detections_held_out = True
    # 300 classes: before, a heatmap strip 10 px tall and a legend of 300 curves
    names = fake.class_names
    fake.class_names = [*names, *(f"class_{k:03d}" for k in range(296))]
    browser.get(base + "/forgetting")
    wait_for(lambda: "most forgotten of 300 classes" in text_of(browser, "#heatmap-window"),
             what="the columns' bound said")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lines-legend span")) == 21  # 20 + note
    height = js(browser, "return document.querySelector('#heatmap svg').getBoundingClientRect().height")
    assert height > 150, height
    screenshot(browser, "forgetting-300-classes")
    fake.class_names = names
    # classes no round measured: before, they were missing from the page without a word
    fake.unmeasured = ["bicycle", "other vehicle"] + [f"c{k}" for k in range(10)]
    browser.get(base + "/forgetting")
    wait_for(lambda: "Not measured yet" in text_of(browser, "#heatmap-window"), what="unmeasured")
    assert text_of(browser, "#heatmap-window").replace("\u2068", "").replace("\u2069", "") == (
        "Not measured yet: bicycle, other vehicle, c0, c1, c2, c3, c4, c5, c6, c7 and 2 more (a "
        "round measures a class once it has learnt it from training frames and a held-out frame "
        "shows it: a share of the labelled frames is kept aside to measure each class; label a "
        "few more).")
    fake.unmeasured = []

    # API: the offline route list
    browser.get(base + "/api-docs")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#routes tr")) >= 10, what="routes")
    # before: the docstrings' ``literal`` markup showed its backticks
    assert "`" not in text_of(browser, "#routes")
    assert browser.find_elements(By.CSS_SELECTOR, "#routes td.small code")
    check_console(browser, "api", errors)
    assert errors == []

    hostile_names_on_laptop_and_phones(browser, base, fake)
    label_by_touch_on_a_phone(browser, base, fake, console_server)


PAGES = {"live": "#alerts li", "label": "#why strong", "models": "#models tr[data-version]",
         "forgetting": "#heatmap svg"}
"""Each page and an element that shows once its data is in."""


def open_page(browser, base, page):
    browser.get(f"{base}/{page}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, PAGES[page]), what=page)
    time.sleep(0.3)  # the rest of the page's first refresh


def hostile_names_on_laptop_and_phones(browser, base, fake):
    """Before: a 100-character class name or alert pushed the Live page to 2668 px on a 1280 px
    screen and spilled over the Models table's columns; slanted class names were cut off at
    the top of the accuracy matrix; on a 390 px phone every page was 421 px wide (the navigation
    bar), so the browser zoomed the whole page out, and the Latency card cut its p95 off."""
    fake.make_hostile()
    for size in ((1280, 860), (390, 844), (360, 640)):
        if size[0] < 1000:
            emulate_phone(browser, *size)
        for page in PAGES:
            open_page(browser, base, page)
            faults = js(browser, LAYOUT_FAULTS)
            assert faults == [], (size, page, faults)
            assert js(browser, "return window.__alerts") == [], (size, page)
            assert not js(browser, "return document.querySelector('main img[src=\"x\"], main script')")
            debug_screenshot(browser, f"hostile-{size[0]}-{page}")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert HOSTILE_NAMES[0] in body and "NaN" not in body  # shown as text, not as markup
    assert severe_console_entries(browser) == []


def label_by_touch_on_a_phone(browser, base, fake, console_server):
    """On a 390x844 phone with a finger: draw a box, resize it by a corner the finger misses by
    3 px (4 px outside the box grab; more would take drags beside the box), name it
    with an 80-character new class, submit; an answer the device refuses (503) keeps the
    operator's edit for a second try; the device stopping and starting again shows a banner in
    words and then the new queue, without a reload.

    Before: a corner was grabbed only within 9 px (a finger drew a second box instead), the new
    class field cut names at 64 characters (the device takes 100), a refused answer dropped the
    operator's boxes (the item came back with the model's proposals), and a stopped device
    showed only a passing "Failed to fetch"."""
    from edgecl.runtime.server import StatusServer
    from edgecl.web import create_app

    emulate_phone(browser, 390, 844)
    ids = fake.add_items(2)
    browser.get(base + "/label")
    wait_for(lambda: text_of(browser, "#why strong") == "f0003", what="first hostile item")
    canvas = wait_for(lambda: next((c for c in browser.find_elements(By.ID, "canvas")
                                    if c.is_displayed()), None), what="its frame")
    js(browser, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    left, top, width = js(browser, "const r = arguments[0].getBoundingClientRect();"
                                   "return [r.left, r.top, r.width]", canvas)
    scale = width / 640

    def at(x, y):  # frame pixels -> viewport CSS pixels
        return left + x * scale, top + y * scale

    touch_drag(browser, at(250, 40), at(370, 150))                # draw a box
    corner = at(370, 150)
    touch_drag(browser, (corner[0] + 3, corner[1] + 3), at(400, 180))  # resize, finger 3 px off
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    name_box = browser.find_element(By.ID, "new-class")
    wait_for(name_box.is_displayed, what="new class input")
    long_name = "forklift " + "x" * 71
    name_box.send_keys(long_name, Keys.ENTER)
    options = js(browser, "return [...document.querySelectorAll('#class-select option')]"
                          ".map((o) => o.textContent)")
    assert f"\u2068{HOSTILE_NAMES[3]}\u2069" in " ".join(options)  # isolated from its number
    debug_screenshot(browser, "phone-label-drawn")
    wait_answerable(browser)
    tap(browser, browser.find_element(By.ID, "submit"))
    wait_for(lambda: len(fake.answers) == 4, what="the touch answer")
    boxes = {b["class"]: b["xyxy"] for b in fake.answers[3]["boxes"]}
    assert fake.answers[3]["id"] == "f0003" and long_name in boxes, fake.answers[3]
    assert all(abs(a - b) <= 3 for a, b in zip(boxes[long_name], [250, 40, 400, 180])), boxes

    # the device refuses the next answer (stopping): the operator's deletion is kept for a resend
    wait_for(lambda: text_of(browser, "#why strong") == "f0004", what="next item")
    fake.fail_answers.append(UnavailableError("label item 'f0004' not answered: the runtime is "
                                              "stopping; send the answer again once it runs"))
    touch_drag(browser, at(425, 260), at(425, 260), steps=0)      # select the proposed person
    tap(browser, browser.find_element(By.ID, "delete-box"))
    wait_answerable(browser)
    tap(browser, browser.find_element(By.ID, "submit"))
    wait_for(lambda: "Not saved" in text_of(browser, "#toasts"), what="refusal said")
    wait_for(lambda: text_of(browser, "#why strong") == "f0004", what="refused item shown again")
    wait_answerable(browser)
    tap(browser, browser.find_element(By.ID, "submit"))
    wait_for(lambda: len(fake.answers) == 5, what="the resent answer")
    assert [b["class"] for b in fake.answers[4]["boxes"]] == [HOSTILE_NAMES[0]], fake.answers[4]
    assert ids == ["f0005", "f0006"]

    # a frame slow to come: no box lands on the previous frame meanwhile; one that cannot be read
    # is said so instead of leaving the previous frame under the new item's boxes
    slow, broken = fake.add_items(2)
    fake.slow_images[slow] = 2.5
    fake.broken_images.add(broken)
    wait_for(lambda: broken in text_of(browser, "#queue"), 8, "two more items listed")
    for skipped in ("f0005", "f0006"):
        wait_for(lambda: text_of(browser, "#why strong") == skipped, what=skipped)
        wait_answerable(browser)
        tap(browser, browser.find_element(By.ID, "skip"))
    wait_for(lambda: text_of(browser, "#why strong") == slow, what="the slow item")
    touch_drag(browser, at(250, 40), at(370, 150))                # while its frame loads
    wait_for(lambda: not js(browser, "return document.getElementById('canvas')"
                                     ".classList.contains('loading')"), 8, "the slow frame")
    wait_answerable(browser)
    tap(browser, browser.find_element(By.ID, "submit"))
    wait_for(lambda: fake.answers[-1]["id"] == slow, what="the slow item's answer")
    assert len(fake.answers[-1]["boxes"]) == 2, fake.answers[-1]  # the proposals only
    wait_for(lambda: "did not load" in text_of(browser, "#label-empty"), what="unreadable frame")
    assert not browser.find_element(By.ID, "canvas").is_displayed()
    assert not browser.find_element(By.ID, "submit").is_enabled()  # it can only be skipped
    wait_answerable(browser, button="skip")
    tap(browser, browser.find_element(By.ID, "skip"))
    wait_for(lambda: fake.answers[-1]["id"] == broken, what="the unreadable item skipped")

    # the device stops: a banner says so in words; it comes back: the page follows by itself
    port = console_server.port
    console_server.stop()
    banner = wait_for(lambda: next((e for e in browser.find_elements(By.ID, "offline")
                                    if e.is_displayed()), None), 12, "offline banner")
    assert "No connection to the device" in banner.text
    assert js(browser, "return document.body.classList.contains('offline')")  # values greyed
    debug_screenshot(browser, "phone-label-offline")
    fake.add_items(1)
    again = StatusServer(create_app(fake.hooks()), "127.0.0.1", port)
    again.start()
    try:
        wait_for(lambda: not banner.is_displayed(), 12, "banner gone")
        assert not js(browser, "return document.body.classList.contains('offline')")
        wait_for(lambda: "f0009" in text_of(browser, "#queue"), 12, "the queue after the restart")
    finally:
        again.stop()
    provoked = ("ERR_CONNECTION_REFUSED", "503 (Service Unavailable)", f"{broken}/image")
    unexpected = [e["message"] for e in severe_console_entries(browser)
                  if not any(p in e["message"] for p in provoked)]
    assert unexpected == []


def test_the_label_page_by_keyboard_alone(served, browser):
    """Before: Tab was always taken (focus never reached the class list or the buttons, so a
    class past the ninth could not be chosen) and no key made a box. Now Tab walks the boxes
    and then moves on; B makes a box, + and - resize it, the arrows move it."""
    base, fake = served
    browser.get(base + "/label")
    wait_for(lambda: "f0000" in text_of(browser, "#why"), what="first item")
    wait_for(lambda: js(browser, "return !document.getElementById('canvas').classList.contains('loading')"),
             what="frame loaded")
    keys = ActionChains(browser)
    keys.send_keys("b", "c").perform()                    # a new box of a new class, named
    name_box = browser.find_element(By.ID, "new-class")
    wait_for(name_box.is_displayed, what="new class input")
    name_box.send_keys("forklift", Keys.ENTER)
    ActionChains(browser).send_keys("+", "+", Keys.ARROW_RIGHT, Keys.ARROW_RIGHT,
                                    Keys.ARROW_RIGHT).perform()
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()         # no box selected
    tags = []
    for _ in range(5):  # the two proposals and the new box, then on to the page's controls
        ActionChains(browser).send_keys(Keys.TAB).perform()
        tags.append(js(browser, "const e = document.activeElement; return e.id || e.tagName"))
    # before: BODY every time; then the page's top (the nav links, the queue) before the class
    # list, more Tabs the longer the queue
    assert tags == ["BODY", "BODY", "BODY", "class-select", "zoom-out"], tags
    js(browser, "document.activeElement.blur()")
    fake.answer_notes = {"classes_added": ["forklift"], "former_names": {"forklift": "lift truck"}}
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer received")
    # before: a name a rename freed made a new class, unsaid
    wait_for(lambda: "\u2068forklift\u2069 named class \u2068lift truck\u2069 before a rename: it "
                     "is a new class now" in text_of(browser, "#toasts"), what="former-name note")
    boxes = {b["class"]: b["xyxy"] for b in fake.answers[0]["boxes"]}
    # a quarter of the 640x480 frame (240, 180, 400, 300) grown 1.1 x 1.1 about its centre,
    # then 3 px to the right
    expected = [320 - 80 * 1.21 + 3, 240 - 60 * 1.21, 320 + 80 * 1.21 + 3, 240 + 60 * 1.21]
    assert all(abs(a - b) <= 1 for a, b in zip(boxes["forklift"], expected)), boxes


def test_token_is_asked_once_per_browser_session(fake, browser):
    from edgecl.runtime.server import StatusServer
    from edgecl.web import create_app

    server = StatusServer(create_app(fake.hooks(), token="field-team"), "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        browser.get(base + "/live")
        token = wait_for(lambda: next((e for e in browser.find_elements(By.ID, "token-input")
                                       if e.is_displayed()), None), what="token dialog")
        token.send_keys("field-team", Keys.ENTER)
        wait_for(lambda: text_of(browser, "#fps").startswith("29.5"), what="fps")
        browser.get(base + "/models")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]"),
                 what="models with the kept token")
        assert not js(browser, "return !!document.querySelector('dialog[open]')")
        assert severe_console_entries(browser) == []
    finally:
        server.stop()


LIVE_LABELS = """
const img = document.getElementById('frame');
const layer = document.getElementById('frame-labels');
const r = img.getBoundingClientRect();
const k = Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight);
const w = img.naturalWidth * k, h = img.naturalHeight * k;
const left = r.left + (r.width - w) / 2, top = r.top + (r.height - h) / 2;
return {
  picture: {left, top, right: left + w, bottom: top + h, k},
  seq: layer.dataset.seq, hidden: layer.hidden || img.hidden,
  fetched: performance.getEntriesByType('resource').map((e) => e.name)
    .filter((n) => n.includes('frame.jpg')),
  labels: [...layer.querySelectorAll('.frame-label')].map((l) => {
    const b = l.getBoundingClientRect();
    const name = l.querySelector('.name');
    return {name: name.textContent, dir: name.getAttribute('dir'),
            score: l.querySelector('.score').textContent,
            title: l.getAttribute('title'), cut: name.scrollWidth > name.clientWidth,
            color: getComputedStyle(l).backgroundColor, html: l.innerHTML.includes('<img'),
            left: b.left, top: b.top, right: b.right, bottom: b.bottom};
  }),
};
"""
"""Browser script: the Live picture's own box on screen (inside the letterboxing) and each label."""


def test_live_labels_are_text_over_their_frame_in_any_script(served, browser):
    """Before: the Live page showed the names only as burnt into the JPEG by OpenCV, whose font
    has ASCII only (自行车, אופניים and 🚲 drew as ``???``). Now they are text over the picture,
    from the labels of the very frame fetched (its ``seq``), on its box, inside the picture, cut
    with "…" past half the picture (whole in the tooltip), on a laptop and on a 390 px phone."""
    base, fake = served
    long_name = "Gabelstapler mit Fahrerkabine " * 4
    names = {0: "自行车", 1: "אופניים 🚲", 2: "🚲 bike", 3: long_name, 4: "<img src=x onerror=alert(1)>"}
    frame = fake.publish_frame([(0, 60, 250, 200, 330, 0.91), (1, 400, 200, 450, 330, 0.77),
                                (2, 300, 40, 380, 120, 0.66), (3, 560, 380, 639, 470, 0.55),
                                (4, 20, 420, 100, 470, 0.44)], names)
    watch_pages(browser)
    for width in (1280, 390):
        if width < 1000:
            emulate_phone(browser, width, 844)
        browser.get(base + "/")
        wait_for(lambda: js(browser, "const l = document.getElementById('frame-labels');"
                                     "return !l.hidden && l.querySelectorAll('.name').length === 5"),
                 what="labels over the frame")
        time.sleep(0.3)
        seen = js(browser, LIVE_LABELS)
        assert seen["seq"] == str(frame.seq)
        assert any(f"seq={frame.seq}&labels=0" in url for url in seen["fetched"]), seen["fetched"]
        pic = seen["picture"]
        by_name = {label["name"]: label for label in seen["labels"]}
        assert set(by_name) == set(names.values())  # exactly as registered, as text
        for label in seen["labels"]:
            inside = (label["left"] >= pic["left"] - 0.5 and label["right"] <= pic["right"] + 0.5
                      and label["top"] >= pic["top"] - 0.5 and label["bottom"] <= pic["bottom"] + 0.5)
            assert inside, (width, label, pic)
            assert label["dir"] == "auto" and not label["html"]
        cjk = by_name["自行车"]
        assert cjk["score"] == "0.91" and cjk["color"] == "rgb(31, 119, 180)"  # the box's colour
        assert abs(cjk["left"] - (pic["left"] + 60 * pic["k"])) < 1.5  # on its box's left edge
        assert abs(cjk["bottom"] - (pic["top"] + 250 * pic["k"])) < 1.5  # just above its top
        assert not cjk["cut"] and cjk["title"] is None
        long = by_name[long_name]
        assert long["cut"] and long["title"] == f"{long_name} 0.55"  # cut; whole in the tooltip
        assert long["right"] - long["left"] <= (pic["right"] - pic["left"]) / 2 + 1
        assert js(browser, LAYOUT_FAULTS) == [] and js(browser, "return window.__alerts") == []
        debug_screenshot(browser, f"live-labels-{width}")
    assert severe_console_entries(browser) == []


def test_a_long_toast_stays_long_enough_to_be_read(served, browser):
    """Before: every toast but an error's went after 3.5 s, a save's 170-character warning that
    a new class is one slip from a known one too. Now a toast stays about 65 ms a character,
    3.5 s at least (8 s for an error) and 20 s at most."""
    base, _ = served
    open_page(browser, base, "live")
    typo = ("saved f0003: 1 box(es); new class \u2068cars\u2069 is close to \u2068car\u2069: if one "
            "is a typo, merge it into the other (edgecl classes merge on the device)")
    assert js(browser, "return [EC.toastMs('saved f0001: 2 box(es)', 'ok'),"
                       "EC.toastMs('x', 'error'), EC.toastMs(arguments[0], 'ok'),"
                       "EC.toastMs('x'.repeat(1000), 'ok')]", typo) == [3500, 8000,
                                                                       1500 + len(typo) * 65, 20000]
    js(browser, "EC.toast('short one', 'ok'); EC.toast(arguments[0], 'ok')", typo)
    time.sleep(4.0)
    assert text_of(browser, "#toasts") == typo
