"""A run as one self-contained HTML page: ``llmxmr run --report FILE`` and ``llmxmr report``.

The page holds the answers first, then the document as a strip of its chunks coloured by what each
map call concluded, the merge tree, the calls and the totals. It fetches nothing (inline CSS, a
little inline JS, pictures as inline SVG), holds the document's text once (each chunk's own span)
and never the API key. Every text is escaped by Jinja2's autoescaping; the one script block of
data is JSON with ``<``, ``>``, ``&`` and the line separators escaped, and holds no text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup
from pydantic import ValidationError

from ..batch import RESULTS_FILE, BatchResult, read_results
from ..config import PipelineConfig
from ..documents import Document
from ..errors import UsageError
from ..families.base import SUPPORTING
from ..grounding import Citation
from ..pipeline import ChunkSpan, PipelineResult
from ..trace import CallRecord

# What a chunk's map call concluded for a question, as the strip colours it.
CHUNK_STATES = {
    "verified": "information, evidence verified",
    "unverified": "information, evidence not verified",
    "none": "nothing relevant",
    "failed": "failed",
    "unread": "unread (no map call recorded)",
    "unrecorded": "no call recorded (batch results keep no trace)",
}
# Words of a grounding decision (``CallRecord.check``) that say the answer's evidence did not hold.
_NOT_SUPPORTED = ("unsupported", "counts as no information", f"none {SUPPORTING}")
STAGE_ORDER = {"map": 0, "collapse": 1, "reduce": 2}
TRUNCATED_CHARS = 400


@dataclass
class QuestionRun:
    """One question's result as the report reads it: a run's ``PipelineResult`` (with its calls),
    or a batch line (without)."""

    id: str
    question: str
    status: str
    answer: str
    unsupported_guess: str | None
    confidence: float
    rationale: str
    supporting_chunks: list[int]
    citations: list[Citation]
    related: list[Citation]
    chunks: list[ChunkSpan] | None  # None: only the count is known (a batch line)
    chunk_count: int
    unread_chunks: list[int]
    model: str
    model_profile: str | None = None
    calls: list[CallRecord] | None = None  # None: not recorded
    totals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_result(cls, id: str | int, result: PipelineResult) -> QuestionRun:
        return cls(
            id=str(id),
            **_answer_fields(result),
            chunks=result.chunks,
            chunk_count=len(result.chunks),
            model_profile=result.model_profile,
            calls=result.trace.calls,
            totals=result.trace.totals.model_dump(),
        )

    @classmethod
    def of_batch_line(cls, line: BatchResult) -> QuestionRun:
        totals = line.model_dump(
            include={"calls", "failed_calls", "cache_hits", "prompt_tokens", "completion_tokens", "wall_time_s"}
        )
        return cls(id=str(line.id), **_answer_fields(line), chunks=None, chunk_count=line.chunks, totals=totals)


# What a run's result and a batch line both say of a question's answer, under the same names.
_ANSWER_FIELDS = (
    "question",
    "status",
    "answer",
    "unsupported_guess",
    "confidence",
    "rationale",
    "supporting_chunks",
    "citations",
    "related",
    "unread_chunks",
    "model",
)


def _answer_fields(source: PipelineResult | BatchResult) -> dict[str, Any]:
    return {name: getattr(source, name) for name in _ANSWER_FIELDS}


def load_runs(path: Path) -> tuple[list[QuestionRun], str]:
    """The questions of a trace file (``llmxmr run --trace``: one result, or a list of results with
    their ``id``) or of a batch folder (its ``results.jsonl``), and what the source was."""
    if path.is_dir():
        results = path / RESULTS_FILE
        if not results.is_file():
            raise UsageError(f"{path} is a folder without {RESULTS_FILE}: give a trace file or a batch folder")
        return [QuestionRun.of_batch_line(line) for line in read_results(results)], "batch"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return [QuestionRun.of_result(1, PipelineResult.model_validate(data))], "trace"
        if isinstance(data, list):
            runs = [
                QuestionRun.of_result(item.get("id", n), PipelineResult.model_validate(item))
                for n, item in enumerate(data, 1)
            ]
            return runs, "trace"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError, AttributeError) as exc:
        raise UsageError(f"{path} is not a trace written by llmxmr run --trace: {str(exc).splitlines()[0]}") from exc
    raise UsageError(f"{path} is not a trace written by llmxmr run --trace")


def render_report(
    runs: Sequence[QuestionRun],
    *,
    document: Document | str | None = None,
    config: PipelineConfig | None = None,
    source: str = "run",
    title: str = "llmxmr report",
) -> str:
    """The whole page. ``document``: the text the chunk spans index (its chunks' text is shown);
    ``config``: the run's settings (those differing from the defaults are listed)."""
    if not runs:
        raise UsageError("nothing to report: no result")
    text = document.text if isinstance(document, Document) else document
    spans = runs[0].chunks
    if text is not None and spans and spans[-1].end > len(text):
        raise UsageError("the document is shorter than the run's chunks: is it the document that was read?")
    chunk_texts = [text[s.start : s.end] for s in spans] if text is not None and spans else None
    pages = _chunk_places(runs, document if isinstance(document, Document) else None)
    questions = [_question_view(k, run, chunk_texts, pages) for k, run in enumerate(runs)]
    highlights = {q["key"]: q["highlights"] for q in questions}
    # Every template, whatever its name: select_autoescape() would not escape a ".j2" file.
    environment = Environment(
        loader=PackageLoader("llmxmr.report", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    return environment.get_template("report.html.j2").render(
        title=title,
        source=source,
        questions=questions,
        chunk_count=max(run.chunk_count for run in runs),
        chunk_texts=chunk_texts,
        chunk_places=pages,
        states=CHUNK_STATES,
        totals=_overall(runs),
        settings=changed_settings(config) if config is not None else None,
        data=script_json({"highlights": highlights}),
    )


def write_report(path: Path, page: str) -> None:
    from ..executor import write_atomically

    write_atomically(path, page)


def script_json(value: Any) -> Markup:
    """JSON safe inside a <script> block: nothing in it can close the block or end a line."""
    text = json.dumps(value, separators=(",", ":"))
    for raw in "<>&\u2028\u2029":
        text = text.replace(raw, f"\\u{ord(raw):04x}")
    return Markup(text)


def changed_settings(config: PipelineConfig) -> dict[str, str]:
    """The run's settings that differ from ``PipelineConfig.load()``'s, dotted; never the API key
    nor the model profiles' table."""
    excluded: Any = {"llm": {"api_key"}, "model_profiles": True}
    ours = _flat(config.model_dump(mode="json", exclude=excluded))
    defaults = _flat(PipelineConfig.load().model_dump(mode="json", exclude=excluded))
    return {key: json.dumps(value) for key, value in ours.items() if defaults.get(key, object()) != value}


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _utf16(text: str) -> int:
    """The length of ``text`` in UTF-16 code units: a JavaScript string's indices."""
    return len(text.encode("utf-16-le")) // 2


def _chunk_places(runs: Sequence[QuestionRun], document: Document | None) -> dict[int, str]:
    """The page (or section) a chunk starts on, where it changes from the chunk before: from the
    document when it was read as one, else from the citations that carry one."""
    places: dict[int, str] = {}
    spans = runs[0].chunks
    if document is not None and spans and (document.page_starts or document.section_starts):
        previous = None
        for span in spans:
            where = document.locate(span.start)
            place = f"p. {where.page}" if where.page is not None else " › ".join(where.section)
            if place and place != previous:
                places[span.index] = place
            previous = place
        return places
    for run in runs:
        for citation in [*run.citations, *run.related]:
            if citation.location and citation.chunk not in places:
                places[citation.chunk] = citation.location
    return places


def _chunk_state(record: CallRecord | None, unread: bool, recorded: bool) -> str:
    if not recorded:
        return "failed" if unread else "unrecorded"
    if record is None:
        return "failed" if unread else "unread"
    if record.error or record.output is None:
        return "failed"
    if record.output.get("answer") is None:
        return "none"
    if record.check is not None and not any(words in record.check for words in _NOT_SUPPORTED):
        return "verified"
    return "unverified"


def _question_view(k: int, run: QuestionRun, chunk_texts: list[str] | None, places: dict[int, str]) -> dict[str, Any]:
    maps = {r.chunk_indices[0]: r for r in run.calls or [] if r.stage == "map" and r.chunk_indices}
    unread = set(run.unread_chunks)
    cited = {c.chunk for c in run.citations} | (set(run.supporting_chunks) if run.status == "answered" else set())
    related = {c.chunk for c in run.related}
    chunks = []
    for index in range(run.chunk_count):
        record = maps.get(index)
        state = _chunk_state(record, index in unread, run.calls is not None)
        if state == "unrecorded":  # a batch line: what its quotes say of the chunk
            state = "verified" if index in cited else "unverified" if index in related else state
        chunks.append({"index": index, "state": state, "record": record, "place": places.get(index)})
    path = {c.chunk for c in run.citations} or (set(run.supporting_chunks) if run.status == "answered" else set())
    tree = _merge_tree(run.calls or [], path)
    return {
        "key": f"q{k}",
        "run": run,
        "chunks": chunks,
        "citations": [_citation_view(c, chunk_texts) for c in run.citations],
        "related": [_citation_view(c, chunk_texts) for c in run.related],
        "tree": [node for node in tree if node["children"] or node["record"].stage != "map"],
        # Map calls no later call took: they had nothing to pass on (no information, or failed).
        "left": sorted(
            (node for node in tree if not node["children"] and node["record"].stage == "map"),
            key=lambda node: min(node["chunks"], default=-1),
        ),
        "path": sorted(path),
        "timeline": _timeline(run.calls or []),
        "highlights": _highlights(run, chunk_texts),
    }


def _citation_view(citation: Citation, chunk_texts: list[str] | None) -> dict[str, Any]:
    return {"citation": citation, "target": f"chunk-{citation.chunk}", "text_shown": chunk_texts is not None}


def _highlights(run: QuestionRun, chunk_texts: list[str] | None) -> list[list[Any]]:
    """[chunk, start, end, kind] of each located quote, as UTF-16 offsets into its chunk's text."""
    if chunk_texts is None or run.chunks is None:
        return []
    marks = []
    for kind, citations in (("cite", run.citations), ("related", run.related)):
        for c in citations:
            if not 0 <= c.chunk < len(run.chunks):
                continue
            span, text = run.chunks[c.chunk], chunk_texts[c.chunk]
            start, end = max(c.start - span.start, 0), min(c.end - span.start, len(text))
            if start < end:
                marks.append([c.chunk, _utf16(text[:start]), _utf16(text[:end]), kind])
    return marks


def _merge_tree(calls: Sequence[CallRecord], path: set[int]) -> list[dict[str, Any]]:
    """map → collapse → reduce as a tree: each later call takes as children the calls before it,
    not yet taken, whose chunks lie within its own (calls are recorded as they finish, after
    their inputs)."""
    ordered = sorted(
        (r for r in calls if r.stage in STAGE_ORDER), key=lambda r: STAGE_ORDER[r.stage]
    )  # stable: collapse rounds keep the order they finished in
    roots: list[dict[str, Any]] = []
    for record in ordered:
        covered = set(record.chunk_indices)
        children = [node for node in roots if node["chunks"] <= covered] if record.stage != "map" else []
        roots = [node for node in roots if not any(node is child for child in children)]
        output = record.output or {}
        on_path = bool(covered & path) if record.stage == "map" else any(c["on_path"] for c in children)
        if record.stage == "reduce" and path:
            on_path = True
        roots.append(
            {
                "record": record,
                "chunks": covered,
                "label": _chunks_label(record.chunk_indices),
                "answer": _cut(output.get("answer")),
                "confidence": output.get("confidence"),
                "on_path": on_path,
                "children": children,
            }
        )
    return roots[::-1]  # the last call (the reduce) first


def _chunks_label(indices: Sequence[int]) -> str:
    if not indices:
        return "no chunk"
    ordered = sorted(indices)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"chunks {ordered[0]}–{ordered[-1]}"
    return "chunk " + ", ".join(map(str, ordered)) if len(ordered) == 1 else "chunks " + ", ".join(map(str, ordered))


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= TRUNCATED_CHARS else text[:TRUNCATED_CHARS] + "…"


# The calls' picture: one bar a call, its length the latency.
BAR_HEIGHT = 6
BAR_GAP = 2
CHART_WIDTH = 640
LABEL_WIDTH = 90


def _timeline(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Bars of latency by stage, in the order the calls were recorded (as they finished): a
    CallRecord keeps no start time, so bars are not placed in time."""
    longest = max((r.latency_s for r in calls), default=0.0) or 1.0
    rows = []
    y = 0
    for stage in sorted({r.stage for r in calls}, key=lambda s: (STAGE_ORDER.get(s, 9), s)):
        for n, record in enumerate(r for r in calls if r.stage == stage):
            rows.append(
                {
                    "record": record,
                    "first": n == 0,
                    "y": y,
                    "width": max(1.0, round(record.latency_s / longest * CHART_WIDTH, 1)),
                    "label": _chunks_label(record.chunk_indices),
                }
            )
            y += BAR_HEIGHT + BAR_GAP
    width = CHART_WIDTH + LABEL_WIDTH + 80
    return {
        "rows": rows,
        "height": max(y, BAR_HEIGHT),
        "width": width,
        "longest": longest,
        "label_width": LABEL_WIDTH,
        "bar": BAR_HEIGHT,
    }


def _overall(runs: Sequence[QuestionRun]) -> dict[str, Any]:
    def total(name: str) -> int:
        return sum(int(run.totals.get(name) or 0) for run in runs)

    return {
        "calls": total("calls"),
        "failed_calls": total("failed_calls"),
        "prompt_tokens": total("prompt_tokens"),
        "completion_tokens": total("completion_tokens"),
        "cached_tokens": total("cached_tokens") if any("cached_tokens" in run.totals for run in runs) else None,
        "cache_hits": total("cache_hits"),
        # One reading answers every question of a run: its wall time is the longest question's.
        "wall_time_s": max(float(run.totals.get("wall_time_s") or 0) for run in runs),
        "models": sorted({run.model for run in runs}),
        "profiles": sorted({run.model_profile for run in runs if run.model_profile}),
    }
