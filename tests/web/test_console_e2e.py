"""Issue 9, point 3: the console in headless Chromium against a REAL running runtime.

A tiny YOLO11n (imgsz 64, knows ``car``) runs in :class:`~edgecl.runtime.app.Runtime` with the
console on a free 127.0.0.1 port, on an endless unlabelled camera-like stream
(:class:`~edgecl.bench.console_load.ObjectSource`) in ``labels.mode: field``, so the operator
queue fills by itself. The browser opens every page; on Label it draws a box around the frame's
object, names a NEW class and submits (the sample must be in the replay memory with that class);
on Models it promotes and rolls back, each after the confirmation (the registry's ``current``
must follow); the browser console must hold no SEVERE entry. Saves ``runtime-<page>.png`` of
each page into ``$EDGECL_SCREENSHOT_DIR`` (default ``docs/console``).
"""

import json
import re
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from console_browser import screenshot, severe_console_entries, wait_answerable
from console_browser import wait_for as browser_wait_for
from edgecl.bench.console_load import ObjectSource, object_box, tiny_model
from edgecl.config import load_config
from edgecl.models.registry import Registry
from edgecl.runtime.app import RunOptions, Runtime

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

IMGSZ = 64
pytestmark = pytest.mark.timeout(180)


def wait_for(predicate, timeout_s=15.0, what="condition"):
    """The shared poll with this file's longer default (a real runtime answers slower)."""
    return browser_wait_for(predicate, timeout_s, what)


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if response.headers.get_content_type() == "application/json" else raw


def text_of(browser, css):
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css)


@pytest.fixture()
def device(tmp_path):
    """A state directory whose registry holds two hand-added versions of a tiny model, v0001
    current, and the config of a runtime serving it with the console on a free port."""
    model = tiny_model(tmp_path / "car.pt", {0: "car"}, IMGSZ)
    registry = Registry(tmp_path / "state" / "models")
    first = registry.add(model)
    second = registry.add(model)
    registry.promote(first)
    cfg = load_config(None, [
        f"state_dir={tmp_path / 'state'}", f"model.imgsz={IMGSZ}", "model.threads=1",
        "runtime.warmup_runs=1", "runtime.swap_poll_s=0.1", "server.enabled=true",
        "server.port=0", "learner.enabled=false", "labels.mode=field",
        "labels.max_per_minute=30", "labels.dedup_window_s=0"])
    return cfg, registry, first, second


def test_every_page_against_a_real_runtime(device, browser, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="edgecl.runtime.console")
    cfg, registry, first, second = device
    source = ObjectSource(width=320, height=240, fps=8.0, seed=2)
    runtime = Runtime(cfg, RunOptions(source_uri=source.uri, quiet=True))
    runtime.build(source=source)
    seen: dict = {}

    def drive():
        try:
            drive_browser(runtime, browser, registry, first, second, seen)
        except BaseException as exc:  # re-raised on the test's thread
            seen["error"] = exc
        finally:
            runtime.loop.request_stop()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    report = runtime.run()  # the runtime owns the main thread (signal handlers)
    thread.join(30)
    if "error" in seen:
        raise seen["error"]
    assert report.frames > 0
    assert seen["errors"] == [], seen["errors"]
    # before: the runtime's log said only "loaded and warmed; swapping", never who did it
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("console: ")]
    assert said == [f"console: {second} promoted by an operator (was {first})",
                    f"console: rolled back by an operator from {second} to {first}"], said

    from edgecl.continual.memory import memory_from_config

    memory = memory_from_config(cfg)
    try:
        records = [r for r in memory.records() if r.origin.value == "operator"]
    finally:
        memory.close()
    cars = seen["cars_id"]
    assert len(records) == 1 and cars in records[0].classes, records


def status_and_error(base, path, method="GET"):
    """``(HTTP status, error line)`` of a request expected to fail."""
    data = b'{"boxes": []}' if method == "POST" else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ""
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]


def check_id_rule(base, answered_id):
    """One rule against the real queue: an id that names no pending item, malformed (``-1``,
    ``a.b``) or unknown, is a 404 whose one line names it; one answered already is a 409.
    Before: ``-1`` was a 400 from the web layer while ``a.b`` was a 404 from the queue."""
    for item_id in ("-1", "a.b", "_x", "0" * 20 + "-abcdef"):
        for method, path in (("GET", f"/api/labels/{item_id}/image"),
                             ("POST", f"/api/labels/{item_id}")):
            status, error = status_and_error(base, path, method)
            assert status == 404 and f"no label item '{item_id}'" in error, (path, status, error)
    for version in ("-1", "v9999"):
        status, error = status_and_error(base, f"/api/models/{version}/promote", "POST")
        assert status == 404 and version in error, (version, status, error)
    status, error = status_and_error(base, f"/api/labels/{answered_id}", "POST")
    assert status == 409 and answered_id in error, (status, error)


def drive_browser(runtime, browser, registry, first, second, seen):
    errors: list[str] = []
    seen["errors"] = errors

    def check_console(page):
        errors.extend(f"{page}: {e['message']}" for e in severe_console_entries(browser))

    base = "http://127.0.0.1:{}".format(wait_for(lambda: runtime.server and runtime.server.port,
                                                 60, "the console"))

    # Live: the real frame, fps, the serving version
    browser.get(base + "/")
    wait_for(lambda: browser.execute_script("const i=document.getElementById('frame');"
                                            "return !i.hidden && i.naturalWidth === 320"),
             what="live frame")
    wait_for(lambda: text_of(browser, "#model") == first, what="model version")
    def fps_shown():
        match = re.match(r"\d+(\.\d+)?", text_of(browser, "#fps").strip())
        return match is not None and float(match.group()) > 0

    wait_for(fps_shown, what="a positive fps")
    time.sleep(1.2)  # the vital signs refresh once a second
    assert "NaN" not in browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "runtime-live", full_page=False)
    check_console("live")

    # Label: the queue filled by the selection policies; draw a box on the object, new class
    wait_for(lambda: get(base, "/api/labels/pending"), 30, "a queued frame")
    browser.get(base + "/label")
    canvas = wait_for(lambda: next((c for c in browser.find_elements(By.ID, "canvas")
                                    if c.is_displayed()), None), what="canvas")
    item_id = wait_for(lambda: text_of(browser, "#why strong"), what="an item")
    item = next(i for i in get(base, "/api/labels/pending") if i["id"] == item_id)
    image = cv2.imdecode(np.frombuffer(get(base, f"/api/labels/{item_id}/image"), np.uint8),
                         cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = object_box(image)
    scale = canvas.size["width"] / item["width"]
    width, height = canvas.size["width"], canvas.size["height"]

    def at(x, y):  # selenium offsets are from the element's centre, in CSS pixels
        return round(x * scale - width / 2), round(y * scale - height / 2)

    a, b = at(x1, y1), at(x2, y2)
    (ActionChains(browser).move_to_element_with_offset(canvas, *a).click_and_hold()
     .move_to_element_with_offset(canvas, (a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
     .move_to_element_with_offset(canvas, *b).release().perform())
    Select(browser.find_element(By.ID, "class-select")).select_by_value("__new__")
    name_box = browser.find_element(By.ID, "new-class")
    wait_for(name_box.is_displayed, what="new class input")
    name_box.send_keys("cars", Keys.ENTER)  # a new class one slip from the model's "car"
    wait_for(lambda: Select(browser.find_element(By.ID, "class-select"))
             .first_selected_option.get_attribute("value") == "cars", what="class picked")
    screenshot(browser, "runtime-label", full_page=False)
    wait_answerable(browser)
    browser.find_element(By.ID, "submit").click()
    classes = wait_for(lambda: [c for c in get(base, "/api/classes")
                                if c["name"] == "cars" and c["samples"] == 1], what="cars stored")
    seen["cars_id"] = classes[0]["id"]
    # the Forgetting page names a class no round measured (before: absent without a word)
    wait_for(lambda: "cars" in get(base, "/api/forgetting")["unmeasured"], what="cars unmeasured")
    # before: the answer made a class 'cars' beside 'car' and nothing pointed it out
    said = wait_for(lambda: [t for t in (text_of(browser, "#toasts") or "").split("\n")
                             if "is close to" in t], what="the typo pointed out")
    assert ("new class \u2068cars\u2069 is close to \u2068car\u2069: if one is a typo, merge it "
            "into the other (edgecl classes merge on the device)") in said[0]
    # the answer stores the sample first, then closes the item (the crash-safe order): wait
    wait_for(lambda: item_id not in {i["id"] for i in get(base, "/api/labels/pending")},
             what="answered item left the queue")
    wait_for(lambda: text_of(browser, "#why strong") not in ("", item_id), what="next item")
    check_console("label")
    check_id_rule(base, item_id)

    # Models: promote the other version, then roll back, each after the confirmation
    browser.get(base + "/models")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")) == 2,
             what="model rows")
    screenshot(browser, "runtime-models")
    # before: "Roll back to previous" was offered with no version served before, to be refused
    wait_for(lambda: not browser.find_element(By.ID, "rollback").is_enabled(),
             what="rollback disabled")
    browser.find_element(By.CSS_SELECTOR, f"button.promote[data-version='{second}']").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: registry.current() == second, what="promotion in the registry")
    wait_for(lambda: text_of(browser, f"tr[data-version='{second}'] .badge") == "current",
             what="promoted row")
    wait_for(lambda: runtime.loop.model_version == second, what="the loop serving it")
    wait_for(lambda: browser.find_element(By.ID, "rollback").is_enabled(), what="rollback offered")
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(lambda: registry.current() == first, what="rollback in the registry")
    wait_for(lambda: text_of(browser, f"tr[data-version='{first}'] .badge") == "current",
             what="rolled back row")
    # before: still enabled (the version rolled back from is 'retired' too), then refused 409
    wait_for(lambda: not browser.find_element(By.ID, "rollback").is_enabled(),
             what="nothing earlier to roll back to")

    check_console("models")

    # Forgetting: a device with no round yet shows its empty charts without error
    browser.get(base + "/forgetting")
    wait_for(lambda: browser.execute_script("return document.readyState") == "complete",
             what="forgetting page")
    time.sleep(1.0)
    assert "NaN" not in browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "runtime-forgetting")
    check_console("forgetting")
