"""The pipeline against the bundled SmolLM2-135M's recorded replies: the real server client over
HTTP, the real pipeline and grounding, the replies the real llama.cpp server gave (``tests/replay.py``;
``LLMXMR_RECORD=1`` records them again)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from llmxmr import MapReducePipeline, PipelineConfig
from llmxmr.clients.openai_compat import OpenAICompatibleClient

from ..conftest import SERVER_N_CTX
from ..haystacks import FILLER, PASS_KEY, TASK, key_line
from ..replay import ReplayMiss, ReplyStore, replay_server

pytestmark = pytest.mark.integration


def retrieval_config(base_url: str, **settings) -> PipelineConfig:
    return PipelineConfig.load(
        task_type="retrieval",
        **{"llm.base_url": base_url, "llm.context_window": SERVER_N_CTX, "chunking.chunk_tokens": 2048, **settings},
    )


def test_server_is_recognised_with_its_tokenizer(model_server):
    async def probe():
        client = OpenAICompatibleClient(model_server)
        try:
            counter = await client.token_counter()
            assert counter is not None and counter.exact
            return client.describe(), counter.count_batch(["The pass key is 71432."])[0]
        finally:
            await client.aclose()

    description, tokens = asyncio.run(probe())
    assert description.startswith("llama-cpp-python at http://127.0.0.1:")
    assert tokens > 5


def test_pass_key_over_http(model_server, passkey_document):
    result = MapReducePipeline(retrieval_config(model_server)).run(passkey_document, "What is the pass key?")
    assert len(result.chunks) >= 4
    assert PASS_KEY in result.answer, result.model_dump_json(indent=1, exclude={"trace"})
    assert result.found
    assert result.trace.totals.prompt_tokens > 8000  # usage reported by the server
    key_chunk = next(c.index for c in result.chunks if PASS_KEY in passkey_document[c.start : c.end])
    map_calls = {c.chunk_indices[0]: c for c in result.trace.calls if c.stage == "map"}
    assert PASS_KEY in json.dumps(map_calls[key_chunk].output)  # found where it is, not elsewhere
    assert all(PASS_KEY not in json.dumps(c.output) for i, c in map_calls.items() if i != key_chunk)


def test_a_pdf_is_answered_and_cited_by_page(model_server, tmp_path):
    """Three pages of filler with the pass key on page 2: the answer, and page 2 as its source."""
    pytest.importorskip("pypdfium2")
    from llmxmr import read_document

    from ..unit.document_fixtures import pdf_bytes

    filler = [FILLER.strip()] * 40  # InfiniteBench's pass-key layout: filler lines, the key on page 2
    pages = [
        "\n".join([TASK.strip(), *filler]),
        "\n".join([*filler[:4], key_line().strip(), *filler[:4]]),
        "\n".join(filler),
    ]
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes(pages))
    result = MapReducePipeline(retrieval_config(model_server)).run(read_document(str(path)), "What is the pass key?")
    assert PASS_KEY in result.answer, result.model_dump_json(indent=1, exclude={"trace"})
    assert result.citations and {citation.page for citation in result.citations} == {2}


def test_three_questions_over_one_reading_of_an_8k_haystack(model_server):
    """Three needles, three questions, one ``run_many`` over one chunking: each answer holds its
    own value. The maps read the document first, the layout that lets the questions share each
    chunk's prompt prefix."""
    needles = {
        "What is the pass key?": ("71432", "The pass key is 71432. Remember it. 71432 is the pass key. "),
        "What is the door code?": ("58264", "The door code is 58264. Remember it. 58264 is the door code. "),
        "What is the locker number?": (
            "30917",
            "The locker number is 30917. Remember it. 30917 is the locker number. ",
        ),
    }
    lines = [FILLER] * 340  # about 8k tokens
    for depth, (_, needle) in zip((0.2, 0.5, 0.8), needles.values(), strict=True):
        lines.insert(int(len(lines) * depth), needle)
    document = TASK + "".join(lines)
    config = retrieval_config(model_server, **{"llm.map_question_first": False})
    results = MapReducePipeline(config).run_many(document, list(needles))
    for result, (question, (value, _)) in zip(results, needles.items(), strict=True):
        assert value in result.answer, (question, result.model_dump_json(indent=1, exclude={"trace"}))
    assert results[0].chunks == results[1].chunks == results[2].chunks and len(results[0].chunks) >= 4


def test_pass_key_at_a_third_of_16k_tokens_through_the_harness_on_its_defaults(model_server, tmp_path):
    """Issue 20's document, as ``llmxmr bench generate --task passkey --length 16k --n 4`` writes
    its second example (the key at depth 1/3), through ``bench infinitebench`` on nothing but the
    harness's and the model's own settings: the server lists the bundled GGUF, so its profile
    applies as it does in-process."""
    from click.testing import CliRunner

    from llmxmr.bench.infinitebench.generate import generate, parse_length
    from llmxmr.cli import main

    example = generate("passkey", parse_length("16k"), 4)[1]
    data = tmp_path / "passkey.jsonl"
    data.write_text(json.dumps(dict(example)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [
        "bench", "infinitebench", "--task", "passkey", "--data", str(data), "--out", str(out),
        "--base-url", model_server, "--context-window", str(SERVER_N_CTX), "--no-progress", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (prediction,) = [json.loads(line) for line in (out / "preds_passkey.jsonl").read_text().splitlines()]
    assert str(example["answer"][0]) in prediction["prediction"], prediction
    assert prediction["found"] and prediction["failed_calls"] == 0


def test_a_changed_prompt_misses_the_store_and_names_its_scenario(passkey_document, tmp_path, monkeypatch):
    """Replay never hides a change: one more sentence in the system prompt every call sends, and
    the recorded scenario fails, saying which one and how to record it again."""
    from llmxmr import prompts
    from llmxmr.resources import data_dir

    changed = tmp_path / "prompts"
    shutil.copytree(data_dir("prompts"), changed)
    system = changed / "shared" / "system.md"
    system.write_text(system.read_text(encoding="utf-8") + "\nBe brief.\n", encoding="utf-8")
    monkeypatch.setattr(prompts, "data_dir", lambda name: changed if name == "prompts" else data_dir(name))
    prompts.load_prompts.cache_clear()
    store = ReplyStore.load("test_pass_key_over_http")
    try:
        with replay_server(store) as base_url:
            result = MapReducePipeline(retrieval_config(base_url)).run(passkey_document, "What is the pass key?")
    finally:
        prompts.load_prompts.cache_clear()
    with pytest.raises(ReplayMiss, match="integration scenario 'test_pass_key_over_http'.*LLMXMR_RECORD=1"):
        store.check()
    assert result.unread_chunks and not result.complete  # the misses were refused, not answered
