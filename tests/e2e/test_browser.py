"""The upload page in a real headless Chromium against a real uvicorn server on 127.0.0.1.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and Selenium; skipped with the reason when they are absent. Screenshots
at desktop and phone width are left in the test's tmp_path for a person to look at.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")
uvicorn = pytest.importorskip("uvicorn", reason="the server needs the 'serve' extra")
pytest.importorskip("selenium", reason="the browser test needs selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from gamelab_caption.server.app import create_app  # noqa: E402

# Found on PATH, as .ci/run looks for them (`command -v`): Debian's packages, or any other.
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)  # CSS pixels of a common phone
WAIT_S = 20
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}


@pytest.fixture(scope="module")
def server_url(captioner, game_index):
    """uvicorn serving the app on a free 127.0.0.1 port, in a thread, for this module."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    app = create_app(captioner, game_index, workers=1)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=WAIT_S)
    listener.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = {"chromium": CHROMIUM, "chromedriver": CHROMEDRIVER}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not on PATH: apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def _wait(driver, condition, message: str):
    return WebDriverWait(driver, WAIT_S).until(lambda _: condition(), message=message)


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text.strip()


def _open_page(driver, url: str) -> None:
    driver.set_window_size(*DESKTOP)
    driver.get(url)
    _wait(driver, lambda: "tiny" in _text(driver, "model"), "the page did not load /healthz")


def _drop(driver, rgb: tuple[int, int, int]) -> None:
    """Drop a PNG drawn in the page onto the drop zone, as a person dragging a file would."""
    driver.execute_async_script(
        """
        const [r, g, b, done] = arguments;
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 32;
        const context = canvas.getContext("2d");
        context.fillStyle = `rgb(${r}, ${g}, ${b})`;
        context.fillRect(0, 0, 32, 32);
        canvas.toBlob((blob) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], "dropped.png", { type: "image/png" }));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
            done();
        }, "image/png");
        """,
        *rgb,
    )


def test_upload_shows_caption_heatmap_and_games(browser, server_url, image_files, tmp_path):
    _open_page(browser, server_url)
    browser.find_element(By.ID, "file-input").send_keys(str(image_files["red"]))
    _wait(browser, lambda: _text(browser, "caption") == "red ball", "no caption on the page")
    _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#games .game"), "no games")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#games .game-name")]
    assert names[0] == "Red Game"
    why = browser.find_element(By.CSS_SELECTOR, "#games .game-why").text
    assert why.startswith("Looks like its cover"), why  # the page says why it matched
    assert "confidence" in browser.find_element(By.CSS_SELECTOR, "#games .game-meta").text
    cover_loaded = "return document.querySelector('#games img').naturalWidth"
    _wait(browser, lambda: browser.execute_script(cover_loaded) > 0, "the cover did not load")
    heatmap = browser.find_element(By.ID, "heatmap")
    assert heatmap.is_displayed() and heatmap.get_attribute("width") == "2"
    browser.find_element(By.ID, "show-attention").click()
    assert not heatmap.is_displayed()
    browser.find_element(By.ID, "show-attention").click()
    browser.find_element(By.CSS_SELECTOR, "#caption button").click()  # the first word
    assert "red" in _text(browser, "attention-label")
    browser.save_screenshot(str(tmp_path / "desktop.png"))

    browser.set_window_size(*PHONE)
    overflow = "return document.documentElement.scrollWidth - window.innerWidth"
    assert browser.execute_script(overflow) <= 0, "the page scrolls sideways at phone width"
    browser.save_screenshot(str(tmp_path / "phone.png"))
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []  # a blocked external asset or a CSP violation would show here


def test_drag_and_drop_captions_the_dropped_image(browser, server_url):
    _open_page(browser, server_url)
    _drop(browser, COLOURS["blue"])
    _wait(browser, lambda: _text(browser, "caption") == "blue box", "no caption after a drop")
    first_game = browser.find_element(By.CSS_SELECTOR, "#games .game-name")
    assert first_game.text == "Blue Game"


def test_a_non_image_shows_the_servers_message(browser, server_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    _open_page(browser, server_url)
    browser.find_element(By.ID, "file-input").send_keys(str(notes))
    _wait(browser, lambda: _text(browser, "error"), "no error shown")
    assert "not an image" in _text(browser, "error")
    assert not browser.find_element(By.ID, "result").is_displayed()


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/"])
def test_static_paths_cannot_escape_over_a_real_socket(server_url, path):
    host, port = server_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_S)
    connection.request("GET", path)  # sent as written: no client-side normalisation
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 404
    assert b"create_app" not in body
