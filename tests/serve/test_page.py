"""The web page end to end in headless Debian chromium (selenium + chromium-driver): token prompt (the
admin token refused and forgotten), pick a catalogue item, upload a PNG, see the similar items; a bad
upload shows the server's message. The screenshot is kept under the test's tmp folder (and
SIMREC_SCREENSHOT, if set, gets a copy)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import ADMIN_TOKEN, TOKEN
from pngs import pattern, png

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and DRIVER.exists()), reason="needs Debian's chromium and chromium-driver"
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def test_pick_and_upload(server, packages, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    # No token yet: the page asks for one instead of showing a broken grid.
    wait.until(ready.visibility_of_element_located((By.ID, "token")))
    assert "access token" in browser.find_element(By.ID, "error").text
    # The admin token is refused, and the page does not keep it.
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "save-token").click()
    wait.until(lambda b: "admin token does not open the query routes" in b.find_element(By.ID, "error").text)
    assert browser.execute_script("return sessionStorage.getItem('simrec-token')") is None
    browser.find_element(By.ID, "token").clear()
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "save-token").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#sample-grid .tile")) == 24)
    assert "model version 1" in browser.find_element(By.ID, "status").text

    tile = browser.find_elements(By.CSS_SELECTOR, "#sample-grid .tile")[5]
    picked = tile.get_attribute("data-item-id")
    tile.click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results .result")) == 10)
    results = [
        r.get_attribute("data-item-id") for r in browser.find_elements(By.CSS_SELECTOR, "#results .result")
    ]
    assert picked not in results and picked in browser.find_element(By.ID, "query").text
    assert server.similar(item_id=picked, k=10) == results

    # Upload a catalogue item's own PNG: it comes back first, with similarity 1.000.
    items = pd.read_parquet(packages["v1"] / "items.parquet")
    upload = tmp_path / f"{items['item_id'].iat[42]}.png"
    upload.write_bytes(bytes(items["image"].iat[42]))
    browser.find_element(By.ID, "upload").send_keys(str(upload))
    wait.until(lambda b: "uploaded" in b.find_element(By.ID, "query").text)
    first = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#results .result"))
    assert first.get_attribute("data-item-id") == items["item_id"].iat[42]
    assert "similarity 1.000" in first.text
    shown = "return [...document.querySelectorAll('#results img')].every(i => i.naturalWidth === 28)"
    assert browser.execute_script(shown)
    screenshot = tmp_path / "serving-page.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("SIMREC_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["SIMREC_SCREENSHOT"])

    # A colour PNG is refused with the server's own explanation, shown to the person.
    bad = tmp_path / "colour.png"
    bad.write_bytes(png(pattern(1), mode="RGB"))
    browser.find_element(By.ID, "upload").send_keys(str(bad))
    wait.until(lambda b: "mode is RGB" in b.find_element(By.ID, "error").text)
