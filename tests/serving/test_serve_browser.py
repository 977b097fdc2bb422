"""The demo page in headless Chromium, against a real local server with a FakePredictor
(known entities: the page, not the model, is under test).

Needs the Debian packages ``chromium`` and ``chromium-driver``; without them these tests
fail rather than skip, because CI installs them and a silent skip would hide a broken page.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from serve_fixtures import REPO, ServerProcess, fake_predict_one, start_server_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "test-artifacts" / "serve-page.png"  # gitignored; CI can upload it
MAX_LEN = 120
SENTENCE = "이순신은 1545년 서울에서 태어났고 삼성전자는 오늘 오후 3시에 칠레에서 사과 두 개를 샀다."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server_process(tmp_path_factory.mktemp("browser-server"), kind="fake", max_text_length=MAX_LEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    assert CHROMEDRIVER.is_file() and CHROMIUM.is_file(), (
        "headless Chromium is required: apt-get install -y chromium chromium-driver"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, server: ServerProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, 10).until(lambda d: "fake-gazetteer" in d.find_element(By.ID, "model").text)


def analyse(browser, text: str, *, type_it: bool = True) -> None:
    """Enter ``text`` and press the button, then wait for the page to finish."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = browser.find_element(By.ID, "text")
    box.clear()
    if type_it:
        box.send_keys(text)
    else:  # ChromeDriver can not type characters outside the BMP (emoji)
        browser.execute_script("arguments[0].value = arguments[1];", box, text)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "sentence").get_attribute("data-state") in ("done", "error")
    )


def marks(browser) -> list[tuple[str, str, int, int, str]]:
    from selenium.webdriver.common.by import By

    return [
        (
            m.get_attribute("textContent"),
            m.get_attribute("data-label"),
            int(m.get_attribute("data-start")),
            int(m.get_attribute("data-end")),
            m.get_attribute("class"),
        )
        for m in browser.find_elements(By.CSS_SELECTOR, "#sentence mark.ent")
    ]


def test_the_page_highlights_each_entity_with_its_label(browser, server):
    open_page(browser, server)
    analyse(browser, SENTENCE)
    want = [(e.text, e.label, e.start, e.end) for e in fake_predict_one(SENTENCE).entities]
    assert [m[:4] for m in marks(browser)] == want
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_each_entity_type_gets_its_own_class_and_unknown_types_the_fallback(browser, server):
    open_page(browser, server)
    analyse(browser, SENTENCE)
    classes = {label: cls.split() for _, label, _, _, cls in marks(browser)}
    assert classes == {
        "PS": ["ent", "ent-PS"],
        "DT": ["ent", "ent-DT"],
        "LC": ["ent", "ent-LC"],
        "OG": ["ent", "ent-OG"],
        "TI": ["ent", "ent-TI"],
        "XX": ["ent", "ent-other"],
        "QT": ["ent", "ent-QT"],
    }


def test_each_entity_type_is_drawn_in_a_different_colour(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, SENTENCE)
    colours = {
        m.get_attribute("data-label"): m.value_of_css_property("background-color")
        for m in browser.find_elements(By.CSS_SELECTOR, "#sentence mark.ent")
    }
    assert len(set(colours.values())) == len(colours) == 7


def test_the_sentence_text_is_shown_unchanged_around_the_highlights(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, SENTENCE)
    assert browser.find_element(By.ID, "sentence").get_attribute("textContent") == SENTENCE


def test_the_entity_table_lists_every_entity_with_its_score(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, SENTENCE)
    rows = [
        [td.get_attribute("textContent") for td in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#entities tr.entity-row")
    ]
    want = [[e.text, e.label, f"{e.start}–{e.end}", f"{e.score:.4f}"] for e in fake_predict_one(SENTENCE).entities]
    assert rows == want


def test_the_token_table_has_one_row_per_token(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, SENTENCE)
    tokens = [
        row.find_elements(By.TAG_NAME, "td")[1].get_attribute("textContent")
        for row in browser.find_elements(By.CSS_SELECTOR, "#tokens tr.token-row")
    ]
    assert tokens == [t.token for t in fake_predict_one(SENTENCE).tokens]


def test_highlights_stay_aligned_after_an_emoji(browser, server):
    text = "😀🎉 이순신과 서울"
    open_page(browser, server)
    analyse(browser, text, type_it=False)
    assert [m[:4] for m in marks(browser)] == [("이순신", "PS", 3, 6), ("서울", "LC", 8, 10)]


def test_an_api_error_is_shown_in_the_page(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, "가" * (MAX_LEN + 1))
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.text == f'오류 (error) 413: "text" is {MAX_LEN + 1} characters long; the limit is {MAX_LEN}'
    browser.save_screenshot(str(SCREENSHOT.with_name("serve-page-error.png")))


def test_a_successful_request_clears_the_previous_error(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, "가" * (MAX_LEN + 1))
    analyse(browser, "서울")
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert [m[:2] for m in marks(browser)] == [("서울", "LC")]


def test_the_page_escapes_markup_in_the_sentence(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    analyse(browser, '<img src=x onerror="document.title=\'pwned\'"> 서울')
    assert browser.find_elements(By.CSS_SELECTOR, "#sentence img") == []
    assert browser.title != "pwned"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server_process(tmp_path_factory.mktemp("browser-token-server"), kind="fake", max_text_length=MAX_LEN,
                              api_key="s3cret-token") as srv:
        yield srv


def test_the_page_asks_for_the_token_of_a_server_that_has_one_and_sends_it(browser, token_server):
    from selenium.webdriver.common.by import By

    open_page(browser, token_server)
    browser.execute_script("sessionStorage.clear();")
    open_page(browser, token_server)
    token = browser.find_element(By.ID, "token")
    assert token.is_displayed()
    analyse(browser, SENTENCE)
    assert "401" in browser.find_element(By.ID, "error").text
    token.send_keys("s3cret-token")
    analyse(browser, SENTENCE)
    assert browser.find_element(By.ID, "error").text == ""
    assert [m[1] for m in marks(browser)] == [e.label for e in fake_predict_one(SENTENCE).entities]


def test_the_page_of_an_open_server_asks_for_no_token(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    assert not browser.find_element(By.ID, "token").is_displayed()
