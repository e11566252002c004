"""End to end in a real browser: `sepit serve` on 127.0.0.1, headless Chromium loads the page, a real structure file
is submitted, the 3D view renders (non-blank canvas) and a streamed answer appears. Screenshot: test-artifacts/.

Needs Debian `chromium` + `chromium-driver` and PyPI `selenium` (installed by scripts/setup.sh); fails with a clear
message when they are missing.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, REPO

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "test-artifacts"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                # WebGL without a GPU: Chromium's software renderer must be opted into (local, trusted page)
                "--enable-unsafe-swiftshader"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, fitted_model_dir):
    model = fitted_model_dir
    port = _free_port()
    env = {**os.environ, "SEPIT_HOME": str(tmp_path_factory.mktemp("home"))}
    proc = subprocess.Popen([sys.executable, "-m", "sepit.cli", "serve", "--model", str(model), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`sepit serve` exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("`sepit serve` did not answer /health within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install selenium (scripts/setup.sh does this)")
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.fail("headless Chromium is missing: apt-get install -y chromium chromium-driver "
                    "(scripts/setup.sh does this)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    profile = tempfile.mkdtemp(prefix="sepit-chrome-")
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service(driver))
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _viewer_pixels(d) -> tuple[int, int]:
    """(pixels that are not background, distinct colours) of the 3D view, read back from WebGL."""
    from PIL import Image

    uri = d.execute_script("return window.sepit.viewer.pngURI();")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 24)
    background = max(colours)[1]
    return sum(n for n, c in colours if c != background), len(colours)


def test_page_renders_a_structure_and_streams_an_answer(server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        d.get(server + "/")
        WebDriverWait(d, 30).until(lambda d: d.execute_script("return typeof $3Dmol !== 'undefined'"))
        d.find_element(By.ID, "file").send_keys(str(CRAMBIN))
        WebDriverWait(d, 60).until(lambda d: d.find_element(By.ID, "viewer").get_attribute("data-rendered") == "1")
        assert d.find_element(By.ID, "protein-info").text.startswith("1crn:A · 46 residues · 46 with Cα")
        assert d.find_elements(By.CSS_SELECTOR, "#viewer canvas")
        drawn, colours = _viewer_pixels(d)
        assert drawn > 5000 and colours > 50, f"3D view looks blank ({drawn} drawn pixels, {colours} colours)"

        d.find_element(By.ID, "question").send_keys(QUESTION)
        d.find_element(By.ID, "ask").click()
        WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done, .msg.error"))
        answer = d.find_element(By.CSS_SELECTOR, ".msg.assistant").text
        assert not d.find_elements(By.CSS_SELECTOR, ".msg.error"), answer
        assert answer.strip(), "the answer bubble is empty"
        d.save_screenshot(str(ARTIFACTS / "web_e2e.png"))  # structure + question + answer

        # the same question about a pasted sequence gives the answer the model was fitted on
        d.find_element(By.ID, "sequence").send_keys("MKTAYIAKQRQISFVKSHFSRQ")
        d.find_element(By.ID, "load").click()
        WebDriverWait(d, 30).until(lambda d: "sequence only" in d.find_element(By.ID, "protein-info").text)
        d.find_element(By.ID, "question").send_keys(QUESTION)
        d.find_element(By.ID, "ask").click()
        WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done, .msg.error"))
        assert d.find_element(By.CSS_SELECTOR, ".msg.assistant").text == ANSWER

        d.find_element(By.ID, "annotate").click()
        WebDriverWait(d, 180).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#annotations tr")) >= 12)
        rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#annotations tr")]
        assert any(r.startswith(QUESTION) for r in rows) and any("P(yes) =" in r for r in rows)
    finally:
        d.save_screenshot(str(ARTIFACTS / "web_e2e_last.png"))
