"""The HTML report of a run (``llmxmr run --report``, ``llmxmr report``): one self-contained page
whose strip holds every chunk, whose citations link to the document view, that fetches nothing,
and on which hostile document text stays inert text."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.batch import RESULTS_FILE, BatchResult
from llmxmr.cli import main
from llmxmr.clients.base import ChatReply, ChatRequest
from llmxmr.clients.fake import ScriptedClient
from llmxmr.documents import Document, read_document
from llmxmr.errors import LLMCallError
from llmxmr.estimate import CostEstimate, estimate_cost
from llmxmr.report import QuestionRun, changed_settings, load_runs, render_report, script_json

from ..conftest import WordCounter, final_reply, partial_reply
from .document_fixtures import pdf_bytes

CODE = "The secret code is KEY-77."
FRIENDLY = "Lady Catherine was most friendly and obliging."
BROKEN = "Marker ZULU stands in this part."
HOSTILE = "<script>alert(1)</script> and </textarea><b>bold</b> \u202etxt.exe and more"
QUESTIONS = ["What is the code?", "Who keeps the key?", "Where is the vault?"]


def part(n: int) -> str:
    return f"Part {n} tells of green grass number {n} under a blue sky, of walks, letters and long days. " * 2


def paragraphs(*, hostile: bool = False) -> list[str]:
    """Twelve paragraphs, one chunk each: the code in the fourth, Lady Catherine in the sixth, the
    eighth one whose map call fails for the first and third questions."""
    texts = [part(n) for n in range(12)]
    texts[3] += CODE
    texts[5] += FRIENDLY
    texts[7] += BROKEN
    if hostile:
        texts[2] += HOSTILE + " " + "x" * 3000
    return texts


def respond(request: ChatRequest) -> ChatReply:
    """The scripted model's reply, with the usage a server with a prefix cache would report: a map
    prompt of any question but the first finds its instructions and chunk cached."""
    text = reply_text(request)
    count = WordCounter().count_batch
    prompt = sum(count([m.content for m in request.messages]))
    cached = None
    if request.schema_name == "MapOutput":
        head, ask = request.messages[-1].content.rsplit("</document_part>", 1)
        first = QUESTIONS[0] in ask or all(q not in ask for q in QUESTIONS)
        cached = sum(count([m.content for m in request.messages[:-1]])) + (0 if first else count([head])[0])
    return ChatReply(text=text, prompt_tokens=prompt, completion_tokens=count([text])[0], cached_tokens=cached)


def reply_text(request: ChatRequest) -> str:
    if request.schema_name == "MapOutput":
        user = request.messages[-1].content
        end = user.rindex("</document_part>")
        chunk, question = user[:end].rsplit("<document_part>", 1)[1], user[end:]
        if "ZULU" in chunk and "key" not in question:  # this chunk's map call fails for two questions
            raise LLMCallError("the server went away")
        if "code" in question and CODE in chunk:
            return partial_reply("KEY-77", 5, info=CODE)
        if "key" in question and FRIENDLY in chunk:
            return partial_reply("Lady Catherine", 5, info=FRIENDLY, evidence=[FRIENDLY])
        if "<script>" in chunk:
            return partial_reply(None, 0, info="It says <script>alert(2)</script>")
        return partial_reply(None, 0, info="")
    if request.schema_name == "CollapseOutput":
        return partial_reply("merged", 3)
    answers = re.findall(r"Answer: (.+)", request.messages[-1].content)
    return final_reply(answers[0].strip() if answers else "none")


def scripted_results(document, questions=QUESTIONS):
    config = PipelineConfig.load(**{"chunking.chunk_tokens": 64, "llm.concurrency": 2, "on_chunk_error": "skip"})
    client = ScriptedClient(responder=respond, counter=WordCounter())
    return MapReducePipeline(config, client=client).run_many(document, questions), config


def scripted(document, questions=QUESTIONS):
    results, config = scripted_results(document, questions)
    return [QuestionRun.of_result(n, r) for n, r in enumerate(results, 1)], config


def estimated(document, config, questions=QUESTIONS) -> CostEstimate:
    """What ``--dry-run`` prices the scripted run at."""
    text = document.text if isinstance(document, Document) else document
    client = ScriptedClient(counter=WordCounter())
    return asyncio.run(estimate_cost(config, client, [(text, questions)]))


class Page(HTMLParser):
    """What the tests look at: ids, links, resources, scripts and the strip's chunks."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, dict[str, str | None]]] = []
        self.resources: list[str] = []
        self.scripts = 0
        self.strip: list[dict[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
        for name in ("src", "href", "action", "data", "srcset", "poster"):
            if found.get(name):
                self.resources.append(found[name])
        if tag == "a" and found.get("href"):
            self.links.append((found["href"], found))
        if tag == "script":
            self.scripts += 1
        if "chunk" in (found.get("class") or "").split() and found.get("data-chunk") is not None:
            self.strip.append(found)


def strip_of(page: Page, question: int) -> dict[int, str]:
    return {
        int(c["data-chunk"]): c["data-state"]
        for c in page.strip
        if (c["id"] or "").startswith(f"strip-q{question}-")  # type: ignore[union-attr]
    }


def assert_offline(page: Page) -> None:
    for address in page.resources:
        assert not re.match(r"\s*(https?:)?//", address, re.IGNORECASE), address


def assert_citations_link_home(page: Page) -> None:
    cited = [(href, attrs) for href, attrs in page.links if "cite-link" in (attrs.get("class") or "")]
    assert cited
    for href, _ in page.links:
        if href.startswith("#"):
            assert href[1:] in page.ids, href


def test_a_report_of_three_questions_over_twelve_chunks():
    runs, config = scripted("\n\n".join(paragraphs()))
    assert len(runs[0].chunks or []) == 12
    assert [r.status for r in runs] == ["answered", "unsupported", "incomplete"]
    html = render_report(runs, document="\n\n".join(paragraphs()), config=config)
    page = Page(html)
    for question in range(3):
        states = strip_of(page, question)
        assert sorted(states) == list(range(12))  # every chunk is in the strip, for each question
        assert states[7] == ("none" if question == 1 else "failed")
        assert all(f"chunk-text-{n}" in page.ids and f"detail-q{question}-{n}" in page.ids for n in range(12))
    assert strip_of(page, 0)[3] == "verified" and strip_of(page, 1)[5] == "unverified"
    assert strip_of(page, 0)[0] == "none"
    assert_citations_link_home(page)
    assert_offline(page)
    assert page.scripts == 2  # the data and the code: nothing else
    assert "Unsupported guess (not an answer)" in html and "Lady Catherine" in html
    assert 'id="question-select"' in html and "on-path" in html
    assert "chunk.settings" not in html and "chunking.chunk_tokens" in html  # the settings that differ


def test_hostile_document_text_stays_inert():
    document = "\n\n".join(paragraphs(hostile=True))
    runs, config = scripted(document, QUESTIONS[:1])
    html = render_report(runs, document=document, config=config)
    page = Page(html)
    assert page.scripts == 2  # no <script> of the document's became an element
    assert "<script>alert" not in html and "</textarea><b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;/textarea&gt;" in html
    assert "&lt;script&gt;alert(2)" in html  # the map reply's text, escaped too
    # The right-to-left override stays in the text, isolated in a mark of its own: it reorders nothing.
    assert '<span class="bidi" title="U+202E">\u202e</span>txt.exe' in html
    assert_offline(page)
    body = html.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    json.loads(body)  # the data block is JSON and holds no markup
    assert "<" not in body


def test_the_totals_show_the_dry_run_estimate_beside_the_spending():
    document = "\n\n".join(paragraphs())
    runs, config = scripted(document)
    estimate = estimated(document, config)
    assert estimate.map.calls == 36 and not estimate.map.bound and estimate.collapse.bound
    html = render_report(runs, document=document, config=config, estimate=estimate)
    table = html.split('<table class="spending">', 1)[1].split("</table>", 1)[0]
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.DOTALL)
        )
    }
    spent_map = [r for run in runs for r in run.calls or [] if r.stage == "map"]
    assert rows["map"][0] == f"{len(spent_map)} (2 failed)" and rows["map"][1] == "36"
    assert rows["map"][2] == f"{sum(r.prompt_tokens for r in spent_map):,}"
    assert rows["map"][3] == f"{estimate.map.prompt_tokens:,}" and rows["map"][5] == f"{estimate.cacheable_tokens:,}"
    assert rows["reduce"][1] == "≤ 3" and rows["total"][3] == f"≤ {estimate.total.prompt_tokens:,}"
    assert "No --dry-run estimate" not in html
    assert "No --dry-run estimate" in render_report(runs, document=document)


def test_the_strip_labels_a_long_document_sparsely():
    from llmxmr.report import STRIP_LABELS, _chunks_label, _strip_labels

    places = {n: f"p. {n // 2 + 1}" for n in range(1000)}  # a page every other chunk
    labels = _strip_labels(places, 1000)
    assert labels[0] == "p. 1" and len(labels) <= STRIP_LABELS
    assert all(places[n] != places.get(n - 1) for n in labels)  # each label is where a page starts
    assert _strip_labels({n: f"p. {n + 1}" for n in range(12)}, 12) == {n: f"p. {n + 1}" for n in range(12)}
    # A node of the merge tree over many scattered chunks names a few, and how many in all.
    assert _chunks_label([3, 4, 19, 40]) == "chunks 3–4, 19, 40" and _chunks_label([7]) == "chunk 7"
    assert _chunks_label(range(0, 300, 3)) == "chunks 0, 3, 6, 9, 12, 15, … (100 in all)"


def test_the_data_block_escapes_what_could_end_the_script():
    encoded = str(script_json({"x": "</script><!-- & \u2028\u2029"}))
    assert not set("<>&\u2028\u2029") & set(encoded)
    assert json.loads(encoded) == {"x": "</script><!-- & \u2028\u2029"}


def test_the_settings_never_include_the_api_key():
    config = PipelineConfig.load(**{"llm.api_key": "sk-secret-1234", "chunking.chunk_tokens": 99})
    settings = changed_settings(config)
    assert settings == {"chunking.chunk_tokens": "99"}
    runs, _ = scripted("\n\n".join(paragraphs()), QUESTIONS[:1])
    assert "sk-secret-1234" not in render_report(runs, config=config)


def test_a_pdf_report_marks_its_pages():
    pytest.importorskip("pypdfium2")
    pages = [paragraphs()[n] for n in range(12)]
    document = read_document(pdf_bytes(pages))
    runs, _ = scripted(document)
    html = render_report(runs, document=document)
    page = Page(html)
    assert sorted(strip_of(page, 0)) == list(range(len(runs[0].chunks or [])))
    assert 'class="place">p. 1<' in html and "p. 4, chunk" in html  # the strip and the citation
    assert_citations_link_home(page)
    (link,) = [attrs for _, attrs in page.links if "cite-link" in (attrs.get("class") or "")]
    data = json.loads(html.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    assert [m[4] for m in data["highlights"]["q0"] if m[3] == "cite"] == [link["data-ref"]]  # its highlight


def test_a_batch_folder_reports_each_line(tmp_path):
    runs, _ = scripted("\n\n".join(paragraphs()), QUESTIONS[:2])
    lines = []
    for run in runs:
        lines.append(
            BatchResult(
                id=f"doc-{run.id}",
                question=run.question,
                status=run.status,  # type: ignore[arg-type]
                answer=run.answer,
                unsupported_guess=run.unsupported_guess,
                found=run.status == "answered",
                confidence=run.confidence,
                rationale=run.rationale,
                supporting_chunks=run.supporting_chunks,
                citations=run.citations,
                related=run.related,
                chunks=run.chunk_count,
                unread_chunks=run.unread_chunks,
                model=run.model,
                calls=1,
                failed_calls=0,
                cache_hits=0,
                prompt_tokens=10,
                completion_tokens=5,
                wall_time_s=1.0,
            ).model_dump_json()
        )
    (tmp_path / RESULTS_FILE).write_text("\n".join(lines) + "\n")
    loaded, kind = load_runs(tmp_path)
    assert kind == "batch" and [r.id for r in loaded] == ["doc-1", "doc-2"]
    page = Page(render_report(loaded, source="batch"))
    assert strip_of(page, 0)[7] == "failed" and strip_of(page, 0)[3] == "verified"
    assert_citations_link_home(page)
    assert_offline(page)


def run_cli(tmp_path, *args: str):
    from tests.fake_server import completion, fake_server, models

    document = tmp_path / "doc.txt"
    document.write_text(f"{part(1)}{CODE}\n\n{part(2)}", encoding="utf-8")
    replies = [completion(partial_reply("KEY-77", 5, info=CODE)), completion(final_reply("KEY-77"))]
    with fake_server({"/v1/models": [models("vllm", max_model_len=8192)], "/v1/chat/completions": replies}) as server:
        command = ["run", "--input", str(document), "--question", QUESTIONS[0], "--base-url", server.base_url]
        return CliRunner().invoke(main, [*command, "--tokenizer", "tiktoken", "--no-progress", *args]), document


def test_run_report_and_report_of_a_trace(tmp_path):
    shown, document = run_cli(tmp_path, "--trace", str(tmp_path / "trace.json"), "--report", str(tmp_path / "r.html"))
    assert shown.exit_code == 0, shown.output
    written = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "KEY-77" in written and 'id="chunk-text-0"' in written
    assert "priced this run at before any call" in written  # run --report prices the run, as --dry-run
    made = CliRunner().invoke(main, ["report", str(tmp_path / "trace.json"), "-o", str(tmp_path / "out.html")])
    assert made.exit_code == 0, made.output
    html = (tmp_path / "out.html").read_text(encoding="utf-8")
    page = Page(html)
    assert "KEY-77" in html and strip_of(page, 0) == {0: "verified"}
    assert "chunk-text-0" not in page.ids  # no document given: its text is not in the page
    assert_citations_link_home(page)
    with_text = ["report", str(tmp_path / "trace.json"), "-o", str(tmp_path / "t.html"), "--input", str(document)]
    assert CliRunner().invoke(main, with_text).exit_code == 0
    assert 'id="chunk-text-0"' in (tmp_path / "t.html").read_text(encoding="utf-8")


def test_report_of_something_else_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMXMR_RAISE_ERRORS", raising=False)
    (tmp_path / "x.json").write_text('{"not": "a trace"}')
    made = CliRunner().invoke(main, ["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "o.html")])
    assert made.exit_code == 2 and "is not a trace written by llmxmr run --trace" in made.stderr


def test_the_merge_tree_nests_maps_under_collapses_under_the_reduce_and_marks_the_path():
    from llmxmr.report import _merge_tree
    from llmxmr.trace import CallRecord

    def call(stage: str, chunks: list[int], answer: str | None = "a") -> CallRecord:
        return CallRecord(stage=stage, chunk_indices=chunks, output={"answer": answer, "confidence": 3})

    calls = [call("map", [n]) for n in (1, 0, 3, 2)] + [call("collapse", [0, 1]), call("collapse", [2, 3])]
    (reduce,) = _merge_tree([*calls, call("reduce", [0, 1, 2, 3])], path={2})
    assert reduce["record"].stage == "reduce" and reduce["on_path"]
    first, second = reduce["children"]
    assert (first["chunks"], second["chunks"]) == ({0, 1}, {2, 3})
    assert not first["on_path"] and second["on_path"]
    assert sorted(min(c["chunks"]) for c in second["children"]) == [2, 3]
    assert [c["on_path"] for c in sorted(second["children"], key=lambda c: min(c["chunks"]))] == [True, False]


def timed_run(calls, wall_time_s: float) -> QuestionRun:
    """A question's result with the given calls, as a trace of them would give it."""
    return QuestionRun(
        id="1",
        question="What is the code?",
        status="answered",
        answer="KEY-77",
        unsupported_guess=None,
        confidence=4.0,
        rationale="It says so.",
        supporting_chunks=[0],
        citations=[],
        related=[],
        chunks=None,
        chunk_count=3,
        unread_chunks=[1],
        model="scripted",
        calls=calls,
        totals={"calls": len(calls), "wall_time_s": wall_time_s},
    )


# A call of the timeline: its group (tooltip, then the queue wait's bar if any, then the call's).
TIMELINE_BAR = re.compile(
    r'<g class="k-([\w-]+)"><title>([^<]*)</title>(?:<path class="q" d="M([\d.]+) ([\d.]+)h([\d.]+)"/>)?'
    r'<path d="M([\d.]+) ([\d.]+)h([\d.]+)"/></g>'
)


def test_the_timeline_draws_each_call_at_its_time_after_its_queue_wait():
    from llmxmr.report import TIMELINE_LABEL_WIDTH, TIMELINE_WIDTH
    from llmxmr.trace import CallRecord

    def call(stage, chunks, sent, queued, latency, **more) -> CallRecord:
        return CallRecord(
            stage=stage, chunk_indices=chunks, attempts=1, sent_s=sent, queued_s=queued, latency_s=latency, **more
        )

    calls = [
        call("map", [1], 3.0, 2.0, 1.5, error="the server went away", error_kind="transport"),
        call("map", [0], 1.0, 0.0, 2.0, prompt_tokens=900, cached_tokens=700, completion_tokens=60),
        CallRecord(stage="map", chunk_indices=[2], output={"answer": None}),  # an identical call's reply
        call("reduce", [0], 5.0, 0.5, 1.0, prompt_tokens=300, completion_tokens=40),
        call("<i>judge</i>", [], 6.0, 0.0, 0.25),  # a label of a hand-made trace: text, nothing else
    ]
    html = render_report([timed_run(calls, wall_time_s=8.0)])
    scale = TIMELINE_WIDTH / 8.0
    bars = TIMELINE_BAR.findall(html)
    assert [(kind, title.split(" · ")[1]) for kind, title, *_ in bars] == [
        ("map", "chunk 0"),  # a band per stage, in the order sent
        ("failed", "chunk 1"),
        ("reduce", "chunk 0"),
        ("other", "no chunk"),
    ]  # no bar for the call not made
    for (_, _, q_x, q_y, q_width, x, y, width), record in zip(
        bars, [calls[1], calls[0], calls[3], calls[4]], strict=True
    ):
        assert float(x) == pytest.approx(TIMELINE_LABEL_WIDTH + record.sent_s * scale, abs=0.06)
        assert float(width) == pytest.approx(record.latency_s * scale, abs=0.06)
        if record.queued_s:  # the wait ends where the call starts, on the call's row
            assert float(q_x) == pytest.approx(
                TIMELINE_LABEL_WIDTH + (record.sent_s - record.queued_s) * scale, abs=0.06
            )
            assert (float(q_width), q_y) == (pytest.approx(record.queued_s * scale, abs=0.06), y)
        else:
            assert q_x == ""
    assert len({y for *_, y, _ in bars}) == 4  # a row each
    first = bars[0][1]
    assert "waited 0.000 s, sent at 1.00 s, took 2.00 s" in first and "900 prompt (700 cached) + 60 completion" in first
    assert "waited 2.00 s, sent at 3.00 s, took 1.50 s" in bars[1][1] and bars[1][1].endswith("failed")
    assert 'class="calls-chart"' not in html  # the columns of old traces are not drawn
    assert "1 call(s) not made" in html and "not made: an identical call's reply" in html
    assert "&lt;i&gt;judge&lt;/i&gt;" in html and "<i>judge" not in html
    table = html.split('<table class="calls-table">', 1)[1].split("</table>", 1)[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    assert [row[1] for row in cells] == [
        "chunk 0",
        "chunk 1",
        "chunk 0",
        "no chunk",
        "chunk 2",
    ]  # as drawn, then not made
    assert cells[1][3:6] == ["2.00", "3.00", "1.50"] and cells[4][3:6] == ["—", "—", "—"]  # waited, sent at, latency


def test_a_trace_written_before_calls_had_a_time_shows_them_in_columns(tmp_path):
    results, _ = scripted_results("\n\n".join(paragraphs()), QUESTIONS[:2])
    trace = [{"id": n, **r.model_dump(mode="json")} for n, r in enumerate(results, 1)]  # as run --trace writes it
    assert all(record["sent_s"] is not None for item in trace for record in item["trace"]["calls"])
    new = tmp_path / "new.json"
    new.write_text(json.dumps(trace))
    for item in trace:  # as written before calls had a time: no sent_s, no queued_s
        for record in item["trace"]["calls"]:
            del record["sent_s"], record["queued_s"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(trace))
    page = render_report(load_runs(old)[0], source="trace")
    assert 'class="calls-chart"' in page and 'class="timeline"' not in page
    assert "written before calls recorded when they were sent" in page
    assert 'id="strip-q1-7"' in page and "calls-table" in page  # the rest of the page as before
    timed = render_report(load_runs(new)[0], source="trace")
    assert 'class="timeline"' in timed and 'class="calls-chart"' not in timed
    assert len(TIMELINE_BAR.findall(timed)) == sum(len(r.trace.calls) for r in results)
