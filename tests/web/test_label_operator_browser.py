"""An operator labelling many frames in a row, in headless Chromium against the real server
thread and a fake runtime: toasts never take a drag off the frame, a class renamed on the device
while the page is open is followed, a name the device would refuse never enters the picker, and
long names on the answered list are cut with "…"."""

import pytest

from console_browser import frame_mouse, wait_answerable, wait_for

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def js(browser, script, *args):
    return browser.execute_script(script, *args)


def open_label(browser, base):
    browser.get(base + "/label")
    canvas = wait_for(lambda: next((c for c in browser.find_elements(By.ID, "canvas")
                                    if c.is_displayed()), None), what="canvas")
    wait_for(lambda: "f0000" in js(browser, "return document.getElementById('why').textContent"),
             what="first item")
    return canvas


def picker(browser) -> list[str]:
    return js(browser, "return [...document.querySelectorAll('#class-select option')]"
                       ".map(o => o.value).filter(v => v !== '__new__')")


def test_toasts_never_take_a_drag_off_the_frame(served, browser):
    """Before: four quick answers stacked four toasts over the frame's lower right; a box drawn
    there went to the toast, and Enter saved the frame as "nothing here"."""
    base, fake = served
    open_label(browser, base)
    js(browser, "for (let k = 0; k < 5; k++) EC.toast('skipped item ' + k, 'info')")
    toasts = js(browser, "return [...document.querySelectorAll('#toasts .toast')]"
                         ".map(t => t.getBoundingClientRect().toJSON())")
    assert len(toasts) == 3  # the oldest go first
    for rect in toasts:
        x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        under = js(browser, "const e = document.elementFromPoint(arguments[0], arguments[1]);"
                            "return e ? (e.closest('.toast') ? 'toast' : e.tagName) : ''", x, y)
        assert under != "toast"


def test_a_class_renamed_on_the_device_is_followed_by_an_open_page(served, browser):
    """Before: the page read the classes once; after 'edgecl classes rename bicycle cycle' it
    still offered 'bicycle', and an answer naming it made a new, empty class beside 'cycle'."""
    base, fake = served
    canvas = open_label(browser, base)
    Select(browser.find_element(By.ID, "class-select")).select_by_value("bicycle")
    fake.class_names[fake.class_names.index("bicycle")] = "cycle"
    wait_for(lambda: "cycle" in picker(browser) and "bicycle" not in picker(browser),
             timeout_s=15, what="the rename followed")
    assert Select(browser.find_element(By.ID, "class-select")).first_selected_option \
        .get_attribute("value") == "cycle"
    drag, _ = frame_mouse(browser, canvas)
    drag((400, 60), (470, 130))
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer")
    assert "cycle" in [b["class"] for b in fake.answers[0]["boxes"]]
    assert "bicycle" not in [b["class"] for b in fake.answers[0]["boxes"]]


def test_a_name_the_device_would_refuse_never_enters_the_picker(served, browser):
    """Before: 'car\\u200bx' was offered and made the class of the next boxes; each answer was
    then refused (422) again."""
    _refused_new_name(served, browser, "car\u200bx",
                      "invisible or direction-changing characters (U+200B)")


def _refused_new_name(served, browser, name: str, said: str) -> None:
    """Type ``name`` as a new class on the Label page: the page says ``said`` and the name
    never enters the picker."""
    base, _ = served
    open_label(browser, base)
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    box = browser.find_element(By.ID, "new-class")
    wait_for(box.is_displayed, what="new class input")
    box.send_keys(name, Keys.ENTER)
    wait_for(lambda: said in js(browser, "return document.getElementById('toasts').textContent"),
             what="refusal")
    assert name not in picker(browser)


def test_a_long_class_name_is_cut_on_the_answered_list(served, browser):
    """Before: a 100-character name wrapped to five lines on its answered entry."""
    base, fake = served
    canvas = open_label(browser, base)
    long_name = "forklift-" * 11
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    box = browser.find_element(By.ID, "new-class")
    wait_for(box.is_displayed, what="new class input")
    box.send_keys(long_name, Keys.ENTER)
    drag, _ = frame_mouse(browser, canvas)
    drag((400, 60), (470, 130))
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer")
    ActionChains(browser).send_keys("a").perform()
    chip = wait_for(lambda: next((c for c in browser.find_elements(By.CSS_SELECTOR,
                                                                   "#answered .chip.name")
                                  if long_name.strip() in (c.get_attribute("title") or "")), None),
                    timeout_s=15, what="the answered entry")
    height = js(browser, "return arguments[0].getBoundingClientRect().height", chip)
    line = js(browser, "return parseFloat(getComputedStyle(arguments[0]).lineHeight) || 20", chip)
    assert height < 2 * line
    assert js(browser, "return arguments[0].scrollWidth > arguments[0].clientWidth", chip)



def test_two_renames_read_in_one_refresh_are_applied_at_once(served, browser):
    """Before: 'rename car vehicle' then 'rename person car' seen in one refresh were applied
    one on top of the other: the car box became vehicle, then the person box car, then both
    vehicle."""
    base, fake = served
    open_label(browser, base)
    wait_for(lambda: "person" in picker(browser), what="classes read")
    fake.class_names[fake.class_names.index("car")] = "vehicle"
    fake.class_names[fake.class_names.index("person")] = "car"
    wait_for(lambda: "vehicle" in picker(browser) and "person" not in picker(browser),
             timeout_s=15, what="the renames followed")
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()  # keep the proposed boxes
    wait_for(lambda: fake.answers, what="answer")
    by_x = {round(b["xyxy"][0]): b["class"] for b in fake.answers[0]["boxes"]}
    assert sorted(by_x.values()) == ["car", "vehicle"], by_x
    assert by_x[min(by_x)] == "vehicle"  # the box that was car (x 60) is vehicle now


def test_a_class_merged_on_the_device_is_followed_by_an_open_page(served, browser):
    """'edgecl classes merge car person' while the page is open: the picker drops 'car', and
    the car box proposed on the frame is answered as 'person', and the merge is said once
    (before, every reading of the classes said it again, a toast every 4 s for as long as the
    page stayed open)."""
    import time

    base, fake = served
    open_label(browser, base)
    wait_for(lambda: "car" in picker(browser), what="classes read")
    js(browser, "window.said = []; const toast = EC.toast;"
                "EC.toast = (text, kind) => { window.said.push(text); return toast(text, kind); }")
    fake.merges["car"] = "person"
    wait_for(lambda: "car" not in picker(browser), timeout_s=15, what="the merge followed")
    assert "person" in picker(browser)
    time.sleep(9)  # two more readings of the classes (every 4 s): the merge is said once
    said = [t for t in js(browser, "return window.said") if "is now" in t]
    assert len(said) == 1 and "car" in said[0] and "person" in said[0], said
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()  # keep the proposed boxes
    wait_for(lambda: fake.answers, what="answer")
    assert sorted(b["class"] for b in fake.answers[0]["boxes"]) == ["person", "person"]


def test_a_merge_made_before_the_page_opened_is_followed_without_a_word(served, browser):
    """Before: every load of the Label page (any window, days later) announced "on the device,
    class car is now person" for a merge made before it opened."""
    base, fake = served
    fake.merges["car"] = "person"
    browser.set_window_size(1280, 960)
    browser.get(base + "/label")
    js(browser, "window.said = []; const toast = EC.toast;"
                "EC.toast = (text, kind) => { window.said.push(text); return toast(text, kind); }")
    wait_for(lambda: "person" in picker(browser), what="classes read")
    wait_for(lambda: "f0000" in js(browser, "return document.getElementById('why').textContent"),
             what="first item")
    assert "car" not in picker(browser)
    toasts = browser.find_element(By.ID, "toasts").text if browser.find_elements(
        By.ID, "toasts") else ""
    assert "is now" not in toasts and not [t for t in js(browser, "return window.said")
                                           if "is now" in t]


def test_a_merged_class_typed_as_a_new_name_is_the_class_it_was_merged_into(served, browser):
    """Before: after 'classes merge car person', typing 'car' named the box with the retired
    name 'car' (picker blank, "car is the device's class car"), though it was saved as
    person: the page showed one class and stored another."""
    base, fake = served
    fake.merges["car"] = "person"
    open_label(browser, base)
    wait_for(lambda: "person" in picker(browser) and "car" not in picker(browser),
             what="classes read")
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    box = browser.find_element(By.ID, "new-class")
    wait_for(box.is_displayed, what="new class input")
    box.send_keys("CAR", Keys.ENTER)
    wait_for(lambda: "merged into" in js(browser, "return document.getElementById('toasts')"
                                                 ".textContent"), what="the merge said")
    assert js(browser, "return document.getElementById('class-select').value") == "person"
    assert "car" not in picker(browser) and "CAR" not in picker(browser)


def test_an_answer_the_memory_did_not_keep_is_not_said_saved(served, browser):
    """Before: an answer whose sample the memory declined (HTTP 200, "sample": null) was
    toasted "saved" like any other; 'edgecl labels answer' said it was declined."""
    base, fake = served
    open_label(browser, base)
    fake.decline_answers = True
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer")
    toast = wait_for(lambda: next((t.text for t in browser.find_elements(
        By.CSS_SELECTOR, "#toasts .toast") if "did not keep" in t.text), None), what="toast")
    assert "no round learns it" in toast and "saved" not in toast


def test_a_name_with_a_code_point_unicode_does_not_assign_is_refused_by_the_page(served, browser):
    """The device refuses it (unassigned code points): the page now says so before the name
    enters the picker, as it does for invisible characters."""
    _refused_new_name(served, browser, "car\u0378",
                      "a character Unicode does not assign (U+0378)")


def test_a_name_that_marks_a_region_to_ignore_is_refused_by_the_page(served, browser):
    """Before: 'Dont Care' entered the picker and named the next boxes; the device refused each
    answer only at submit (a region to ignore is no class)."""
    _refused_new_name(served, browser, "Dont Care", "marks a region to ignore, not a class")


def test_the_page_knows_the_devices_ignore_names():
    """The page's list of ignore-region names is the device's (edgecl.data.class_names)."""
    import re
    from pathlib import Path

    import edgecl.web
    from edgecl.data.class_names import IGNORE_NAMES

    source = (Path(edgecl.web.__file__).parent / "static" / "label.js").read_text()
    listed = re.search(r"IGNORE_NAMES = new Set\(\[([^\]]*)\]", source).group(1)
    assert set(re.findall(r'"([^"]+)"', listed)) == IGNORE_NAMES


def test_enter_right_after_the_frame_left_the_queue_answers_nothing(served, browser):
    """Before: the frame on screen was skipped from the command line; 4 s later the page
    opened the next one by itself, and the operator's Enter (meant for the frame that left)
    saved "nothing here" for a frame nobody had looked at."""
    import time

    base, fake = served
    open_label(browser, base)
    with fake.lock:
        fake.queue = [q for q in fake.queue if "f0000" not in q["id"]]
    wait_for(lambda: "f0001" in js(browser, "return document.getElementById('why').textContent"),
             timeout_s=15, what="the page opened the next frame by itself")
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_answerable(browser)
    ActionChains(browser).send_keys("n").perform()
    wait_for(lambda: "Another frame just opened" in browser.find_element(By.ID, "toasts").text,
             what="the refusal")
    time.sleep(2.2)  # looked at it: answered as usual
    assert not fake.answers
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer")
    assert "f0001" in fake.answers[0]["id"]


def test_the_class_list_gives_the_keys_back(served, browser):
    """Before: once Tab past the last box had put the keys on the class list, Enter, 0 and Esc
    did nothing, and a click on the frame left them there: Enter saved nothing."""
    base, fake = served
    canvas = open_label(browser, base)
    drag, _ = frame_mouse(browser, canvas)
    drag((400, 60), (470, 130))
    Select(browser.find_element(By.ID, "class-select")).select_by_value("bicycle")
    canvas.click()
    for _ in range(6):  # Tab through the boxes, then onto the class list
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if js(browser, "return document.activeElement.id") == "class-select":
            break
    assert js(browser, "return document.activeElement.id") == "class-select"
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()  # Esc: back to the frame
    assert js(browser, "return document.activeElement.id") != "class-select"
    js(browser, "document.getElementById('class-select').focus()")
    drag((300, 200), (330, 230))  # a click or a drag on the frame takes them back too
    assert js(browser, "return document.activeElement.id") != "class-select"
    js(browser, "document.getElementById('class-select').focus()")
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()  # Enter on the list submits
    wait_for(lambda: fake.answers, what="the answer Enter sent")
    assert "bicycle" in [b["class"] for b in fake.answers[0]["boxes"]]


def test_leaving_the_page_with_unsaved_boxes_asks_first(served, browser):
    """Before: a reload (or a link away) dropped the boxes just drawn without a word."""
    base, fake = served
    canvas = open_label(browser, base)
    assert js(browser, "const e = new Event('beforeunload', {cancelable: true});"
                       "window.dispatchEvent(e); return e.defaultPrevented") is False
    drag, _ = frame_mouse(browser, canvas)
    drag((400, 60), (470, 130))
    assert js(browser, "const e = new Event('beforeunload', {cancelable: true});"
                       "window.dispatchEvent(e); return e.defaultPrevented") is True


def test_a_class_name_over_the_limit_is_said_while_typed(served, browser):
    """Before: the field took 200 characters and said the 100-character limit only at Enter;
    the next Enter said it again."""
    base, fake = served
    open_label(browser, base)
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    field = browser.find_element(By.ID, "new-class")
    field.send_keys("x" * 100)
    assert field.get_attribute("aria-invalid") == "false"
    field.send_keys("y")
    wait_for(lambda: field.get_attribute("aria-invalid") == "true", what="the field marked")
    assert "A class name is 1–100 characters" in js(
        browser, "return document.getElementById('toasts').textContent")


def _toasts(browser) -> str:
    return js(browser, "return document.getElementById('toasts').textContent")


def test_a_name_typed_right_after_drawing_a_box_names_it(served, browser):
    """Before: on a device with classes, "draw, type bus, Enter" ran the keys B (a second box
    nobody drew), U, S and Enter (saved); "car" made the class "ar" (C opened the name field
    and took its own letter)."""
    base, fake = served
    canvas = open_label(browser, base)
    Select(browser.find_element(By.ID, "class-select")).select_by_value("person")
    drag, _ = frame_mouse(browser, canvas)
    drag((250, 40), (370, 150))
    ActionChains(browser).send_keys("bus").perform()
    name_box = browser.find_element(By.ID, "new-class")
    wait_for(lambda: name_box.is_displayed() and name_box.get_attribute("value") == "bus",
             what="the typed name in the name field")
    name_box.send_keys(Keys.ENTER)
    drag((250, 200), (330, 260))
    ActionChains(browser).send_keys("Car", Keys.ENTER).perform()  # the device's "car"
    wait_for(lambda: not name_box.is_displayed(), what="the second name taken")
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: fake.answers, what="answer")
    classes = sorted(b["class"] for b in fake.answers[0]["boxes"])
    assert classes == ["bus", "car", "car", "person"], fake.answers[0]  # 2 proposed, 2 drawn
    # a key after that is a shortcut again: Q opens the queue list, not a name
    ActionChains(browser).send_keys("a").perform()
    assert not browser.find_element(By.ID, "new-class").is_displayed()


def test_enter_on_an_untouched_frame_with_no_box_saves_nothing(served, browser):
    """Before: Enter saved "nothing here" for a frame nobody had drawn on (an operator who had
    just lost their boxes to another's answer saved a frame full of cars as a negative)."""
    base, fake = served
    fake.queue[0]["proposed"] = []
    open_label(browser, base)
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: "No box on this frame" in _toasts(browser), what="the refusal")
    assert fake.answers == []
    ActionChains(browser).send_keys("n").perform()  # the explicit negative
    wait_for(lambda: fake.answers, what="nothing-here answer")
    assert fake.answers[0] == {"id": "f0000", "boxes": [], "skip": False}


def test_a_queue_the_device_refuses_is_not_called_empty(served, browser):
    """Before: while the device refused the page (429 after another client's wrong tokens),
    the page read "Nothing to label: the queue is empty" with frames waiting."""
    from edgecl.errors import UnavailableError

    base, fake = served
    fake.fail_pending = UnavailableError("the runtime is stopping")
    browser.get(base + "/label")
    wait_for(lambda: "The queue could not be read: the runtime is stopping" in js(
        browser, "return document.getElementById('label-empty').textContent"), what="the refusal")
    fake.fail_pending = None
    wait_for(lambda: "f0000" in js(browser, "return document.getElementById('why').textContent"),
             timeout_s=15, what="the queue once read")
