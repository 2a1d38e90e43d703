"""The console in headless Chromium against the real server thread and a fake runtime.

Opens every page, labels three frames (draw a box, name a new class, submit; nothing here; skip),
promotes and rolls back a model with confirmation, and checks the browser console has no SEVERE
entry. Saves a PNG of each page into ``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``).
"""

import time

import pytest

from console_browser import screenshot, severe_console_entries, wait_for

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


def test_every_page_in_a_real_browser(served, browser):
    base, fake = served
    errors: list[str] = []

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

    def at(x, y):  # selenium offsets are from the element's centre, in CSS pixels
        return round(x * scale - width / 2), round(y * scale - height / 2)

    def drag(frm, to):
        a, b = at(*frm), at(*to)
        (ActionChains(browser).move_to_element_with_offset(canvas, *a).click_and_hold()
         .move_to_element_with_offset(canvas, (a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
         .move_to_element_with_offset(canvas, *b).release().perform())

    def click(x, y):
        ActionChains(browser).move_to_element_with_offset(canvas, *at(x, y)).click().perform()

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
    ActionChains(browser).send_keys("n").perform()
    wait_for(lambda: len(fake.answers) == 2, what="nothing-here answer")
    wait_for(lambda: "f0002" in text_of(browser, "#why"), 2.0, "third item")
    ActionChains(browser).send_keys("s").perform()
    wait_for(lambda: len(fake.answers) == 3, what="skip answer")
    assert fake.answers[1] == {"id": "f0001", "boxes": [], "skip": False}
    assert fake.answers[2] == {"id": "f0002", "boxes": [], "skip": True}
    wait_for(lambda: browser.find_element(By.ID, "label-empty").is_displayed(), what="empty queue")
    check_console(browser, "label", errors)

    # Models: promote v0001 and roll back, each after a confirmation
    browser.get(base + "/models")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")) == 3,
             what="model rows")
    screenshot(browser, "models")
    browser.find_element(By.CSS_SELECTOR, "button.promote[data-version='v0001']").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: fake.promoted == ["v0001"], what="promotion")
    wait_for(lambda: text_of(browser, "tr[data-version='v0001'] .badge") == "current",
             what="v0001 current")
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-cancel").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-cancel").click()
    time.sleep(0.3)
    assert fake.rollbacks == 0  # cancelled: nothing changed
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: fake.rollbacks == 1, what="rollback")
    wait_for(lambda: text_of(browser, "tr[data-version='v0002'] .badge") == "current",
             what="v0002 current again")
    check_console(browser, "models", errors)

    # Forgetting: three charts drawn by the page's own SVG code
    browser.get(base + "/forgetting")
    for chart in ("heatmap", "lines", "reliability"):
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"#{chart} svg"), what=chart)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap rect")) >= 16
    screenshot(browser, "forgetting")
    check_console(browser, "forgetting", errors)

    # API: the offline route list
    browser.get(base + "/api-docs")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#routes tr")) >= 10, what="routes")
    check_console(browser, "api", errors)
    assert errors == []


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
