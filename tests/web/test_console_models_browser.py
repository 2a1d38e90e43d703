"""The Models page's Engine column in headless Chromium: rows built by the real
``model_rows`` from a hand-made registry, served by the real app (fake runtime otherwise)."""

from __future__ import annotations

import pytest

from console_browser import debug_screenshot, severe_console_entries, wait_for
from engine_registry import ACCEPTED_REASON, REFUSED_REASON, build_engine_registry

pytest.importorskip("selenium")
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.timeout(120)




def _cells(browser) -> dict:
    """version -> (engine text, note text, tooltip) read in one script call."""
    return browser.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll('#models tr[data-version]')) {
          const td = tr.querySelector('td.engine');
          const note = td.querySelector('.int8-note');
          out[tr.dataset.version] = [td.firstChild.textContent, note ? note.textContent : null,
                                     td.getAttribute('title')];
        }
        return out;""")


def test_engine_column_shows_the_serving_engine_and_the_int8_gate(served, browser, tmp_path, monkeypatch):
    from edgecl.runtime.console import model_rows

    base, fake = served
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    rows = model_rows(build_engine_registry(tmp_path / "state" / "models"))
    with fake.lock:
        fake.versions = rows
    browser.get(base + "/models")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")) == 6,
              what="model rows")
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.models thead th")]
    assert heads[:4] == ["VERSION", "STATUS", "ENGINE", "GATE VERDICT"]  # CSS upper-cases them
    assert heads[-1] == "ACTION"  # before: a column with no name, a phone's card an unnamed row
    assert all(len(tr.find_elements(By.TAG_NAME, "td")) == len(heads)
               for tr in browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]"))

    cells = _cells(browser)
    assert cells["v0004"][:2] == ["OpenVINO INT8", None]
    assert cells["v0004"][2] == f"INT8 gate: {ACCEPTED_REASON}\nserves openvino-int8/model.xml"
    assert cells["v0002"][:2] == ["ONNX Runtime FP32", "INT8 refused"]
    assert cells["v0002"][2] == f"INT8 gate: {REFUSED_REASON}\nserves model.onnx"
    assert cells["v0005"][:2] == ["OpenVINO FP32", None]  # not built is not a refusal
    assert cells["v0006"][0] == "TensorRT FP16"
    assert cells["v0003"][:2] == ["—", None]
    assert cells["v0001"][0] == "ONNX Runtime"
    # the reason's markup stayed text: nothing was injected into the page
    assert browser.find_elements(By.CSS_SELECTOR, "#models img") == []

    # within the page at 1280 px: no horizontal scrolling of the page or the table
    widths = browser.execute_script("""
        const box = document.querySelector('.table-scroll');
        return [document.documentElement.scrollWidth, window.innerWidth,
                box.scrollWidth, box.clientWidth];""")
    assert widths[1] == 1280
    assert widths[0] <= widths[1] and widths[2] <= widths[3], widths
    assert severe_console_entries(browser) == []


def test_rows_without_engine_fields_still_render(served, browser):
    """Rows without engine keys (as an older runtime serves them) show a dash."""
    base, fake = served
    for row in fake.versions:
        for key in ("engine", "engine_label", "engine_file", "int8"):
            row.pop(key, None)
    browser.get(base + "/models")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")) == 3,
              what="model rows")
    assert {v: c[:2] for v, c in _cells(browser).items()} == {
        "v0003": ["—", None], "v0002": ["—", None], "v0001": ["—", None]}
    assert severe_console_entries(browser) == []


def test_a_version_of_many_classes_shows_its_weakest_twelve(served, browser):
    """Before: every class's AP bar was listed: 298 classes made the page 5,286 px tall."""
    base, fake = served
    fake.versions[0]["per_class_ap"] = {f"class_{k:03d}": round(0.9 - k * 0.003, 3) for k in range(30)}
    browser.get(base + "/models")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version] .ap"),
             what="AP cells")
    names = browser.execute_script(
        "return [...document.querySelectorAll('#models tr[data-version=\"v0003\"] .ap .name')]"
        ".map((e) => e.textContent)")
    assert names == [f"class_{k:03d}" for k in range(18, 30)]  # the lowest 12, in their order
    note = browser.execute_script(
        "return document.querySelector('#models tr[data-version=\"v0003\"] .ap').nextSibling.textContent")
    assert note.startswith("the 12 lowest of 30 classes")
    assert severe_console_entries(browser) == []


def test_pruned_versions_are_folded_and_offer_no_promote(served, browser):
    """Before: a version retention had pruned (0 B) showed a Promote button, and the click was
    refused ("its files were deleted by retention"); and a device weeks old listed up to 100
    pruned versions among the ones it can serve. Now they are folded under one row."""
    base, fake = served
    fake.versions[-1]["status"] = "pruned"
    fake.versions[0]["status"] = "staged"  # (a rejected one offers no promote either)
    pruned = fake.versions[-1]["version"]
    browser.get(base + "/models")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version] td"),
             what="model rows")
    listed = [tr.get_attribute("data-version")
              for tr in browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]")]
    assert pruned not in listed and len(listed) == len(fake.versions) - 1
    debug_screenshot(browser, "models-pruned-folded")
    toggle = browser.find_element(By.ID, "pruned-toggle")
    assert toggle.text == "Show 1 pruned version (files deleted, history kept)"
    toggle.click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"#models tr[data-version='{pruned}']"),
             what="the pruned row")
    buttons = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#models tr[data-version]')]"
        ".map((tr) => [tr.dataset.version, !!tr.querySelector('button.promote')]))")
    assert buttons[pruned] is False and any(buttons.values()), buttons
    assert "files deleted" in browser.find_element(
        By.CSS_SELECTOR, f"#models tr[data-version='{pruned}']").text
    browser.find_element(By.ID, "pruned-toggle").click()
    assert not browser.find_elements(By.CSS_SELECTOR, f"#models tr[data-version='{pruned}']")
    assert severe_console_entries(browser) == []


def test_an_unchanged_poll_leaves_the_table_as_it_is(served, browser):
    """Before: every 5 s poll rebuilt the table from a full answer, though nothing had changed.
    Now the device answers 304 and the rows stay the same elements; a change is drawn."""
    base, fake = served
    browser.get(base + "/models")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]"),
             what="model rows")
    browser.execute_script("document.querySelector('#models tr').dataset.mark = 'kept'")
    entries = "return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/api/models')).length"
    polls = browser.execute_script(entries)
    wait_for(lambda: browser.execute_script(entries) > polls, what="a second poll", timeout_s=12)
    assert browser.execute_script("return document.querySelector('#models tr').dataset.mark") == "kept"
    with fake.lock:
        fake.versions[0]["reason"] = "gate: accepted (+0.09 mAP)"
    wait_for(lambda: "+0.09 mAP" in browser.find_element(By.ID, "models").text,
             what="the changed row", timeout_s=12)
    assert severe_console_entries(browser) == []


def test_the_models_table_fits_a_laptop_and_a_tablet_without_scrolling_sideways(
        served, browser, tmp_path, monkeypatch):
    """Before: from 601 to about 1100 px the table was wider than its card (1051 px in 958 at a
    1024 px window): its Action column, the Promote buttons, was out of sight until the table
    was scrolled sideways. Now it fits (narrower AP bars, engine names wrap) down to 901 px, and
    below that each version is a card, as on a phone."""
    from edgecl.runtime.console import model_rows

    base, fake = served
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    rows = model_rows(build_engine_registry(tmp_path / "state" / "models"))
    with fake.lock:
        fake.versions = rows
    for width in (1280, 1181, 1024, 901, 800, 700):
        browser.set_window_size(width, 900)
        browser.get(base + "/models")
        # every version but the current one and v0003, which the gate rejected
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#models button.promote")) == 4,
                 what="promote buttons")
        table_w, room, page_w, inner_w, right = browser.execute_script("""
            const t = document.querySelector('table.models');
            const buttons = [...document.querySelectorAll('#models button.promote')];
            return [t.scrollWidth, t.parentElement.clientWidth,
                    document.documentElement.scrollWidth, window.innerWidth,
                    Math.max(...buttons.map((b) => b.getBoundingClientRect().right))];""")
        assert table_w <= room and page_w <= inner_w, (width, table_w, room)
        assert right <= inner_w, (width, right)


def test_a_rollback_clicked_while_the_device_is_away_is_said_not_done(console_server, fake,
                                                                      browser):
    """Before: with the runtime stopped, 'Roll back' and its confirmation gave no word; only
    the general banner showed."""
    from console_browser import wait_for

    base = f"http://127.0.0.1:{console_server.port}"
    browser.get(base + "/models")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models tr[data-version]"),
             what="model rows")
    fake.promote("v0001")  # a version to roll back to (v0002 served before it)
    wait_for(lambda: not browser.find_element(By.ID, "rollback").get_attribute("disabled"),
             12, "rollback offered")
    console_server.stop()
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    browser.find_element(By.ID, "confirm-ok").click()
    said = wait_for(lambda: "not rolled back: not connected to the device" in browser.execute_script(
        "const t = document.getElementById('toasts'); return t ? t.textContent : ''"), 12,
        "the refusal said")
    assert said and fake.rollbacks == 0


def test_promoting_or_rolling_back_to_a_version_that_lacks_a_taught_class_says_so(served,
                                                                                 browser):
    """Before: 'Promote v0001? The device will switch to v0001 between two frames.' of a
    version made before the operator taught Drone: the device stopped detecting it unsaid."""
    base, fake = served
    with fake.lock:
        for v in fake.versions:
            v["not_detected"] = ["Drone"] if v["version"] != "v0003" else []
    browser.get(base + "/models")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#models button.promote"),
             what="a promote button")
    button = browser.find_element(By.CSS_SELECTOR, "#models button.promote[data-version='v0001']")
    button.click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    said = browser.find_element(By.CSS_SELECTOR, "#confirm-dialog p").text
    assert said == ("The device will switch to v0001 between two frames. It does not detect "
                    "\u2068Drone\u2069, which the version serving now detects: a round learns "
                    "it on top of it again from the samples kept.")  # isolated: any script reads
    browser.find_element(By.ID, "confirm-cancel").click()
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: browser.find_element(By.ID, "confirm-ok").is_displayed(), what="confirm")
    assert "It does not detect \u2068Drone\u2069" in browser.find_element(
        By.CSS_SELECTOR, "#confirm-dialog p").text
    browser.find_element(By.ID, "confirm-cancel").click()
    assert severe_console_entries(browser) == []
