"""The HTML report in a real browser: headless Chromium renders it from disk and its script runs
(skipped where no ``chromium`` is installed). Clicks need a driver, which llmxmr does not depend on:
the script's first selection, which runs on load, stands in for them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ..unit.test_report import QUESTIONS, paragraphs, scripted

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture
def report(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH")
    from llmxmr.report import render_report

    document = "\n\n".join(paragraphs(hostile=True))
    runs, config = scripted(document, QUESTIONS)
    path = tmp_path / "report.html"
    path.write_text(render_report(runs, document=document, config=config), encoding="utf-8")
    return path


def test_the_report_renders_and_its_script_marks_the_cited_quote(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", report.as_uri())
    assert shot.is_file() and shot.stat().st_size > 0
    dom = chromium("--dump-dom", report.as_uri()).stdout
    assert '<mark class="cite">The secret code is KEY-77.</mark>' in dom  # the script ran: the quote is marked
    assert "alert(1)" in dom and "<script>alert" not in dom  # the hostile text is still text
