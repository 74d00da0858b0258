"""The answer as it is written: the run's events (``MapReducePipeline.astream``), and ``llmxmr run``
and ``llmxmr chat`` printing the reduce's answer field as it streams in, then checking it.

The terminal tests run ``python -m llmxmr`` on a pseudo-terminal against the fake HTTP server,
which streams the reduce reply slowly; the others force ``--stream`` through ``CliRunner``."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline
from llmxmr.cli import main
from llmxmr.clients.base import ChatReply, ChatRequest, ReplyWatch
from llmxmr.clients.fake import ScriptedClient
from llmxmr.events import (
    AnswerDelta,
    ChunkRead,
    CollapseDone,
    CollapseStarted,
    PartialFound,
    ProgressBar,
    ReadingPlanned,
    ReduceDone,
    ReduceStarted,
)
from llmxmr.pipeline import FinalResult

from ..conftest import default_sigint, final_reply, partial_reply
from ..fake_server import Answer, completion, fake_server, models
from . import test_pipeline as scripted

KEY_SENTENCE = "The secret code is KEY-77."
TEXT = f"Some filler about the weather, which was mild.\n\n{KEY_SENTENCE}\n\nMore filler about the harvest.\n"
QUESTION = "What is the secret code?"
# An answer the key sentence supports: the check keeps it as written.
KEPT = "The secret code is KEY-77."
# One it does not (the quote holds the code, not the rest): the most confident partial answer stands.
REPLACED = "The secret code is KEY-77, as the second paragraph of the document states it."


def schema_of(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


def server_replies(answer: str, *, piece_chars: int = 4, piece_delay_s: float = 0.0, evidence: str = KEY_SENTENCE):
    """The fake server's chat script: a map reply that quotes ``evidence``, then a reduce reply
    with ``answer``, streamed ``piece_chars`` at a time, ``piece_delay_s`` apart."""

    def reply(body: dict) -> Answer:
        if schema_of(body) == "MapOutput":
            return completion(partial_reply(evidence.split()[-1].rstrip("."), 5, info=evidence))
        answered = completion(final_reply(answer, 5, [0]))
        answered.piece_chars, answered.piece_delay_s = piece_chars, piece_delay_s
        return answered

    return {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": reply}


def run_args(tmp_path: Path, base_url: str, *more: str) -> list[str]:
    document = tmp_path / "doc.txt"
    document.write_text(TEXT, encoding="utf-8")
    return ["run", "--input", str(document), "--question", QUESTION, "--base-url", base_url, "--tokenizer", "tiktoken"]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


# ---- the event stream --------------------------------------------------------------------------


def collect(client: ScriptedClient, document: str, question: str, **config) -> list:
    async def go() -> list:
        pipeline = MapReducePipeline(scripted.config(**config), client=client)
        return [event async for event in pipeline.astream(document, question)]

    return asyncio.run(go())


def answer_of(events: list) -> str:
    """The streamed answer: the deltas since the last restart."""
    text = ""
    for event in events:
        if isinstance(event, AnswerDelta):
            text = event.text if event.restart else text + event.text
    return text


def test_astream_tells_every_chunk_read_and_collapse_then_the_answer_as_written_then_one_result():
    def every_chunk_answers(request: ChatRequest) -> str:
        if request.schema_name == "MapOutput":
            return partial_reply(scripted.LONG_ANSWER, confidence=2, info=scripted.FILLER_SENTENCE)
        if request.schema_name == "CollapseOutput":
            return partial_reply("green", confidence=3, info=scripted.FILLER_SENTENCE)
        return final_reply(scripted.FILLER_SENTENCE)

    client = scripted.new_client(responder=every_chunk_answers, window=4000, stream_chars=3)
    events = collect(client, scripted.DOCUMENT, "What colour is the grass?", **{"chunking.chunk_tokens": 200})
    kinds = [type(event) for event in events]
    assert kinds[0] is ReadingPlanned and kinds[-1] is FinalResult and kinds.count(FinalResult) == 1
    result = events[-1].result
    assert events[0].chunks == len(result.chunks)
    reads = [event for event in events if isinstance(event, ChunkRead)]
    assert sorted(event.chunk for event in reads) == [chunk.index for chunk in result.chunks]
    assert all(event.found for event in reads) and any(event.reused for event in reads)
    for found in (event for event in events if isinstance(event, PartialFound)):  # each after its chunk's read
        read = next(i for i, e in enumerate(events) if isinstance(e, ChunkRead) and e.chunk == found.chunks[0])
        assert read < events.index(found)
    started = [event.chunks for event in events if isinstance(event, CollapseStarted)]
    done = [event.chunks for event in events if isinstance(event, CollapseDone)]
    collapses = [record.chunk_indices for record in result.trace.calls if record.stage == "collapse"]
    assert collapses and sorted(started) == sorted(done) == sorted(collapses)
    reduce_started = kinds.index(ReduceStarted)
    assert max(i for i, kind in enumerate(kinds) if kind in (ChunkRead, CollapseDone)) < reduce_started
    deltas = [i for i, kind in enumerate(kinds) if kind is AnswerDelta]
    assert len(deltas) > 5 and reduce_started < deltas[0] and deltas[-1] < kinds.index(ReduceDone)
    assert answer_of(events) == result.answer == scripted.FILLER_SENTENCE


def test_a_reply_asked_again_restarts_the_streamed_answer():
    invalid = json.dumps({"rationale": "weighed", "answer": "KEY-77 or so", "confidence": "very"})

    def first_reduce_invalid(request: ChatRequest) -> str:
        if request.schema_name == "FinalAnswer" and not any(m.role == "assistant" for m in request.messages):
            return invalid
        return scripted.responder(request)

    client = scripted.new_client(responder=first_reduce_invalid, stream_chars=4)
    events = collect(client, scripted.DOCUMENT, "What is the code?")
    deltas = [event for event in events if isinstance(event, AnswerDelta)]
    restarts = [event for event in deltas if event.restart]
    assert len(restarts) == 1 and "".join(d.text for d in deltas[: deltas.index(restarts[0])]) == "KEY-77 or so"
    assert answer_of(events) == events[-1].result.answer == "KEY-77"


class ThreadedClient(ScriptedClient):
    """Streams each watched reply from a worker thread, as the embedded model does."""

    async def chat(self, request: ChatRequest, watch: ReplyWatch | None = None) -> ChatReply:
        reply = await super().chat(request)
        if watch is None:
            return reply
        return await asyncio.to_thread(self._streamed, reply, watch, 2)


def test_a_reply_streamed_in_a_worker_thread_is_told_in_the_event_loop_in_order():
    client = ThreadedClient(responder=scripted.responder, counter=scripted.WordCounter())
    events = []

    def told(event) -> None:
        events.append((threading.get_ident(), event))

    async def listened() -> None:
        pipeline = MapReducePipeline(scripted.config(), client=client)
        await pipeline.arun_many(scripted.DOCUMENT, ["What is the code?"], on_event=told)

    asyncio.run(listened())
    loop_thread = threading.get_ident()  # asyncio.run runs its loop in this thread
    assert {thread for thread, _ in events} == {loop_thread}
    kinds = [type(event) for _, event in events]
    assert kinds.count(AnswerDelta) >= 3 and kinds.index(ReduceDone) > max(
        i for i, kind in enumerate(kinds) if kind is AnswerDelta
    )
    assert answer_of([event for _, event in events]) == events[-1][1].result.answer == "KEY-77"


def test_without_streaming_there_are_no_deltas_and_the_result_is_the_same():
    streamed = collect(scripted.new_client(stream_chars=4), scripted.DOCUMENT, "What is the code?")
    whole = collect(scripted.new_client(), scripted.DOCUMENT, "What is the code?")
    assert not [event for event in whole if isinstance(event, AnswerDelta)]
    assert whole[-1].result.answer == streamed[-1].result.answer == "KEY-77"
    same = [type(event) for event in streamed if not isinstance(event, AnswerDelta)]
    assert same == [type(event) for event in whole]


def test_the_progress_bar_counts_every_call_from_the_events():
    bar = ProgressBar(enabled=False)

    async def go():
        pipeline = MapReducePipeline(scripted.config(), client=scripted.new_client())
        return await pipeline.arun_many(
            scripted.DOCUMENT, ["What is the code?", "What colour is the grass?"], on_event=bar
        )

    results = asyncio.run(go())
    assert bar.done == bar.expected == sum(len(result.trace.calls) for result in results)


def test_leaving_the_stream_early_cancels_the_run():
    client = scripted.new_client(delay_s=0.05)

    async def go() -> None:
        pipeline = MapReducePipeline(scripted.config(**{"llm.concurrency": 1}), client=client)
        stream = pipeline.astream(scripted.DOCUMENT, "What is the code?")
        async for event in stream:
            if isinstance(event, ChunkRead):
                break
        await stream.aclose()
        sent = len(client.requests)
        await asyncio.sleep(0.3)
        assert len(client.requests) == sent and client.in_flight == 0

    asyncio.run(go())


# ---- printed as it streams in ------------------------------------------------------------------


def test_a_streamed_answer_the_check_keeps_prints_as_without_streaming(tmp_path):
    with fake_server(server_replies(KEPT)) as server:
        args = run_args(tmp_path, server.base_url, "--no-progress")
        streamed = invoke(*args, "--stream")
        whole = invoke(*args, "--no-stream")
        requests = [body for path, body in server.requests if path == "/v1/chat/completions"]
    assert streamed.exit_code == whole.exit_code == 0, streamed.output
    assert streamed.stdout == whole.stdout and streamed.stdout.startswith(f"{KEPT}\n\nCitations:")
    assert all(body.get("stream") for body in requests if schema_of(body) == "FinalAnswer")


@pytest.mark.parametrize(
    ("answer", "evidence", "said", "then"),
    [
        (
            REPLACED,
            KEY_SENTENCE,
            "Checked: the answer above does not stand as written (no quote of the partial answers holds",
            "KEY-77",
        ),
        (
            "KEY-99",
            "The secret code is KEY-99.",  # not in the text: unverified, the reduce's answer a guess
            "Checked: the text does not support the answer above; it is not an answer.",
            "No supported answer",
        ),
    ],
    ids=["replaced-by-a-partial-answer", "unsupported"],
)
def test_a_streamed_answer_the_check_changes_is_corrected_on_the_next_line(tmp_path, answer, evidence, said, then):
    with fake_server(server_replies(answer, evidence=evidence)) as server:
        args = run_args(tmp_path, server.base_url, "--no-progress")
        streamed = invoke(*args, "--stream")
        whole = invoke(*args, "--no-stream")
    assert streamed.exit_code == 0, streamed.output
    shown, correction, *rest = streamed.stdout.split("\n")
    assert shown == answer and correction.startswith(said) and rest[0] == then
    assert "\n".join(rest) == whole.stdout  # then the result, as printed without streaming


def test_without_streaming_support_the_answer_is_printed_once_when_it_comes(tmp_path):
    """A server that answers a streamed request with one JSON body."""
    scripts = server_replies(KEPT)
    stream_ignored = scripts["/v1/chat/completions"]
    scripts["/v1/chat/completions"] = lambda body: Answer(raw=json.dumps(stream_ignored(body).body).encode())
    with fake_server(scripts) as server:
        args = run_args(tmp_path, server.base_url, "--no-progress")
        streamed = invoke(*args, "--stream")
        whole = invoke(*args, "--no-stream")
        assert server.streams == []  # nothing was streamed
    assert streamed.exit_code == 0 and streamed.stdout == whole.stdout
    assert streamed.stdout.count(KEPT) == 2  # the answer, and its citation


def test_several_questions_stream_in_order_each_under_its_header(tmp_path):
    facts = {"What is the secret code?": KEY_SENTENCE, "What was the weather like?": "The weather was mild."}
    text = f"{facts['What was the weather like?']}\n\nFiller.\n\n{KEY_SENTENCE}\n"

    def reply(body: dict) -> Answer:
        prompt = body["messages"][-1]["content"]
        question = next(q for q in facts if q in prompt)
        if schema_of(body) == "MapOutput":
            return completion(partial_reply(facts[question], 5, info=facts[question]))
        answered = completion(final_reply(facts[question], 5, [0]))
        answered.piece_chars = 3
        return answered

    document = tmp_path / "doc.txt"
    document.write_text(text, encoding="utf-8")
    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": reply}
    with fake_server(scripts) as server:
        args = ["run", "--input", str(document), "--base-url", server.base_url, "--tokenizer", "tiktoken"]
        for question in facts:
            args += ["--question", question]
        streamed = invoke(*args, "--no-progress", "--stream")
        whole = invoke(*args, "--no-progress", "--no-stream")
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == whole.stdout and streamed.stdout.startswith("[1] What is the secret code?\n")
    assert [line[:3] for line in streamed.stderr.splitlines()] == ["[1]", "[2]"]


def test_json_never_streams(tmp_path):
    with fake_server(server_replies(KEPT)) as server:
        refused = invoke(*run_args(tmp_path, server.base_url), "--json", "--stream")
    assert refused.exit_code == 2 and "--json" in refused.stderr


def test_chat_streams_the_same_way(tmp_path):
    with fake_server(server_replies(REPLACED)) as server:
        document = tmp_path / "doc.txt"
        document.write_text(TEXT, encoding="utf-8")
        args = ["chat", "--input", str(document), "--base-url", server.base_url, "--tokenizer", "tiktoken"]
        streamed = invoke(*args, "--stream", input=f"{QUESTION}\n")
        whole = invoke(*args, "--no-stream", input=f"{QUESTION}\n")
    assert streamed.exit_code == whole.exit_code == 0, streamed.output
    shown, correction, *rest = streamed.stdout.split("\n")  # after the prompt ("? ")
    assert shown == f"? {REPLACED}" and correction.startswith("Checked: the answer above does not stand as written")
    assert "? " + "\n".join(rest) == whole.stdout and whole.stdout.startswith("? KEY-77\n")


# ---- on a terminal -----------------------------------------------------------------------------


class Terminal:
    """``python -m llmxmr ARGS`` with its stdout (and stderr, unless piped) on a pseudo-terminal:
    what it printed there, each read with the time it came."""

    def __init__(self, args: list[str], *, stderr_piped: bool = False) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmxmr", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE if stderr_piped else slave,
            preexec_fn=default_sigint,  # noqa: PLW1509 (one system call)
        )
        os.close(slave)
        self.reads: list[tuple[float, str]] = []
        self._master = master
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            self.reads.append((time.monotonic() - self.started, data.decode("utf-8", "replace")))

    @property
    def text(self) -> str:
        return "".join(data for _, data in self.reads).replace("\r\n", "\n")

    def first_time(self, fragment: str) -> float:
        """When ``fragment`` was first on the terminal."""
        seen = ""
        for at, data in self.reads:
            seen += data.replace("\r\n", "\n")
            if fragment in seen:
                return at
        raise AssertionError(f"{fragment!r} never appeared in {seen!r}")

    def wait_for(self, fragment: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while fragment not in self.text:
            assert time.monotonic() < deadline and self.process.poll() is None, self.text
            time.sleep(0.01)

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=timeout_s)
        self._reader.join(timeout=10)
        os.close(self._master)
        return self.process.returncode, (stderr or b"").decode()


def test_on_a_terminal_the_answer_appears_as_it_streams_in_and_the_bar_stays_off_its_line(tmp_path):
    """One character every 0.08 s: the answer's first characters are on the terminal well before
    its last, and the progress bar (on the same terminal) is cleared before the answer's line."""
    with fake_server(server_replies(KEPT, piece_chars=1, piece_delay_s=0.08)) as server:
        terminal = Terminal(run_args(tmp_path, server.base_url))
        code, _ = terminal.finish()
    assert code == 0, terminal.text
    first, whole = terminal.first_time(KEPT[:3]), terminal.first_time(KEPT)
    assert whole - first > 1.0, terminal.reads  # 26 characters, 2 s of streaming
    assert len([data for at, data in terminal.reads if first <= at < whole]) >= 5
    line = next(line for line in terminal.text.split("\n") if KEPT in line)
    assert line.split("\r")[-1] == KEPT  # the bar drew nothing on the answer's line
    assert terminal.text.count(KEPT) == 2 and "Checked" not in terminal.text  # the answer, its citation


def test_on_a_terminal_json_is_printed_whole(tmp_path):
    with fake_server(server_replies(KEPT, piece_chars=2, piece_delay_s=0.02)) as server:
        terminal = Terminal([*run_args(tmp_path, server.base_url), "--json"], stderr_piped=True)
        code, _ = terminal.finish()
    assert code == 0 and json.loads(terminal.text)["answer"] == KEPT


def test_ctrl_c_mid_stream_stops_the_call_and_prints_what_was_verified(tmp_path):
    answer = "The secret code is KEY-77, " + "and it opens the vault under the old mill, " * 6
    with fake_server(server_replies(answer, piece_chars=2, piece_delay_s=0.05)) as server:
        terminal = Terminal([*run_args(tmp_path, server.base_url), "--no-progress"], stderr_piped=True)
        terminal.wait_for("The secret")
        terminal.process.send_signal(signal.SIGINT)
        code, stderr = terminal.finish()
        deadline = time.monotonic() + 5
        while not server.streams[-1].hung_up and time.monotonic() < deadline:
            time.sleep(0.02)
        reduce = server.streams[-1]
    assert code == 130, (terminal.text, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [
        "interrupted: the answer being written was not checked; the 1 partial answer(s) verified so far are above"
    ]
    printed = terminal.text.split("\n")
    cut = next(i for i, line in enumerate(printed) if line.startswith("The secret"))
    assert printed[cut + 1] == "(interrupted: the answer above was not checked)"
    assert printed[cut + 2] == "Verified so far (partial answers that quotes of the text hold):"
    assert printed[cut + 3].startswith("  chunk 0 (confidence 5): KEY-77")
    assert printed[cut + 4].endswith(f'"{KEY_SENTENCE}"')
    assert answer.strip() not in terminal.text and reduce.hung_up and reduce.sent < reduce.pieces
