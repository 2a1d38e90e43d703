"""Two operators label one device's queue from two consoles, in headless Chromium against the
real server thread and a fake runtime: each page shows a frame the other does not have open,
says which frames are open elsewhere, and a frame the operator clicks stays theirs."""

import pytest

from console_browser import wait_answerable, wait_for

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def shown(browser) -> str:
    """The id of the frame the Label page shows."""
    return browser.execute_script(
        "const s = document.querySelector('#why strong'); return s ? s.textContent : ''")


def open_elsewhere(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#queue li')]"
        ".filter(li => li.querySelector('.chip.elsewhere')).map(li => li.dataset.id)")


def test_a_second_console_picks_a_frame_the_first_does_not_have_open(served, browser):
    """Before: both pages opened the queue's first frame; both operators labelled it, and the
    second one's boxes were refused (409) and lost."""
    base, fake = served
    fake.add_items(2)
    first = browser.current_window_handle
    browser.get(base + "/label")
    wait_for(lambda: shown(browser) == "f0000", what="the first console on f0000")
    browser.switch_to.new_window("tab")
    browser.get(base + "/label")
    wait_for(lambda: shown(browser) == "f0001", what="the second console on another frame")
    wait_for(lambda: open_elsewhere(browser) == ["f0000"], what="f0000 marked open elsewhere")
    # answering moves the second console on to a frame nobody has open, not to f0000
    wait_answerable(browser)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: [a["id"] for a in fake.answers] == ["f0001"], what="the answer")
    wait_for(lambda: shown(browser) == "f0002", what="the next free frame")
    # a frame the operator clicks is theirs to label, with a note that it is open elsewhere
    browser.find_element(By.CSS_SELECTOR, '#queue li[data-id="f0000"]').click()
    wait_for(lambda: shown(browser) == "f0000", what="the clicked frame")
    wait_for(lambda: "open on another console too" in browser.execute_script(
        "return document.getElementById('toasts').textContent"), what="the note")
    browser.switch_to.window(first)
    assert shown(browser) == "f0000"          # the first console keeps its frame
    browser.switch_to.window(browser.window_handles[1])
    browser.close()
    browser.switch_to.window(first)
