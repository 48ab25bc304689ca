"""End to end in headless Chromium (the Debian chromium + chromium-driver, driven by Selenium
through /usr/bin/chromedriver; nothing is downloaded): the app runs under uvicorn on a free
loopback port; the test enters a key, asks a question, and checks that tokens streamed, the
citations are linked to their passages, and every sentence's audio was played to its end.
A screenshot is saved under the test output folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from conftest import OUTPUT, uvicorn_server
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
        "--window-size=1000,1200",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_page_streams_an_answer_cites_its_passages_and_plays_the_audio(
    home: Path, admin_key: str, tmp_path: Path
):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    env = {"VOICEBOT_INDEX_ON_START": "1", "VOICEBOT_WORD_DELAY": "0.02"}
    with uvicorn_server(home, env=env, log=OUTPUT / "browser-uvicorn.log") as url:
        driver = chromium(tmp_path / "chromium-profile")
        try:
            driver.set_script_timeout(30)
            driver.get(url + "/")
            driver.find_element(By.ID, "key").send_keys(admin_key)
            driver.find_element(By.ID, "question").send_keys("Can I take my bike on the tram?")
            driver.find_element(By.ID, "send").click()

            def finished(d: webdriver.Chrome) -> dict | None:
                s = d.execute_script("return window.voicebot")
                if s["error"]:
                    raise AssertionError(f"the page reported: {s['error']}")
                played = s["audioReceived"] and s["audioEnded"] == s["audioReceived"]
                return s if s["done"] and played else None

            start = time.monotonic()
            state = WebDriverWait(driver, 90, poll_frequency=0.2).until(finished)
            elapsed = time.monotonic() - start
            driver.save_screenshot(str(OUTPUT / "browser-answer.png"))
            (OUTPUT / "browser-state.json").write_text(json.dumps(state, indent=2))

            assert state["tokens"] > 5
            assert state["citations"] >= 1
            assert state["audioEnded"] == state["audioReceived"] >= 2
            client = state["client"]
            # Progressive speech: the first sentence's audio arrived before the answer was full.
            assert client["firstToken"] <= client["firstAudio"] < client["fullAnswer"]
            answer = driver.find_element(By.ID, "answer")
            assert "bicycles" in answer.text.lower() or "bike" in answer.text.lower()
            links = answer.find_elements(By.CSS_SELECTOR, "a.cite")
            assert links, answer.get_attribute("innerHTML")
            target = links[0].get_attribute("href").split("#")[1]
            passage = driver.find_element(By.ID, target)
            assert "bike" in passage.text.lower() or "bicycle" in passage.text.lower()
            assert elapsed < 90
        finally:
            driver.quit()
