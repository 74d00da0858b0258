"""A run as one self-contained HTML page: ``llmxmr run --report FILE`` and ``llmxmr report``.

The page holds the answers first, then the document as a strip of its chunks coloured by what each
map call concluded, the merge tree, the calls and the totals (beside the ``--dry-run`` estimate,
when given one). It fetches nothing (inline CSS, a little inline JS, pictures as inline SVG), holds
the document's text once (each chunk's own span) and never the API key. Every text is escaped by
Jinja2's autoescaping, and the bidi controls in it are shown and isolated (``bidi_safe``); the one
script block of data is JSON with ``<``, ``>``, ``&`` and the line separators escaped, and holds
no text. ``tests/integration/test_report_browser.py`` clicks it in headless Chromium.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from pydantic import ValidationError

from ..batch import RESULTS_FILE, BatchResult, read_results
from ..config import PipelineConfig
from ..documents import Document
from ..errors import UsageError
from ..estimate import CostEstimate
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
# The strip labels at most about this many of its chunks with their page or section, so that
# labels of a long document do not run into each other.
STRIP_LABELS = 30
# Unicode's explicit embeddings, overrides and isolates: they reorder the text after them (U+202E
# shows "txt.exe" as "exe.txt"). The page shows each as a visible, isolated mark of its own, so
# that it reorders nothing and its presence is seen.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


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
    estimate: CostEstimate | None = None,
    source: str = "run",
    title: str = "llmxmr report",
) -> str:
    """The whole page. ``document``: the text the chunk spans index (its chunks' text is shown);
    ``config``: the run's settings (those differing from the defaults are listed); ``estimate``:
    what ``--dry-run`` priced the run at (``estimate.estimate_cost``), shown beside the spending."""
    if not runs:
        raise UsageError("nothing to report: no result")
    text = document.text if isinstance(document, Document) else document
    spans = runs[0].chunks
    if text is not None and spans and spans[-1].end > len(text):
        raise UsageError("the document is shorter than the run's chunks: is it the document that was read?")
    # A chunk's trailing blank lines (the break before the next paragraph) are not shown.
    chunk_texts = [text[s.start : s.end].rstrip() for s in spans] if text is not None and spans else None
    chunk_count = max(run.chunk_count for run in runs)
    places = _chunk_places(runs, document if isinstance(document, Document) else None)
    labels = _strip_labels(places, chunk_count)
    span = _clock_span(runs)
    questions = [_question_view(k, run, chunk_texts, places, labels, span) for k, run in enumerate(runs)]
    highlights = {q["key"]: q["highlights"] for q in questions}
    # Every template, whatever its name: select_autoescape() would not escape a ".j2" file.
    environment = Environment(
        loader=PackageLoader("llmxmr.report", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    environment.filters["bidi"] = bidi_safe
    environment.filters["seconds"] = _seconds
    shown = {c["state"] for q in questions for c in q["chunks"]}
    return environment.get_template("report.html.j2").render(
        title=title,
        source=source,
        questions=questions,
        chunk_count=chunk_count,
        chunk_texts=chunk_texts,
        chunk_places=places,
        states=CHUNK_STATES,
        # The legend: the four outcomes of a map call always, the others where a chunk has them.
        legend={
            s: label
            for s, label in CHUNK_STATES.items()
            if s in shown or s in ("verified", "unverified", "none", "failed")
        },
        big_strip=chunk_count > 100,
        totals=_overall(runs),
        spending=_spending(runs, estimate),
        estimate=estimate,
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


def bidi_safe(text: Any) -> Markup:
    """``text`` escaped, with each bidi control character in a mark of its own (``_BIDI_CONTROLS``):
    the character stays in the text (its offsets and copies are unchanged), isolated and shown."""
    return Markup(
        _BIDI_CONTROLS.sub(
            lambda m: f'<span class="bidi" title="U+{ord(m[0]):04X}">{m[0]}</span>', str(escape(str(text)))
        )
    )


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
    """The page (or section) each chunk starts on: from the document when it was read as one,
    else from the citations that carry one (for their chunks only)."""
    places: dict[int, str] = {}
    spans = runs[0].chunks
    if document is not None and spans and (document.page_starts or document.section_starts):
        for span in spans:
            where = document.locate(span.start)
            place = f"p. {where.page}" if where.page is not None else " › ".join(where.section)
            if place:
                places[span.index] = place
        return places
    for run in runs:
        for citation in [*run.citations, *run.related]:
            if citation.location and citation.chunk not in places:
                places[citation.chunk] = citation.location
    return places


def _strip_labels(places: dict[int, str], chunk_count: int) -> dict[int, str]:
    """The places the strip writes above its chunks: where the place changes from the chunk before,
    and at most one label every ``chunk_count / STRIP_LABELS`` chunks."""
    every = max(1, math.ceil(chunk_count / STRIP_LABELS))
    labels: dict[int, str] = {}
    previous, last = None, -every
    for index in range(chunk_count):
        place = places.get(index)
        if place is not None and place != previous and index - last >= every:
            labels[index] = place
            last = index
        previous = place if place is not None else previous
    return labels


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


def _question_view(
    k: int,
    run: QuestionRun,
    chunk_texts: list[str] | None,
    places: dict[int, str],
    labels: dict[int, str],
    span: float,
) -> dict[str, Any]:
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
        chunks.append(
            {"index": index, "state": state, "record": record, "place": places.get(index), "label": labels.get(index)}
        )
    path = {c.chunk for c in run.citations} or (set(run.supporting_chunks) if run.status == "answered" else set())
    tree = _merge_tree(run.calls or [], path)
    return {
        "key": f"q{k}",
        "run": run,
        "chunks": chunks,
        "citations": [_citation_view(c, f"cite-{n}", chunk_texts) for n, c in enumerate(run.citations)],
        "related": [_citation_view(c, f"related-{n}", chunk_texts) for n, c in enumerate(run.related)],
        "tree": [node for node in tree if node["children"] or node["record"].stage != "map"],
        # Map calls no later call took: they had nothing to pass on (no information, or failed).
        "left": sorted(
            (node for node in tree if not node["children"] and node["record"].stage == "map"),
            key=lambda node: min(node["chunks"], default=-1),
        ),
        "path": sorted(path),
        # Prompt tokens from the server's prefix cache, where some call of the question reported them.
        "cached_tokens": _cached_tokens(run.calls) if run.calls is not None else run.totals.get("cached_tokens"),
        "calls": _calls_view(run.calls or [], span),
        "highlights": _highlights(run, chunk_texts),
    }


def _cached_tokens(calls: Sequence[CallRecord]) -> int | None:
    reported = [r.cached_tokens for r in calls if r.cached_tokens is not None]
    return sum(reported) if reported else None


def _citation_view(citation: Citation, ref: str, chunk_texts: list[str] | None) -> dict[str, Any]:
    """A citation's link: to its chunk in the document view, and (``ref``) to its highlight there."""
    return {
        "citation": citation,
        "target": f"chunk-{citation.chunk}",
        "ref": ref,
        "text_shown": chunk_texts is not None,
    }


def _highlights(run: QuestionRun, chunk_texts: list[str] | None) -> list[list[Any]]:
    """[chunk, start, end, kind, ref] of each located quote, as UTF-16 offsets into its chunk's
    text; ``ref`` names the citation whose link shows it ("cite-0", "related-2")."""
    if chunk_texts is None or run.chunks is None:
        return []
    marks = []
    for kind, citations in (("cite", run.citations), ("related", run.related)):
        for n, c in enumerate(citations):
            if not 0 <= c.chunk < len(run.chunks):
                continue
            span, text = run.chunks[c.chunk], chunk_texts[c.chunk]
            start, end = max(c.start - span.start, 0), min(c.end - span.start, len(text))
            if start < end:
                marks.append([c.chunk, _utf16(text[:start]), _utf16(text[:end]), kind, f"{kind}-{n}"])
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


def _chunks_label(indices: Sequence[int], most: int = 6) -> str:
    """Chunks in words: "chunk 3", "chunks 0–11", "chunks 3–4, 19, 40"; runs of consecutive chunks
    as ranges, and after ``most`` of them, how many chunks in all."""
    if not indices:
        return "no chunk"
    ordered = sorted(set(indices))
    if len(ordered) == 1:
        return f"chunk {ordered[0]}"
    runs: list[list[int]] = []
    for index in ordered:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    shown = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs[:most])
    return f"chunks {shown}" + (f", … ({len(ordered)} in all)" if len(runs) > most else "")


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= TRUNCATED_CHARS else text[:TRUNCATED_CHARS] + "…"


# The calls on the run's clock: a row a call, grouped in bands by stage and ordered by when each
# was sent; its queue wait a light bar, then the call a bar of its stage's colour; at the right,
# its tokens. Sizes in SVG units (CSS pixels).
TIMELINE_LABEL_WIDTH = 84
TIMELINE_WIDTH = 600
TIMELINE_TOKENS_GAP = 28
TIMELINE_TOKENS_WIDTH = 190
TIMELINE_TOP = 20
TIMELINE_ROWS_HEIGHT = 420  # the rows of a band share at most this height ...
TIMELINE_ROW_HEIGHT = 10  # ... and a row is at most this high
TIMELINE_BAND_HEIGHT = 12  # a band is at least this high (a reduce's one row is seen)
TIMELINE_BAND_GAP = 8
TIMELINE_TICKS = 6


@dataclass
class _Band:
    stage: str
    rows: list[CallRecord]
    y: float = 0.0
    row_height: float = 0.0


def _clock_span(runs: Sequence[QuestionRun]) -> float:
    """The seconds the timelines of a page span: the run's wall time, or more if a call ended later
    (a trace of several runs), the same for every question of one reading."""
    ends = [r.sent_s + r.latency_s for run in runs for r in run.calls or [] if r.sent_s is not None]
    wall = [float(run.totals.get("wall_time_s") or 0) for run in runs]
    return max([*ends, *wall, 0.0]) or 1.0


def _calls_view(calls: Sequence[CallRecord], span: float) -> dict[str, Any]:
    """The calls of a question: on the run's clock (``_timeline``) when they say when they were
    sent; else, for a trace written before they did, as columns in the order they finished
    (``_columns``). Either way, a table row a call, in the order the picture shows them."""
    if not calls:
        return {"kind": "none", "rows": []}
    if not any(r.sent_s is not None for r in calls):
        columns = _columns(calls)
        return {"kind": "columns", "rows": columns["rows"], "columns": columns}
    timeline = _timeline(calls, span)
    not_made = [r for r in calls if r.sent_s is None]
    rows = [{"record": r, "label": _chunks_label(r.chunk_indices)} for band in timeline["bands"] for r in band["rows"]]
    rows += [{"record": r, "label": _chunks_label(r.chunk_indices)} for r in not_made]
    return {"kind": "timeline", "rows": rows, "timeline": timeline, "not_made": len(not_made)}


def _timeline(calls: Sequence[CallRecord], span: float) -> dict[str, Any]:
    """The calls that were sent on the run's clock, ``span`` seconds wide: a band of rows per stage
    (map, collapse, reduce, then any other), a row a call in the order they were sent. A row's
    light bar is its queue wait (``queued_s``, before ``sent_s``), its stage-coloured bar the call
    (``latency_s``; dashed if it failed), and its stacked bar at the right its tokens (cached
    prompt, computed prompt, completion). Every bar is a short path, stroked as thick as the row;
    a call's two bars are one group, with the figures in its tooltip."""
    sent = sorted((r for r in calls if r.sent_s is not None), key=lambda r: r.sent_s or 0.0)
    stages = sorted({r.stage for r in sent}, key=lambda stage: STAGE_ORDER.get(stage, len(STAGE_ORDER)))
    bands = [_Band(stage, [r for r in sent if r.stage == stage]) for stage in stages]
    row_height = min(TIMELINE_ROW_HEIGHT, TIMELINE_ROWS_HEIGHT / max(len(band.rows) for band in bands))
    y = float(TIMELINE_TOP)
    for band in bands:
        band.y = y
        band.row_height = max(row_height, min(TIMELINE_ROW_HEIGHT, TIMELINE_BAND_HEIGHT / len(band.rows)))
        y += band.row_height * len(band.rows) + TIMELINE_BAND_GAP
    bottom = y - TIMELINE_BAND_GAP
    scale = TIMELINE_WIDTH / span
    tokens_x = TIMELINE_LABEL_WIDTH + TIMELINE_WIDTH + TIMELINE_TOKENS_GAP
    most = max((r.prompt_tokens + r.completion_tokens for r in sent), default=0) or 1
    views = []
    for band in bands:
        bars = []
        series: dict[str, list[str]] = {kind: [] for kind in TOKEN_COLOURS}
        for i, record in enumerate(band.rows):
            middle = band.y + (i + 0.5) * band.row_height
            start = TIMELINE_LABEL_WIDTH + (record.sent_s or 0.0) * scale
            queued = (record.queued_s or 0.0) * scale
            bars.append(
                {
                    "kind": "failed" if record.error else band.stage if band.stage in STAGE_COLOURS else "other",
                    "queue": f"M{start - queued:.1f} {middle:.2f}h{queued:.1f}" if queued >= 0.1 else None,
                    "call": f"M{start:.1f} {middle:.2f}h{max(record.latency_s * scale, 1.0):.1f}",
                    "title": _call_tip(record),
                }
            )
            cached = min(record.cached_tokens or 0, record.prompt_tokens)
            x = float(tokens_x)
            for kind, amount in (
                ("cached", cached),
                ("computed", record.prompt_tokens - cached),
                ("completion", record.completion_tokens),
            ):
                width = amount / most * TIMELINE_TOKENS_WIDTH
                if width >= 0.05:
                    series[kind].append(f"M{x:.1f} {middle:.2f}h{width:.1f}")
                    x += width
        views.append(
            {
                "stage": band.stage,
                "rows": band.rows,
                "y": round(band.y, 2),
                "height": round(band.row_height * len(band.rows), 2),
                # A bar as thick as its row, less a gap between rows high enough to show one; rows
                # thinner than a pixel overlap a little, or their anti-aliased edges leave seams.
                "stroke": round(
                    band.row_height - 2
                    if band.row_height >= 6
                    else band.row_height * 1.3
                    if band.row_height < 1
                    else band.row_height,
                    3,
                ),
                "bars": bars,
                "tokens": [{"kind": kind, "d": " ".join(parts)} for kind, parts in series.items() if parts],
            }
        )
    return {
        "bands": views,
        "calls": len(sent),
        "ticks": [
            {"x": round(TIMELINE_LABEL_WIDTH + t * scale, 1), "label": f"{t:g} s"} for t in _ticks(span, TIMELINE_TICKS)
        ],
        "span": span,
        "origin": TIMELINE_LABEL_WIDTH,
        "scale": scale,
        "most": most,
        "cached_known": any(r.cached_tokens is not None for r in sent),
        "kinds": [stage for stage in STAGE_COLOURS if stage in stages]
        + (["other"] if set(stages) - set(STAGE_COLOURS) else []),
        "failed": any(r.error for r in sent),
        "label_width": TIMELINE_LABEL_WIDTH,
        "time_width": TIMELINE_WIDTH,
        "tokens_x": tokens_x,
        "tokens_width": TIMELINE_TOKENS_WIDTH,
        "top": TIMELINE_TOP,
        "bottom": round(bottom, 2),
        "width": tokens_x + TIMELINE_TOKENS_WIDTH + 12,
        "height": round(bottom + 30, 2),
    }


def _ticks(span: float, most: int) -> list[float]:
    """Round times from 0 to ``span``, at most ``most`` + 1 of them: steps of 1, 2 or 5 times a
    power of ten."""
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [round(n * step, 10) for n in range(int(span / step + 1e-9) + 1)]


def _seconds(value: float | None) -> str:
    """Seconds as the timeline's table and tooltips write them: "—" when unknown."""
    if value is None:
        return "—"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _call_tip(record: CallRecord) -> str:
    """A call's tooltip: what, when, how long, and its tokens."""
    cached = f" ({record.cached_tokens:,} cached)" if record.cached_tokens is not None else ""
    tip = (
        f"{record.stage} · {_chunks_label(record.chunk_indices)} · waited {_seconds(record.queued_s)} s, "
        f"sent at {_seconds(record.sent_s)} s, took {_seconds(record.latency_s)} s · "
        f"{record.prompt_tokens:,} prompt{cached} + {record.completion_tokens:,} completion tokens"
    )
    if record.attempts > 1:
        tip += f" · {record.attempts} attempts"
    if record.cache_hits:
        tip += " · reply cache"
    return tip + (" · failed" if record.error else "")


# The calls of a trace written before calls recorded when they were sent: a column a call, in the
# order the calls finished, grouped by stage; above, its latency, below, its tokens. Sizes in SVG
# units (CSS pixels).
CHART_WIDTH = 760
CHART_HEIGHT = 90
LABEL_WIDTH = 110
CHART_GAP = 34
STAGE_COLOURS = {"map": "#5c6bc0", "collapse": "#8e24aa", "reduce": "#00897b"}
FAILED_COLOUR = "#c62828"
OTHER_COLOUR = "#757575"
TOKEN_COLOURS = {"cached": "#90caf9", "computed": "#1565c0", "completion": "#ef6c00"}


def _columns(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Two column charts of the calls, in the order they were recorded (as they finished) within
    each stage: latency, and tokens (cached prompt, computed prompt, completion) stacked; for a
    trace whose calls do not say when they were sent (written before ``CallRecord.sent_s``).
    Each series is one SVG path, so a run of thousands of calls stays small."""
    ordered = sorted(calls, key=lambda r: STAGE_ORDER.get(r.stage, 9))  # stable: the order they finished
    rows = [{"record": r, "label": _chunks_label(r.chunk_indices)} for r in ordered]
    n = len(ordered)
    step = CHART_WIDTH / max(n, 1)
    width = max(step - (1 if step >= 3 else 0), 0.4)
    longest = max((r.latency_s for r in ordered), default=0.0) or 1.0
    most = max((r.prompt_tokens + r.completion_tokens for r in ordered), default=0) or 1
    latency: dict[str, list[str]] = {}
    tokens: dict[str, list[str]] = {kind: [] for kind in TOKEN_COLOURS}
    stages = []
    for i, record in enumerate(ordered):
        x = LABEL_WIDTH + i * step
        if i == 0 or record.stage != ordered[i - 1].stage:
            stages.append({"stage": record.stage, "x": round(x, 1)})
        colour = FAILED_COLOUR if record.error else STAGE_COLOURS.get(record.stage, OTHER_COLOUR)
        latency.setdefault(colour, []).append(
            _column(x, width, CHART_HEIGHT, record.latency_s / longest * CHART_HEIGHT)
        )
        cached = min(record.cached_tokens or 0, record.prompt_tokens)
        bottom = float(2 * CHART_HEIGHT + CHART_GAP)
        for kind, amount in (
            ("cached", cached),
            ("computed", record.prompt_tokens - cached),
            ("completion", record.completion_tokens),
        ):
            height = amount / most * CHART_HEIGHT
            if height > 0:
                tokens[kind].append(_column(x, width, bottom, height))
                bottom -= height
    return {
        "rows": rows,
        "latency": [{"fill": colour, "d": " ".join(parts)} for colour, parts in latency.items()],
        "tokens": [{"fill": TOKEN_COLOURS[kind], "d": " ".join(parts)} for kind, parts in tokens.items() if parts],
        "stages": stages,
        "longest": longest,
        "most": most,
        "cached_known": any(r.cached_tokens is not None for r in ordered),
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "label_width": LABEL_WIDTH,
        "gap": CHART_GAP,
        "width": LABEL_WIDTH + CHART_WIDTH + 60,  # room for the last stage's name
        "height": 2 * CHART_HEIGHT + CHART_GAP + 16,
    }


def _column(x: float, width: float, bottom: float, height: float) -> str:
    """A column of a path: ``height`` up from ``bottom`` (at least a hair, so every call shows)."""
    height = max(height, 0.5)
    return f"M{x:.1f} {bottom:.1f}h{width:.2f}v{-height:.1f}h{-width:.2f}z"


def _spending(runs: Sequence[QuestionRun], estimate: CostEstimate | None) -> list[dict[str, Any]]:
    """Per stage and in all, the calls and tokens the run spent beside the calls and prompt tokens
    ``--dry-run`` estimated (None without an estimate): the map's exactly, the later stages' as
    bounds; and the map's cached tokens beside what a prefix cache could serve. Without recorded
    calls (a batch line), the stages are unknown (None) and the total is the results' own."""
    recorded = all(run.calls is not None for run in runs)
    overall = _overall(runs)
    priced = {"map": estimate.map, "collapse": estimate.collapse, "reduce": estimate.reduce} if estimate else {}
    rows = []
    for stage in (*STAGE_ORDER, "total"):
        cost = (estimate.total if stage == "total" else priced[stage]) if estimate else None
        row: dict[str, Any] = {
            "stage": stage,
            "estimate": cost,
            "cacheable_tokens": estimate.cacheable_tokens if estimate and stage == "map" else None,
        }
        if recorded:
            calls = [r for run in runs for r in run.calls or [] if stage == "total" or r.stage == stage]
            row |= {
                "calls": len(calls),
                "failed": sum(1 for r in calls if r.error),
                "prompt_tokens": sum(r.prompt_tokens for r in calls),
                "cached_tokens": _cached_tokens(calls),
                "completion_tokens": sum(r.completion_tokens for r in calls),
            }
        elif stage == "total":
            row |= {name: overall[name] for name in ("calls", "prompt_tokens", "cached_tokens", "completion_tokens")}
            row["failed"] = overall["failed_calls"]
        else:
            row |= {"calls": None, "failed": 0, "prompt_tokens": None, "cached_tokens": None, "completion_tokens": None}
        rows.append(row)
    return rows


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
