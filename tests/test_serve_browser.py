"""The live demo in a real browser: Debian's headless Chromium driven by Playwright against infer/serve.py.

Needs the ``serve`` extra and the ``chromium`` Debian package (scripts/setup.sh installs both; chromium where it runs
as root with apt). Without chromium the module skips with one line saying how to install it, except under CI (the
``CI`` variable, set by .ci/run), where it fails: CI must run it. Set SERVE_SCREENSHOT=docs/images/serve.png to
refresh the README's screenshot.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import decord
import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
INSTALL = "install Debian's chromium (bash scripts/setup.sh does as root; or: sudo apt-get install chromium)"
if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail(f"the browser test must run under CI, but there is no chromium: {INSTALL}", pytrace=False)
if CHROMIUM is None:
    pytest.skip(f"the browser test needs chromium: {INSTALL}", allow_module_level=True)
START_SECONDS = 120  # liveness bound for the server to load the model on a busy machine
SHOWN_BEFORE_STOP = 12  # frames to watch (and the screenshot's moment) before pressing Stop
ACK_TIMEOUT = 8  # seconds the server waits for a page that shows nothing (a hidden tab) before ending its generation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    yield from serve()


@pytest.fixture(scope="module")
def text_server_url():
    yield from serve("--checkpoint", str(ROOT / "checkpoints" / "text-demo.safetensors"))


def serve(*args: str):
    """Run infer/serve.py (with ``args``) until the test is done; yield its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer" / "serve.py"), "--port", str(port), "--max-chunks",
                             "200", "--ack-timeout", str(ACK_TIMEOUT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"infer/serve.py did not start: {proc.communicate()[0]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_page_streams_frames_stops_and_downloads_what_was_shown(server_url, tmp_path):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1000, "height": 760})
        page.goto(server_url)
        generate, stop, status = (page.get_by_test_id(t) for t in ("generate", "stop", "status"))
        count, download, error = (page.get_by_test_id(t) for t in ("frame-count", "download", "error"))
        expect(generate).to_be_enabled()
        assert page.locator("#model option").all_inner_texts() == ["demo (32x32)"]
        assert page.locator("#label option").all_inner_texts()[1:] == ["0: circle", "1: square", "2: triangle"]
        page.select_option("#label", "1")
        page.check("#until-stopped")
        page.select_option("#step-cache", "teacache")
        generate.click()

        seen, deadline = [0], time.monotonic() + START_SECONDS
        while seen[-1] < SHOWN_BEFORE_STOP:  # frames appear while the run goes on, not at its end
            assert time.monotonic() < deadline, f"frames stopped at {seen}: {status.inner_text()} {error.inner_text()}"
            shown = int(count.inner_text())
            if shown != seen[-1]:
                assert status.inner_text().startswith("generating"), status.inner_text()
                seen.append(shown)
            page.wait_for_timeout(20)
        assert len(seen) >= 4 and seen == sorted(seen)  # at least three rises before the run ended
        page.screenshot(path=os.environ.get("SERVE_SCREENSHOT", str(tmp_path / "serve.png")))
        assert page.locator("#first-frame").inner_text().endswith(" s")
        assert float(page.locator("#fps").inner_text().split()[0]) > 0

        stop.click()
        expect(download).to_be_visible(timeout=60_000)
        assert status.inner_text().startswith("stopped: ")
        shown = int(count.inner_text())
        assert shown >= SHOWN_BEFORE_STOP and download.get_attribute("download") == "ca2vdm-demo-seed0.mp4"
        with page.expect_download() as saved:
            download.click()
        path = tmp_path / "shown.mp4"
        saved.value.save_as(path)
        video = decord.VideoReader(str(path))
        assert len(video) == shown and video[0].shape == (32, 32, 3)  # exactly the frames the page showed

        page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
        generate.click()
        expect(error).to_contain_text("the upload is not an image or video")
        expect(generate).to_be_enabled()

        page.set_input_files("#upload", files=[])
        page.fill("#seed", "9" * 5000)  # a seed out of range: one message, and the page stays connected
        generate.click()
        expect(error).to_contain_text("must be a whole number in 0 .. 2**64 - 1")
        expect(generate).to_be_enabled()
        assert status.inner_text() == "ready"

        # a hidden tab acknowledges nothing: the server ends its generation and the page says why
        page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true})")
        page.fill("#seed", "1")
        generate.click()
        expect(error).to_contain_text(f"this tab showed no new frame for {ACK_TIMEOUT} s", timeout=120_000)
        expect(status).to_contain_text("ended by the server: this tab showed no new frame for too long",
                                       timeout=60_000)
        expect(generate).to_be_enabled()
        browser.close()


def test_prompt_box_starts_and_switches_a_text_model(text_server_url):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(text_server_url)
        generate, switch, status = (page.get_by_test_id(t) for t in ("generate", "switch", "status"))
        count, error, prompt = (page.get_by_test_id(t) for t in ("frame-count", "error", "prompt"))
        expect(generate).to_be_enabled()
        expect(prompt).to_be_visible()
        assert page.locator("#label-row").is_hidden() and switch.is_disabled()
        prompt.fill("a red circle " * 10)  # 30 tokens: over the model's 24
        generate.click()
        expect(error).to_contain_text("at most 24")
        expect(generate).to_be_enabled()

        prompt.fill("a red circle")
        page.fill("#chunks", "12")
        generate.click()
        expect(switch).to_be_enabled(timeout=START_SECONDS * 1000)
        expect(count).not_to_have_text("0", timeout=START_SECONDS * 1000)
        prompt.fill("a blue square")
        switch.click()
        expect(status).to_contain_text("switching from the next chunk on")
        expect(status).to_contain_text("finished: 49 frames, 12 chunks", timeout=START_SECONDS * 1000)
        assert error.inner_text() == "" and switch.is_disabled()
        browser.close()
