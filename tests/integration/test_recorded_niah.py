"""A small needle-in-a-haystack grid end to end against the bundled model's recorded replies."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmxmr.cli import main

from ..conftest import SERVER_N_CTX
from ..haystacks import FILLER, PASS_KEY

pytestmark = pytest.mark.integration


def test_small_grid_over_http_then_resume(model_server, tmp_path):
    haystack = tmp_path / "filler.txt"
    haystack.write_text(FILLER * 400, encoding="utf-8")
    out = tmp_path / "grid"
    args = [
        "bench", "niah", "--haystack", str(haystack), "--lengths", "2k,3k", "--depths", "25,75",
        "--needle", f"The pass key is {PASS_KEY}. Remember it. {PASS_KEY} is the pass key.",
        "--question", "What is the pass key?", "--answer", PASS_KEY,
        "--base-url", model_server, "--context-window", str(SERVER_N_CTX), "--chunk-tokens", "2048",
        # One cell at a time: the server answers one request at a time, and a second cell's calls
        # would only make the first one's token counting wait behind them.
        "--cells-in-flight", "1", "--out", str(out), "--no-progress", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["cells"] == 4 and summary["calls"] >= 8  # a map and a reduce per cell at least
    cells = [json.loads(path.read_text()) for path in sorted((out / "cells").glob("*.json"))]
    assert {(c["context_length"], c["depth_percent"]) for c in cells} == {
        (2048, 25),
        (2048, 75),
        (3072, 25),
        (3072, 75),
    }
    assert all(c["model"].startswith("llama-cpp-python at ") for c in cells)
    # The 135M model decodes greedily, so a cell scores the same each run on one CPU; at least half
    # must be found, so one flipped cell on another CPU does not turn the harness test red.
    assert summary["mean_score"] >= 0.5, [c["response"] for c in cells]
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "grid.csv").exists()

    stamps = {path.name: path.stat().st_mtime_ns for path in (out / "cells").glob("*.json")}
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert {path.name: path.stat().st_mtime_ns for path in (out / "cells").glob("*.json")} == stamps
    assert json.loads(again.stdout)["summary"] == summary
