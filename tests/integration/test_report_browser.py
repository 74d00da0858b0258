"""The HTML report in a real browser: headless Chromium opens it from disk (a file:// URL), a mouse
clicks a chunk of the strip and a citation, and the DOM must show what each click promised. The
browser is driven through the DevTools protocol over a pipe (``tests/browser.py``, no package but
the browser). Skipped where no Chromium is installed (Debian: ``apt-get install chromium``).

Screenshots of each step go to the test's ``tmp_path`` (their paths are printed and recorded as
the ``screenshots`` property). ``LLMXMR_REPORT_SCREENSHOT=docs/report.png`` also writes the
README's picture: the top of the report with a chunk opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmxmr.report import QuestionRun

from ..browser import Browser, find_chromium
from ..unit.document_fixtures import pdf_bytes
from ..unit.test_report import CODE, FRIENDLY, HOSTILE, QUESTIONS, estimated, paragraphs, scripted

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.integration,
    # One browser for the module, on one worker: two Chromiums would share the two cores.
    pytest.mark.xdist_group("chromium"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"),
]
WIDTH, HEIGHT = 1200, 900
README_SHOT = "LLMXMR_REPORT_SCREENSHOT"
README_WIDTH = 1000


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM is not None
    with Browser(CHROMIUM, WIDTH, HEIGHT) as opened:
        yield opened


@pytest.fixture
def shots(tmp_path, record_property):
    """``shot(name)``: a screenshot of the viewport in tmp_path, its path printed and recorded."""
    taken: list[str] = []
    record_property("screenshots", taken)

    def shot(browser: Browser, name: str, *, full_page: bool = False) -> Path:
        path = browser.screenshot(tmp_path / f"{len(taken)}-{name}.png", full_page=full_page)
        assert path.stat().st_size > 5000, path  # a page, not a blank image
        taken.append(str(path))
        print(f"screenshot: {path}")
        return path

    return shot


def write_report(path: Path, *, pdf: bool) -> tuple[str, list[QuestionRun]]:
    """The scripted run (3 questions, 12 chunks, chunk 7 failing for two of them, one unsupported
    answer) as ``llmxmr run --report`` writes it, over a PDF of one page a paragraph or over the
    text with hostile lines; returns the document's text and the questions' results."""
    from llmxmr.documents import read_document
    from llmxmr.report import render_report

    document = read_document(pdf_bytes(paragraphs())) if pdf else "\n\n".join(paragraphs(hostile=True))
    runs, config = scripted(document, QUESTIONS)
    source = "a scripted run over a 12-page PDF" if pdf else "a scripted run over a text with hostile lines"
    page = render_report(runs, document=document, config=config, estimate=estimated(document, config), source=source)
    path.write_text(page, encoding="utf-8")
    return (document.text if not isinstance(document, str) else document), runs


def state(browser: Browser, script: str) -> dict:
    """What a script of the page's state returns (an object of plain values)."""
    return browser.evaluate(f"(function () {{ {script} }})()")


# Where an element is and whether a user sees it: inside the viewport, and on top at its middle
# (not under the sticky bar or another element).
SEEN = """function seen(el) {
  if (!el || el.closest('[hidden]')) return false;
  var r = el.getBoundingClientRect();
  if (r.width === 0 || r.bottom <= 0 || r.top >= innerHeight) return false;
  var top = document.elementFromPoint(r.left + Math.min(r.width, 40) / 2, r.top + r.height / 2);
  return !!top && (el === top || el.contains(top));
}"""


def test_clicks_on_the_strip_and_on_citations_show_what_they_promise(browser, shots, tmp_path):
    report = tmp_path / "report.html"
    write_report(report, pdf=True)
    browser.open(report.as_uri())
    assert browser.errors() == []
    shots(browser, "loaded")
    shots(browser, "whole-page", full_page=True)
    loaded = state(
        browser,
        f"""{SEEN}
        var strip = document.querySelectorAll('.q-view:not([hidden]) .strip .chunk');
        return {{chunks: strip.length, failed: document.getElementById('strip-q0-7').dataset.state,
                 panel: document.getElementById('chunk-panel').hidden,
                 marked: document.querySelector('#chunk-text-3 mark.cite').textContent,
                 overflow: document.documentElement.scrollWidth - innerWidth}};""",
    )
    assert loaded == {"chunks": 12, "failed": "failed", "panel": True, "marked": CODE, "overflow": 0}

    # A chunk of the strip: the panel opens in view with that chunk's reply and text, its quote marked.
    browser.click("#strip-q0-3")
    shots(browser, "chunk-3")
    panel = state(
        browser,
        f"""{SEEN}
        var panel = document.getElementById('chunk-panel'), text = document.getElementById('chunk-panel-text');
        return {{seen: seen(panel), title: panel.querySelector('h4').textContent,
                 same_text: text.textContent === document.getElementById('chunk-text-3').textContent,
                 marks: Array.prototype.map.call(text.querySelectorAll('mark'), function (m) {{
                   return [m.className, m.textContent, seen(m)]; }}),
                 selected: Array.prototype.map.call(document.querySelectorAll('.chunk.selected'), function (b) {{
                   return b.id; }})}};""",
    )
    assert panel == {
        "seen": True,
        "title": "Chunk 3 (p. 4): information, evidence verified",
        "same_text": True,
        "marks": [["cite", CODE, True]],
        "selected": ["strip-q0-3"],
    }
    browser.click("#strip-q0-7")
    failed = state(browser, "return document.getElementById('chunk-panel-detail').textContent;")
    assert "Chunk 7 (p. 8): failed" in failed and "the server went away" in failed

    # The answer's citation: the document view scrolls to its chunk, marked, the quote in view.
    browser.click("#answer-q0 a.cite-link")
    shots(browser, "citation")
    cited = state(
        browser,
        f"""{SEEN}
        var mark = document.querySelector('#chunk-text-3 mark.current');
        return {{hash: location.hash, current: Array.prototype.map.call(
                   document.querySelectorAll('.doc-chunk.current'), function (s) {{ return s.id; }}),
                 quote: mark && mark.textContent, seen: seen(mark)}};""",
    )
    assert cited == {"hash": "#chunk-3", "current": ["chunk-3"], "quote": CODE, "seen": True}

    # The second question's related passage: its question is chosen, its strip shown, its quote in view.
    browser.click("#answer-q1 a.related-link")
    shots(browser, "related-of-question-2")
    switched = state(
        browser,
        f"""{SEEN}
        var mark = document.querySelector('#chunk-text-5 mark.current');
        return {{question: document.getElementById('question-select').value,
                 strips: Array.prototype.map.call(document.querySelectorAll('.strip-wrap:not([hidden])'),
                   function (s) {{ return s.dataset.question; }}),
                 hash: location.hash, quote: mark && mark.textContent, kind: mark && mark.className,
                 seen: seen(mark), stale: document.querySelectorAll('#chunk-text-3 mark').length}};""",
    )
    assert switched == {
        "question": "q1",
        "strips": ["q1"],
        "hash": "#chunk-5",
        "quote": FRIENDLY,
        "kind": "related current",
        "seen": True,
        "stale": 0,  # the first question's quote is no longer marked
    }
    assert browser.errors() == []

    if os.environ.get(README_SHOT):
        readme_picture(browser, report, Path(os.environ[README_SHOT]))


def readme_picture(browser: Browser, report: Path, target: Path) -> None:
    """The README's picture: the answers, the strip and chunk 3 opened, at a narrower width."""
    browser.resize(README_WIDTH, HEIGHT)
    try:
        browser.open(report.as_uri())
        browser.click("#strip-q0-3")
        bottom = browser.evaluate("document.getElementById('chunk-panel').getBoundingClientRect().bottom + scrollY")
        browser.evaluate("scrollTo(0, 0)")
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(target, bottom=bottom + 16)
        print(f"README picture: {target} ({target.stat().st_size:,} bytes)")
    finally:
        browser.resize(WIDTH, HEIGHT)


# The timeline's calls in the question shown: each one's tooltip, and where its bars start (the
# queue wait's, else the call's) and end, in the SVG's units; and the "0 s" tick's x.
TIMELINE = """var svg = document.querySelector('.q-view:not([hidden]) svg.timeline');
var calls = Array.prototype.map.call(svg.querySelectorAll('.bars > g'), function (g) {
  var boxes = Array.prototype.map.call(g.querySelectorAll('path'), function (p) { return p.getBBox(); });
  var queue = g.querySelector('path.q');
  return {title: g.querySelector('title').textContent, start: boxes[0].x,
          end: boxes[boxes.length - 1].x + boxes[boxes.length - 1].width,
          queue: queue ? queue.getBBox().width : 0,
          queue_colour: queue ? getComputedStyle(queue).stroke : null};
});
var zero = Array.prototype.filter.call(svg.querySelectorAll('text'), function (t) {
  return t.textContent === '0 s'; })[0];"""


def test_the_calls_timeline_puts_every_call_on_the_runs_clock(browser, shots, tmp_path):
    from llmxmr.report import TIMELINE_LABEL_WIDTH, TIMELINE_WIDTH, _clock_span

    report = tmp_path / "report.html"
    _, runs = write_report(report, pdf=True)
    browser.open(report.as_uri())
    browser.click('nav.bar a[href="#calls"]')
    shots(browser, "calls")
    drawn = state(
        browser,
        f"""{SEEN}
        {TIMELINE}
        return {{seen: seen(svg), calls: calls, zero: zero.getBBox().x + zero.getBBox().width / 2,
                 width: svg.getBoundingClientRect().width, right: svg.getBoundingClientRect().right,
                 overflow: document.documentElement.scrollWidth - innerWidth}};""",
    )
    calls = runs[0].calls or []
    # One clock for the reading's questions: from its start to the last question's end.
    wall = max(run.totals["wall_time_s"] for run in runs)
    span = _clock_span(runs)  # the wall time, or a call's end where rounding puts it a little later
    rounding = 1e-3  # the totals' wall time is rounded to the millisecond, a call's times finer
    assert wall <= span <= wall + rounding
    scale = TIMELINE_WIDTH / span
    assert drawn["seen"] and drawn["overflow"] == 0 and drawn["width"] > 600
    assert len(drawn["calls"]) == len(calls)  # a row per call: none is reused in this run
    assert drawn["zero"] == pytest.approx(TIMELINE_LABEL_WIDTH, abs=0.5)  # the clock starts at the run's start
    sent = sorted((r for r in calls if r.stage == "map"), key=lambda r: r.sent_s or 0.0)
    first = drawn["calls"][0]  # the first map sent: the one that warms the prefix, alone, so it waited for nothing
    assert f"sent at {sent[0].sent_s:.3f} s" in first["title"] or f"sent at {sent[0].sent_s:.2f} s" in first["title"]
    assert first["queue"] == 0
    assert first["start"] == pytest.approx(TIMELINE_LABEL_WIDTH + sent[0].sent_s * scale, abs=0.1)  # type: ignore[operator]
    for bar, record in zip(drawn["calls"], sent, strict=False):  # the map band, in the order sent
        assert bar["start"] == pytest.approx(TIMELINE_LABEL_WIDTH + (record.sent_s - record.queued_s) * scale, abs=0.1)  # type: ignore[operator]
        assert bar["end"] == pytest.approx(
            TIMELINE_LABEL_WIDTH + record.sent_s * scale + max(record.latency_s * scale, 1.0),  # type: ignore[operator]
            abs=0.1,
        )
    waited = [bar for bar in drawn["calls"] if bar["queue"] > 0]
    assert waited and {bar["queue_colour"] for bar in waited} == {"rgb(207, 216, 220)"}  # two slots: maps queued
    assert all("waited" in bar["title"] and "prompt" in bar["title"] for bar in drawn["calls"])
    assert all(
        TIMELINE_LABEL_WIDTH <= bar["start"] and bar["end"] <= TIMELINE_LABEL_WIDTH + TIMELINE_WIDTH + 0.1
        for bar in drawn["calls"]
    )

    # Another question: its own calls, on the same clock.
    browser.evaluate(
        "var s = document.getElementById('question-select'); s.value = 'q1'; s.dispatchEvent(new Event('change')); true"
    )
    shots(browser, "calls-of-question-2")
    second = state(browser, f"{TIMELINE} return calls.length;")
    assert second == len(runs[1].calls or [])
    assert browser.errors() == []


def test_hostile_document_text_stays_inert_text_in_the_browser(browser, shots, tmp_path):
    report = tmp_path / "hostile.html"
    text, _ = write_report(report, pdf=False)
    browser.open(report.as_uri())
    browser.click("#strip-q0-2")
    shots(browser, "hostile-chunk")
    page = state(
        browser,
        """var chunk = document.getElementById('chunk-text-2'), panel = document.getElementById('chunk-panel-text');
        return {scripts: document.scripts.length, bold: document.querySelectorAll('.chunk-text b').length,
                controls: Array.prototype.map.call(chunk.querySelectorAll('.bidi'), function (c) {
                  return [c.textContent, getComputedStyle(c).unicodeBidi]; }),
                panel_controls: panel.querySelectorAll('.bidi').length,
                text: chunk.textContent, panel_text: panel.textContent,
                page_overflow: document.documentElement.scrollWidth - innerWidth,
                panel_overflow: panel.scrollWidth - panel.clientWidth};""",
    )
    chunk_text = next(p for p in text.split("\n\n") if HOSTILE in p)
    assert page == {
        "scripts": 2,  # the data and the code: the document's <script> is text
        "bold": 0,  # and its </textarea><b> too
        "controls": [["\u202e", "isolate"]],  # the right-to-left override, isolated: it reorders nothing
        "panel_controls": 1,
        "text": chunk_text,
        "panel_text": chunk_text,
        "page_overflow": 0,  # the 3,000-character line wraps inside its box
        "panel_overflow": 0,
    }
    dialogs = [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"]
    assert dialogs == [] and browser.errors() == []  # no alert(): nothing of the document ran
