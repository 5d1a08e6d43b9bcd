"""The page at / in headless Chromium, against a real server process: what it shows must be
what /predict answers, and refusals must read as sentences.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (dev extra); the
tests skip, saying which is missing, without them.
"""

from __future__ import annotations

import io
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import ACCEPTED_TEXT, png
from live_server import Server
from PIL import Image

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
API_KEY = "browser-test-key-42"
WAIT_S = 60  # a loaded 2-core box: the server, Chromium and the model share it


@pytest.fixture(scope="module")
def chromium() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found "
                    "(Debian: apt-get install chromium chromium-driver)")


def _server(checkpoint: Path, **env: str) -> Iterator[Server]:
    server = Server(checkpoint, **env)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def server(chromium: None, checkpoint: Path) -> Iterator[Server]:
    yield from _server(checkpoint)


@pytest.fixture(scope="module")
def key_server(chromium: None, checkpoint: Path) -> Iterator[Server]:
    yield from _server(checkpoint, CNN_SERVE_API_KEY=API_KEY)


@pytest.fixture
def browser(chromium: None, tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1000,1200",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def noise_png(size: tuple[int, int], seed: int) -> bytes:
    """Random pixels: they do not compress, and no class gets ~100%."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buf, "PNG")
    return buf.getvalue()


def upload(browser: WebDriver, server: Server, *files: Path) -> None:
    browser.get(f"{server.url}/")
    browser.find_element(By.ID, "file").send_keys("\n".join(str(f) for f in files))


def results(browser: WebDriver, count: int) -> list[WebElement]:
    def shown(driver: WebDriver) -> list[WebElement] | bool:
        error = driver.find_element(By.ID, "error")
        if error.is_displayed():
            raise AssertionError(f"the page shows an error: {error.text}")
        cards = driver.find_elements(By.CSS_SELECTOR, "#result-list .result")
        return cards if len(cards) == count else False

    return WebDriverWait(browser, WAIT_S).until(shown)


def error_sentence(browser: WebDriver) -> str:
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_element(By.ID, "error").is_displayed()
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#result-list .result") == []
    return browser.find_element(By.ID, "error-sentence").text


def percent(text: str) -> float:
    found = re.fullmatch(r"(\d+\.\d)%", text)
    assert found, f"not a percentage with one decimal: {text!r}"
    return float(found.group(1))


def assert_card_shows(card: WebElement, expected: dict[str, Any]) -> None:
    """The card's class, confidence and bars are `expected` (a /predict answer), to the
    0.1 % the page shows."""
    def close(shown: str, probability: float) -> bool:
        return abs(percent(shown) - probability * 100) <= 0.05 + 1e-9

    assert card.find_element(By.CSS_SELECTOR, ".class").text == expected["class"]
    assert close(card.find_element(By.CSS_SELECTOR, ".confidence").text, expected["confidence"])
    rows = [(row.find_element(By.CSS_SELECTOR, ".label").text,
             row.find_element(By.CSS_SELECTOR, ".value").text)
            for row in card.find_elements(By.CSS_SELECTOR, ".bars li")]
    probabilities = expected["probabilities"]
    assert [name for name, _ in rows] == sorted(probabilities, key=lambda c: -probabilities[c])
    assert all(close(shown, probabilities[name]) for name, shown in rows), rows
    widths = [float(fill.value_of_css_property("width").removesuffix("px"))
              for fill in card.find_elements(By.CSS_SELECTOR, ".bars .fill")]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]


def test_page_shows_what_predict_answers_for_the_same_photo(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    data = noise_png((48, 40), seed=1)
    (image := tmp_path / "noise.png").write_bytes(data)
    upload(browser, server, image)
    [card] = results(browser, 1)

    expected = httpx.post(f"{server.url}/predict",
                          files={"file": ("noise.png", data, "image/png")}).json()
    assert_card_shows(card, expected)
    assert card.find_element(By.CSS_SELECTOR, ".file").text == "noise.png"
    assert card.find_element(By.CSS_SELECTOR, ".thumb").get_attribute("src").startswith("blob:")
    assert re.fullmatch(r"1 photo · \d+ ms round trip", browser.find_element(By.ID, "timing").text)

    facts = WebDriverWait(browser, WAIT_S).until(
        lambda driver: driver.find_element(By.ID, "model-facts").text or False
    )
    for shown in ("random_cnn", "tutorial_cnn", "Validation accuracy\n50.0%", "Temperature\n1.7",
                  "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"):
        assert shown in facts
    # The policy let the page's own script and style run, and nothing broke it.
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []


def test_several_photos_go_to_the_batch_route_and_fit_a_phone(
    server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    # A phone's viewport (a headless window is at least 500 px wide, so emulate it).
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True,
    })
    images = [tmp_path / f"photo{i}.png" for i in range(3)]
    for i, image in enumerate(images):
        image.write_bytes(noise_png((40 + 8 * i, 32), seed=10 + i))
    upload(browser, server, *images)
    cards = results(browser, 3)

    expected = httpx.post(f"{server.url}/predict/batch", files=[
        ("files", (image.name, image.read_bytes(), "image/png")) for image in images
    ]).json()["predictions"]
    for card, answer, image in zip(cards, expected, images, strict=True):
        assert_card_shows(card, answer)
        assert card.find_element(By.CSS_SELECTOR, ".file").text == image.name
    assert browser.find_element(By.ID, "timing").text.startswith("3 photos · ")
    assert browser.execute_script("return window.innerWidth") == 390
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    ), "the page scrolls sideways at phone width"


@pytest.mark.parametrize(("name", "content", "sentence"), [
    ("notes.txt", b"just some text, not a picture\n",
     f"That is not an image we accept. Send a {ACCEPTED_TEXT} file."),
    ("huge.png", noise_png((700, 600), seed=3),  # over the live server's 1,000,000 bytes
     "That photo is too large: the limit is 1 MB (1,000,000 bytes) per photo."),
])
def test_refused_uploads_read_as_sentences(
    server: Server, browser: WebDriver, tmp_path: Path, name: str, content: bytes, sentence: str
) -> None:
    (upload_file := tmp_path / name).write_bytes(content)
    upload(browser, server, upload_file)
    assert error_sentence(browser) == sentence
    assert browser.find_element(By.ID, "error-detail").text.startswith("Server said: ")


def test_without_the_api_key_the_page_asks_for_it_then_predicts(
    key_server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    (image := tmp_path / "photo.png").write_bytes(png((36, 36), (30, 160, 90)))
    upload(browser, key_server, image)
    assert error_sentence(browser) == (
        "This server needs a valid API key. Enter it below and the photos are sent again."
    )
    key_field = browser.find_element(By.ID, "key")
    assert key_field.is_displayed()
    assert browser.switch_to.active_element == key_field

    key_field.send_keys(API_KEY, Keys.ENTER)  # the photo is sent again, with the key
    [card] = results(browser, 1)
    expected = httpx.post(f"{key_server.url}/predict", headers={"X-API-Key": API_KEY},
                          files={"file": ("photo.png", image.read_bytes(), "image/png")}).json()
    assert_card_shows(card, expected)
    assert browser.execute_script(
        "return [sessionStorage.getItem('cnn-serve.api-key'), localStorage.length]"
    ) == [API_KEY, 0]


def test_a_wrong_key_is_refused_in_a_sentence(
    key_server: Server, browser: WebDriver, tmp_path: Path
) -> None:
    (image := tmp_path / "photo.png").write_bytes(png())
    upload(browser, key_server, image)
    error_sentence(browser)
    browser.find_element(By.ID, "key").send_keys("not-the-key", Keys.ENTER)
    WebDriverWait(browser, WAIT_S).until(
        lambda driver: "was not accepted" in driver.find_element(By.ID, "error-sentence").text
    )


def test_the_drop_zone_is_reached_with_tab_and_shows_focus(
    server: Server, browser: WebDriver
) -> None:
    browser.get(f"{server.url}/")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element == browser.find_element(By.ID, "file")
    assert browser.find_element(By.ID, "drop").value_of_css_property("outline-style") == "solid"
