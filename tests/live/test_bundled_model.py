"""The live lane: the bundled SmolLM2-135M really running on this machine, twice, in six model
calls. Once through ``llmxmr serve --local`` over HTTP, once in-process through the installed
``llmxmr`` script on a PDF: each loads llama.cpp the way this CPU allows (the AMX decision of
``llama_safety``), reads two chunks, and merges them. What the model answers is evidence of its
quality, which ``benchmarks/`` measures; here every call must reach the model and come back,
counted and traced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmxmr import MapReducePipeline, PipelineConfig

from ..haystacks import FILLER, TASK, haystack, key_line

# One worker runs the lane: two llama.cpp processes on two cores spin-wait each other.
pytestmark = [pytest.mark.live, pytest.mark.xdist_group("bundled-model")]

TWO_CHUNKS_OF_FILLER = 90  # lines of about 23 tokens: past one 2,048-token chunk, within two


def test_serve_local_reads_two_chunks_over_http(llama_server):
    # No llm.context_window: serve --local reports its window (an unknown one is a ConfigError).
    config = PipelineConfig.load(
        task_type="retrieval",
        **{"llm.base_url": llama_server, "chunking.chunk_tokens": 2048},
    )
    document = haystack(repeats=TWO_CHUNKS_OF_FILLER, depth=0.5)
    result = MapReducePipeline(config).run(document, "What is the pass key?")
    assert len(result.chunks) == 2
    assert result.model.startswith("llama-cpp-python at ") and result.model_profile == "smollm2-135m"
    stages = [call.stage for call in result.trace.calls]
    assert stages.count("map") == 2
    # Every call reached the model and it decoded a reply (one it could not hold to its schema
    # would still count tokens: that is the model's answer, not a broken path).
    assert all(call.prompt_tokens > 0 and call.completion_tokens > 0 for call in result.trace.calls)
    assert not [call.error for call in result.failed_calls if call.error_kind == "transport"]
    assert result.trace.totals.prompt_tokens > 2048  # the server counted both chunks


def test_the_installed_script_reads_a_pdf_on_the_embedded_model(tmp_path):
    """What ``pip install .`` gives a user, prompts and configs included, run from outside the
    checkout on the embedded default."""
    pytest.importorskip("llama_cpp", reason="the 'local' extra is not installed")
    pytest.importorskip("pypdfium2", reason="the 'docs' extra is not installed")
    from ..unit.document_fixtures import pdf_bytes

    filler = [FILLER.strip()] * (TWO_CHUNKS_OF_FILLER // 3)
    pages = ["\n".join([TASK.strip(), *filler]), "\n".join([*filler, key_line().strip()]), "\n".join(filler)]
    document = tmp_path / "report.pdf"
    document.write_bytes(pdf_bytes(pages))
    trace = tmp_path / "trace.json"
    script = Path(sys.executable).parent / "llmxmr"
    completed = subprocess.run(
        [str(script), "run", "--input", str(document), "--question", "What is the pass key?",
         "--task-type", "retrieval", "--json", "--trace", str(trace)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["model"].startswith("embedded llama.cpp model SmolLM2") and len(result["chunks"]) == 2
    calls = json.loads(trace.read_text())["trace"]["calls"]
    assert [call["stage"] for call in calls].count("map") == 2
    assert all(call["prompt_tokens"] > 0 and call["completion_tokens"] > 0 for call in calls)
    assert not [call["error"] for call in result["failed_calls"] if call["error_kind"] == "transport"]
    assert all(citation["page"] is not None for citation in result["citations"])  # PDF citations name pages
