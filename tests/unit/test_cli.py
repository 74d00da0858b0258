"""Every bad input gets one line and the right exit code, never a traceback."""

from __future__ import annotations

import codecs
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmxmr.cli import main


def invoke(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def assert_one_line_error(result, code: int, fragment: str):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) <= 3  # click usage errors add a usage line and a hint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_file(tmp_path):
    result = invoke("run", "--input", str(tmp_path / "nope.txt"), "--question", "q")
    assert_one_line_error(result, 2, "input file not found")


def test_directory(tmp_path):
    result = invoke("run", "--input", str(tmp_path), "--question", "q")
    assert_one_line_error(result, 2, "is a directory")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("text")

    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr("pathlib.Path.open", refuse)
    assert_one_line_error(invoke("run", "--input", str(path), "--question", "q"), 2, "Permission denied")


def test_unexpected_error_is_one_line_outside_tests(tmp_path, monkeypatch):
    path = tmp_path / "doc.txt"
    path.write_text("text")
    monkeypatch.delenv("LLMXMR_RAISE_ERRORS")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("llmxmr.cli.MapReducePipeline", broken)
    result = invoke("run", "--input", str(path), "--question", "q")
    assert_one_line_error(result, 1, "unexpected RuntimeError: a bug (run with -v for the traceback)")


def test_binary_file(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    assert_one_line_error(invoke("run", "--input", str(path), "--question", "q"), 2, "binary file")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème".encode("latin-1"))
    assert_one_line_error(invoke("run", "--input", str(path), "--question", "q"), 2, "not valid UTF-8")


def test_empty_document(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n\n ")
    assert_one_line_error(invoke("run", "--input", str(path), "--question", "q"), 2, "is empty")


def test_empty_question(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("text")
    assert_one_line_error(invoke("run", "--input", str(path), "--question", "  "), 2, "--question is empty")


def test_unreachable_server(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Some text. " * 50)
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "fast.yaml"
    config.write_text("llm:\n  max_retries: 0\n")
    result = invoke("run", "--input", str(path), "--question", "q", "--base-url", url, "--config", str(config))
    assert_one_line_error(result, 1, f"cannot reach the LLM server at {url}")
    assert "llmxmr serve" in result.output


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("llm: [1, 2\n", "is not valid YAML"),
        ("llm:\n  concurrency: 0\n", "invalid setting llm.concurrency"),
        ("chunking:\n  chunk_size: 10\n", "invalid setting chunking.chunk_size"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_broken_config(tmp_path, content, fragment):
    path = tmp_path / "doc.txt"
    path.write_text("text")
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = invoke("run", "--input", str(path), "--question", "q", "--config", str(config))
    assert_one_line_error(result, 2, fragment)


def test_missing_config_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("text")
    result = invoke("run", "--input", str(path), "--question", "q", "--config", str(tmp_path / "none.yaml"))
    assert_one_line_error(result, 2, "cannot read config")


def test_context_window_too_small(tmp_path, monkeypatch):
    from llmxmr.clients import fake

    path = tmp_path / "doc.txt"
    path.write_text("Some text. " * 50)
    monkeypatch.setattr("llmxmr.pipeline.make_client", lambda config: fake.ScriptedClient(window=300))
    result = invoke("run", "--input", str(path), "--question", "q", "--tokenizer", "tiktoken")
    assert_one_line_error(result, 2, "context window (300 tokens) is too small")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (codecs.BOM_UTF8 + "naïve text".encode(), "naïve text"),
        (codecs.BOM_UTF16_LE + "naïve text".encode("utf-16-le"), "naïve text"),
        (codecs.BOM_UTF16_BE + "naïve text".encode("utf-16-be"), "naïve text"),
        ("plain ünïcode".encode(), "plain ünïcode"),
    ],
)
def test_accepted_encodings(data, expected):
    from llmxmr.documents import decode_text

    assert decode_text(data, "doc") == expected


def test_stdin_and_json_output(monkeypatch):
    from llmxmr.clients.fake import ScriptedClient

    from ..conftest import WordCounter, final_reply, partial_reply

    def responder(request):
        if request.schema_name == "MapOutput":
            return partial_reply("blue", 5, info="The sky is blue.")
        return final_reply("blue", 5, [0])

    monkeypatch.setattr(
        "llmxmr.pipeline.make_client", lambda config: ScriptedClient(responder=responder, counter=WordCounter())
    )
    result = invoke("run", "--input", "-", "--question", "Sky colour?", "--json", input=b"The sky is blue.")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["answer"] == "blue" and payload["found"] is True
    assert payload["trace"]["totals"]["calls"] == 2
    assert "calls" not in payload["trace"]


def test_version_and_help():
    assert invoke("--version").exit_code == 0
    for command in ([], ["run"], ["serve"]):
        assert invoke(*command, "--help").exit_code == 0


def test_serve_dry_run_prints_the_sglang_command():
    result = invoke("serve", "--dry-run", "--port", "31000", "--", "--mem-fraction-static", "0.8")
    assert result.exit_code == 0
    assert "sglang.launch_server --model-path openbmb/MiniCPM3-4B --trust-remote-code" in result.output
    assert "--port 31000" in result.output and result.output.strip().endswith("--mem-fraction-static 0.8")


def test_serve_without_sglang_names_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert_one_line_error(invoke("serve"), 2, "pip install 'llmxmr[sglang]'")


def test_bench_score_prints_two_decimals_and_json(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"id": 0, "prediction": "The pass key is 123.", "ground_truth": ["123"]},
        {"id": 1, "prediction": "It is 999, not 456.", "ground_truth": ["456"]},
    ]
    preds.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = invoke("bench", "score", "--task", "passkey", "--preds", str(preds))
    assert result.exit_code == 0 and result.output.startswith("50.00  (passkey, official scorer, n=2)")
    result = invoke("bench", "score", "--task", "passkey", "--preds", str(preds), "--scorer", "lenient", "--json")
    assert json.loads(result.output) == {"task": "passkey", "scorer": "lenient", "n": 2, "score": 100.0}


def test_bench_score_unknown_task(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("")
    result = invoke("bench", "score", "--task", "poetry", "--preds", str(preds))
    assert_one_line_error(result, 2, "unknown InfiniteBench task 'poetry'")


def _passkey_file(tmp_path, keys: list[str]):
    path = tmp_path / "data" / "passkey.jsonl"
    path.parent.mkdir(exist_ok=True)
    lines = [
        json.dumps(
            {
                "id": i,
                "context": f"Filler. The pass key is {key}. More filler.",
                "input": "What is the pass key?",
                "answer": [key],
                "options": [],
            }
        )
        for i, key in enumerate(keys)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path.parent


def test_bench_infinitebench_runs_scores_and_resumes(tmp_path):
    from tests.conftest import final_reply, partial_reply
    from tests.fake_server import completion, fake_server, models

    data_dir = _passkey_file(tmp_path, ["12345", "67890"])
    out = tmp_path / "out"
    replies = [
        completion(partial_reply("12345", 5, info="The pass key is 12345.")),
        completion(final_reply("12345")),
        completion(partial_reply("67890", 5, info="The pass key is 67890.")),
        completion(final_reply("99999")),  # wrong: the reduce must come from the partials
    ]
    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": replies}
    with fake_server(scripts) as server:
        args = ["bench", "infinitebench", "--task", "passkey", "--data-dir", str(data_dir), "--out", str(out)]
        args += ["--base-url", server.base_url, "--tokenizer", "tiktoken", "--examples-in-flight", "1", "--no-progress"]
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert "passkey" in result.output and "100.00" in result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["data"] == {"data_dir": str(data_dir.resolve())}
        (report,) = summary["tasks"]
        assert (report["n"], report["calls"], report["scores"]["official"]) == (2, 4, 100.0)
        served = len(server.requests)
        again = invoke(*args, "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.output)["tasks"][0]["new"] == 0
        assert server.requests[served:] == []  # nothing is asked again on resume


def test_bench_infinitebench_needs_exactly_one_data_source(tmp_path):
    result = invoke("bench", "infinitebench", "--task", "passkey", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, 2, "exactly one of --data-dir, --data or --hf")
    data_dir = _passkey_file(tmp_path, ["1"])
    result = invoke(
        "bench",
        "infinitebench",
        "--task",
        "passkey,kv_retrieval",
        "--data",
        str(data_dir / "passkey.jsonl"),
        "--out",
        str(tmp_path / "o"),
    )
    assert_one_line_error(result, 2, "--data holds one task's examples")
    result = invoke(
        "bench", "infinitebench", "--task", "kv_retrieval", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, 2, "no kv_retrieval.jsonl in")
    result = invoke(
        "bench", "infinitebench", "--task", "passkeys", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, 2, "unknown InfiniteBench task")


def test_bench_generate_writes_official_jsonl(tmp_path):
    out = tmp_path / "data"
    result = invoke("bench", "generate", "--task", "passkey,math_find", "--length", "2k", "--n", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    for task in ("passkey", "math_find"):
        rows = [json.loads(line) for line in (out / f"{task}.jsonl").read_text().splitlines()]
        assert [row["id"] for row in rows] == [0, 1, 2]
        assert all(set(row) == {"id", "context", "input", "answer", "options"} for row in rows)
    single = tmp_path / "one.jsonl"
    assert (
        invoke(
            "bench", "generate", "--task", "kv_retrieval", "--length", "2k", "--n", "1", "--out", str(single)
        ).exit_code
        == 0
    )
    assert len(single.read_text().splitlines()) == 1
    result = invoke(
        "bench", "generate", "--task", "passkey,kv_retrieval", "--length", "2k", "--out", str(tmp_path / "x.jsonl")
    )
    assert_one_line_error(result, 2, "takes one task")
    assert_one_line_error(
        invoke("bench", "generate", "--task", "code_run", "--length", "2k", "--out", str(out)), 2, "code_run"
    )
    assert_one_line_error(
        invoke("bench", "generate", "--task", "passkey", "--length", "lots", "--out", str(out)), 2, "lots"
    )


def test_run_with_a_cache_twice_asks_the_server_once(tmp_path):
    from tests.conftest import final_reply, partial_reply
    from tests.fake_server import completion, fake_server, models

    document = tmp_path / "doc.txt"
    document.write_text("The pass key is 12345. Filler follows.")
    replies = [completion(partial_reply("12345", 5, info="The pass key is 12345.")), completion(final_reply("12345"))]
    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": replies}
    with fake_server(scripts) as server:
        args = ["run", "--input", str(document), "--question", "What is the pass key?", "--task-type", "retrieval"]
        args += ["--base-url", server.base_url, "--tokenizer", "tiktoken", "--cache", str(tmp_path / "replies.sqlite")]
        first = invoke(*args, "--no-progress")
        chats = sum(path == "/v1/chat/completions" for path, _ in server.requests)
        second = invoke(*args, "--no-progress")
        assert first.exit_code == second.exit_code == 0, second.output
        assert first.stdout == second.stdout and first.stdout.startswith("12345\n")
        assert chats == 2 and sum(path == "/v1/chat/completions" for path, _ in server.requests) == chats
        assert "(2 from cache)" in second.stderr


SECRET = "sk-llmxmr-test-0123456789abcdef"


def test_the_api_key_appears_nowhere_but_the_authorization_header(tmp_path, monkeypatch):
    """Results, traces, --json, summaries, prediction files, errors and tracebacks (-v) are all
    searched for the key, from the flag and from the environment."""
    from tests.conftest import final_reply, partial_reply
    from tests.fake_server import Answer, completion, fake_server, models

    monkeypatch.delenv("LLMXMR_RAISE_ERRORS")
    document = tmp_path / "doc.txt"
    document.write_text("The pass key is 12345. Filler follows.")
    data_dir = _passkey_file(tmp_path, ["12345"])
    replies = [completion(partial_reply("12345", 5, info="The pass key is 12345.")), completion(final_reply("12345"))]
    outputs = []
    with fake_server(
        {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": replies * 2}
    ) as server:
        common = ["--base-url", server.base_url, "--tokenizer", "tiktoken", "--no-progress"]
        outputs.append(
            invoke(
                "run",
                "--input",
                str(document),
                "--question",
                "What is the pass key?",
                "--api-key",
                SECRET,
                "--json",
                "--trace",
                str(tmp_path / "trace.json"),
                *common,
            )
        )
        monkeypatch.setenv("LLMXMR_API_KEY", SECRET)
        outputs.append(
            invoke(
                "bench",
                "infinitebench",
                "--task",
                "passkey",
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "ib"),
                "--json",
                *common,
            )
        )
        assert set(server.authorizations) == {f"Bearer {SECRET}"}
    refusing = {
        "/v1/models": [models("vllm", max_model_len=4096)],
        "/v1/chat/completions": [Answer(401, {"error": {"message": "bad key"}})],
    }
    with fake_server(refusing) as server:
        outputs.append(
            invoke(
                "run", "--input", str(document), "--question", "q", "--base-url", server.base_url, "-v", "--no-progress"
            )
        )
    outputs.append(
        invoke("run", "--input", str(document), "--question", "q", "--base-url", "http://127.0.0.1:9/v1", "-v")
    )
    assert [r.exit_code for r in outputs] == [0, 0, 1, 1]
    assert "refused the request (HTTP 401: bad key)" in outputs[2].output
    texts = [r.output for r in outputs] + [
        p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".txt")
    ]
    assert all(SECRET not in text for text in texts)
    assert all(SECRET[-8:] not in text for text in texts)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as handle:  # 1 GB, sparse: nothing is written, nothing could be read
        handle.truncate(2**30)
    result = invoke("run", "--input", str(huge), "--question", "q")
    assert_one_line_error(result, 2, "is 1,024 MB, over the 256 MB limit")
    small_limit = tmp_path / "limit.yaml"
    small_limit.write_text("max_document_mb: 0.001\n")
    result = invoke("run", "--input", "-", "--question", "q", "--config", str(small_limit), input=b"word " * 1000)
    assert_one_line_error(result, 2, "standard input is more than 1 KB, over the 1 KB limit")


# Settings that the chat and serve commands must not override or drop.


def _chat_state_cache_mb(tmp_path, monkeypatch, *args: str) -> int:
    """The embedded.state_cache_mb a chat session opens its client with."""
    from llmxmr import cli
    from llmxmr.clients.fake import ScriptedClient

    opened: list[int] = []
    monkeypatch.setattr(
        cli, "make_client", lambda config: opened.append(config.embedded.state_cache_mb) or ScriptedClient()
    )
    document = tmp_path / "doc.txt"
    document.write_text("A short document.", encoding="utf-8")
    result = invoke("chat", "--input", str(document), *args, input=b"")  # no question: it ends at once
    assert result.exit_code == 0, result.output
    return opened[0]


def test_chat_state_cache_flag_overrides_the_config_only_when_given(tmp_path, monkeypatch):
    config = tmp_path / "mine.yaml"
    config.write_text("embedded:\n  state_cache_mb: 256\n")
    assert _chat_state_cache_mb(tmp_path, monkeypatch, "--config", str(config)) == 256
    assert _chat_state_cache_mb(tmp_path, monkeypatch, "--config", str(config), "--state-cache-mb", "64") == 64
    config.write_text("embedded:\n  state_cache_mb: 0\n")  # off, as the config says
    assert _chat_state_cache_mb(tmp_path, monkeypatch, "--config", str(config)) == 0
    from llmxmr.cli import CHAT_STATE_CACHE_MB

    assert _chat_state_cache_mb(tmp_path, monkeypatch) == CHAT_STATE_CACHE_MB  # chat's own default


def _fake_llama_cpp_server(monkeypatch) -> dict[str, object]:
    """llama-cpp-python's server app and uvicorn, faked: the model settings the child would load
    its model with."""
    import sys
    from types import ModuleType, SimpleNamespace

    loaded: dict[str, object] = {}

    def create_app(server_settings, model_settings):
        loaded.update(vars(model_settings[0]))
        return SimpleNamespace(add_api_route=lambda path, endpoint: None)

    app = ModuleType("llama_cpp.server.app")
    app.create_app = create_app
    settings = ModuleType("llama_cpp.server.settings")
    settings.ModelSettings = SimpleNamespace
    settings.ServerSettings = SimpleNamespace
    uvicorn = ModuleType("uvicorn")
    uvicorn.run = lambda *args, **kwargs: None
    modules = {"llama_cpp": ModuleType("llama_cpp"), "llama_cpp.server": ModuleType("llama_cpp.server")}
    modules.update({"llama_cpp.server.app": app, "llama_cpp.server.settings": settings, "uvicorn": uvicorn})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return loaded


@pytest.mark.parametrize(("configured", "threads"), [("embedded:\n  threads: 3\n", 3), ("", None)])
def test_serve_local_loads_the_model_with_the_configured_threads(tmp_path, monkeypatch, configured, threads):
    """embedded.threads reaches the child's llama.cpp model; unset, one thread per core."""
    import os
    import shlex

    from llmxmr import local_server

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    config = tmp_path / "mine.yaml"
    config.write_text(configured)
    result = invoke(
        "serve", "--local", "--model", str(model), "--config", str(config), "--extra-buffers", "on", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    command = shlex.split(result.stdout)
    assert command[1:3] == ["-m", "llmxmr.local_server"]
    loaded = _fake_llama_cpp_server(monkeypatch)
    local_server.serve_from_command_line(command[3:])  # the child, given the arguments serve starts it with
    assert loaded["n_threads"] == (threads or os.cpu_count())
