"""End to end in a real browser: `sepit serve` on 127.0.0.1, headless Chromium loads the page, a real structure file
is submitted, the 3D view renders (non-blank canvas) and a streamed answer appears. Screenshot: test-artifacts/.
A two-chain complex opens on its longest chain with the view centred on it; the homologs of an answer are drawn as
an escaped table.

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
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, REPO, SEQUENCE
from _two_chains import chain_centroid, pdb_text

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


def _wait_for_the_view(d, chain: str) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(d, 60).until(lambda d: d.execute_script(
        "return document.getElementById('viewer').dataset.rendered === '1' && window.sepitView !== null"
        " && window.sepitView.chain === arguments[0]", chain))
    return d.execute_script("return window.sepitView")


def test_a_complex_opens_on_its_longest_chain_centred(server, browser, tmp_path) -> None:
    """Short chain A first, longer chain B 30 Å away: the selector starts on B (what the server would use), the
    view is centred on B's atoms, and choosing A moves the centre to A."""
    from pytest import approx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = browser
    path = tmp_path / "two.pdb"
    path.write_text(pdb_text())
    d.get(server + "/")
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return typeof $3Dmol !== 'undefined'"))
    d.find_element(By.ID, "file").send_keys(str(path))
    view = _wait_for_the_view(d, "B")
    chooser = Select(d.find_element(By.ID, "chain"))
    assert chooser.first_selected_option.get_attribute("value") == "B"
    assert [o.get_attribute("value") for o in chooser.options] == ["A", "B"]
    assert d.find_element(By.ID, "protein-info").text.startswith("two:B · 6 residues")
    assert "the longest of 2 chains" in d.find_element(By.ID, "protein-info").text
    assert view["center"] == approx(chain_centroid("B"), abs=0.01)
    assert d.execute_script("return window.sepit.protein.chain") == "B"
    d.save_screenshot(str(ARTIFACTS / "web_e2e_two_chains.png"))  # B centred and coloured, A dim grey

    chooser.select_by_value("A")
    view = _wait_for_the_view(d, "A")
    assert view["center"] == approx(chain_centroid("A"), abs=0.01)
    WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "protein-info").text.startswith("two:A · 3 residues"))


def _sse(*events: tuple[str, dict]) -> str:
    import json

    return "".join(f"event: {k}\ndata: {json.dumps(v)}\n\n" for k, v in events)


def test_homologs_are_shown_beside_the_answer_as_text(server, browser) -> None:
    """The page draws the ``homologs`` event as a table (UniProt accessions linked, long annotations cut with the
    full text on hover), "no homologs found" for an empty list and nothing without the event; markup in the data
    stays text. The served model has no retrieval, so /v1/ask is answered in the page by a stub."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    hostile = '<img src=x onerror="window.pwned=1">'
    rows = [{"id": "P69905", "identity": 0.5, "coverage": 0.875, "evalue": 1e-30, "annotation": "A" * 100},
            {"id": hostile, "identity": 0.25, "coverage": 1.0, "evalue": None, "annotation": hostile}]
    replies = [_sse(("start", {}), ("homologs", {"homologs": rows}), ("token", {"text": "ok"}),
                    ("done", {"answer": "ok"})),
               _sse(("start", {}), ("homologs", {"homologs": []}), ("done", {"answer": "ok"})),
               _sse(("start", {}), ("done", {"answer": "ok"}))]
    d.get(server + "/")
    d.find_element(By.ID, "sequence").send_keys(SEQUENCE)
    d.find_element(By.ID, "load").click()
    WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "ask").is_enabled())
    d.execute_script("""
        const replies = arguments[0], real = window.fetch;
        window.fetch = (url, opts) => url === "/v1/ask"
          ? Promise.resolve(new Response(replies.shift(), { headers: { "Content-Type": "text/event-stream" } }))
          : real(url, opts);""", replies)

    def ask_and_wait(n: int) -> None:
        d.find_element(By.ID, "question").send_keys(QUESTION)
        d.find_element(By.ID, "ask").click()
        WebDriverWait(d, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done")) == n)

    ask_and_wait(1)
    [box] = d.find_elements(By.CSS_SELECTOR, ".homologs")
    assert box.find_element(By.CSS_SELECTOR, ".homologs-title").text == "Homologs in the model's prompt"
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in box.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert cells[0][:4] == ["P69905", "50%", "88%", "1.0e-30"] and cells[0][4] == "A" * 79 + "…"
    assert cells[1] == [hostile, "25%", "100%", "–", hostile]
    links = box.find_elements(By.TAG_NAME, "a")
    assert [a.get_attribute("href") for a in links] == ["https://www.uniprot.org/uniprotkb/P69905"]
    assert box.find_elements(By.CSS_SELECTOR, "tbody td")[4].get_attribute("title") == "A" * 100
    assert not box.find_elements(By.TAG_NAME, "img") and d.execute_script("return window.pwned") is None
    d.save_screenshot(str(ARTIFACTS / "web_e2e_homologs.png"))

    ask_and_wait(2)
    assert [b.text for b in d.find_elements(By.CSS_SELECTOR, ".homologs-none")] == ["no homologs found"]
    ask_and_wait(3)
    assert len(d.find_elements(By.CSS_SELECTOR, ".homologs")) == 2  # no event: no table
