"""One real headless-browser run: `streamlit run app.py`, ask in the chat, open a source, screenshot.

Uses Debian's chromium through Playwright (never downloads a browser). The LLM is the embedded
llama.cpp server of this test process (shared with tests/test_app.py when both run), handed to the
streamlit child as RAG_LLM_BASE_URL so only one model server runs on the machine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "BM25 中的参数 b = 0.75 控制的是什么？"  # the bundled 0.5B answers this one with a citation
ANSWER_TIMEOUT_MS = 600_000  # a 0.5B generation on a busy 2-core machine, plus first model loads
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking",
                 "--disable-component-update", "--disable-gpu"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.llm,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium package"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed: pip install playwright (no browser download needed)"),
]


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> Path:
    """The sample corpus as knowledge base 'sample'."""
    from ingest.pipeline import run_ingest
    from rag.settings import Settings

    index_dir = tmp_path_factory.mktemp("browser") / "index"
    report = run_ingest([ROOT / "data" / "sample"], Settings(index_dir=index_dir, kb="sample"), progress=False)
    assert report.wrote and not report.failed, report
    return index_dir


@pytest.fixture(scope="module")
def streamlit_url(sample_index, tmp_path_factory):
    """A running `streamlit run app.py` on a free local port; terminated after the tests."""
    from rag.llm_server import ensure_server, free_port
    from rag.settings import Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_INDEX_DIR=str(sample_index), RAG_KB="sample", RAG_UI_LANG="zh",
               RAG_LLM_BASE_URL=os.environ.get("RAG_LLM_BASE_URL") or ensure_server(Settings()))
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer on {url} within {timeout_s:.0f} s")


def test_ask_in_browser_and_open_a_source(streamlit_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shot = tmp_path / "chat.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(streamlit_url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible(timeout=120_000)
            t_ready = time.perf_counter() - t0
            box.fill(QUESTION)
            box.press("Enter")
            t_asked = time.perf_counter()
            reply = page.get_by_test_id("stChatMessage").nth(1)
            # the evidence comes first, before the model's answer
            evidence = reply.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text="找到的依据"))
            expect(evidence.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
            t_evidence = time.perf_counter()
            # then the answer: a citation "[n] …", or a closest source when the model refuses
            sources = reply.get_by_test_id("stExpander").filter(
                has=page.locator("summary", has_text=re.compile(r"\[\d+\]|最接近的资料")))
            expect(sources.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
            t_answer = time.perf_counter()
            cited = sources.filter(has=page.locator("summary", has_text=re.compile(r"\[\d+\]")))
            source = cited.first if cited.count() else sources.first
            source.locator("summary").click()
            expect(source.locator("details")).to_have_attribute("open", "", timeout=10_000)
            page.wait_for_timeout(800)  # let the expander animation finish
            source.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
            text = reply.inner_text()
        finally:
            browser.close()
    print(f"\nscreenshot: {shot}")
    print(f"page open -> chat ready {t_ready:.1f} s; question -> evidence shown {t_evidence - t_asked:.1f} s; "
          f"question -> answer complete {t_answer - t_asked:.1f} s; "
          f"page open -> first answer complete {t_answer - t0:.1f} s")
    print(f"answer shown: {text[:300]!r}")
    assert "dense" in text and "BM25" in text  # the opened source shows why it ranked
    assert shot.is_file() and shot.stat().st_size > 10_000
