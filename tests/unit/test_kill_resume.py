"""A batch run killed with SIGKILL at random moments, restarted each time, ends with exactly the
predictions an uninterrupted run makes (known from the fake server's rule, so no reference run is
needed): no id missing, none twice, no half-written line."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import default_sigint, final_reply, partial_reply
from tests.fake_server import Answer, completion, fake_server, models

# Real llmxmr processes killed and resumed: end to end, and slow, so out of the fast lane.
pytestmark = pytest.mark.integration

EXAMPLES = 60


def respond(body: dict) -> Answer:
    """Deterministic in the request, a little slow, like a server."""
    time.sleep(0.03)
    text = body["messages"][-1]["content"]
    schema = body["response_format"]["json_schema"]["name"]
    if schema == "MapOutput":
        keys = re.findall(r"The pass key is (\d+)", text.rsplit("<document_part>", 1)[1])
        if not keys:
            return completion(partial_reply(None, 0.0, info="", rationale=""))
        return completion(partial_reply(keys[0], 5.0, info=f"The pass key is {keys[0]}."))
    keys = re.findall(r"Answer: (\d+)", text)
    return completion(final_reply(keys[0] if keys else "none"))


def write_data(folder: Path) -> None:
    folder.mkdir()
    lines = [
        {
            "id": i,
            "context": f"Filler. The pass key is {10000 + i}. Filler.",
            "input": "What is the pass key?",
            "answer": [str(10000 + i)],
            "options": [],
        }
        for i in range(EXAMPLES)
    ]
    (folder / "passkey.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def command(base_url: str, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "llmxmr", "bench", "infinitebench", "--task", "passkey", "--data-dir", str(data),
        "--out", str(out), "--base-url", base_url, "--tokenizer", "tiktoken", "--examples-in-flight", "4",
        "--no-progress",
    ]  # fmt: skip


def predictions(out: Path) -> list[tuple[int, str]]:
    text = (out / "preds_passkey.jsonl").read_text()
    assert text.endswith("\n")  # no half-written last line
    return [(row["id"], row["prediction"]) for row in map(json.loads, text.splitlines())]


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    write_data(data)
    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": respond}
    rng = random.Random(0)
    with fake_server(scripts) as server:
        out = tmp_path / "killed"
        preds = out / "preds_passkey.jsonl"
        kills = 0
        while kills < 5:
            before = len(preds.read_text().splitlines()) if preds.exists() else 0
            target = before + rng.randint(3, 12)  # let a few more examples finish, then kill
            process = subprocess.Popen(
                command(server.base_url, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while process.poll() is None and (not preds.exists() or preds.read_text().count("\n") < target):
                time.sleep(0.005)
            if process.poll() is not None:
                break
            time.sleep(rng.uniform(0, 0.05))  # anywhere between two writes, or in one
            process.kill()
            process.wait()
            kills += 1
        finished = subprocess.run(command(server.base_url, data, out), capture_output=True, timeout=300)
        assert finished.returncode == 0, finished.stderr.decode()
    assert kills >= 3  # the kills did land mid-run
    resumed = predictions(out)
    assert len(resumed) == len({i for i, _ in resumed}) == EXAMPLES
    assert sorted(resumed) == [(i, str(10000 + i)) for i in range(EXAMPLES)]  # what the server's rule answers


def test_ctrl_c_stops_cleanly_keeps_finished_work_and_says_how_to_resume(tmp_path):
    import signal

    data = tmp_path / "data"
    write_data(data)
    out = tmp_path / "out"
    preds = out / "preds_passkey.jsonl"
    scripts = {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": respond}
    with fake_server(scripts) as server:
        process = subprocess.Popen(
            command(server.base_url, data, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=default_sigint,  # noqa: PLW1509 (one system call)
        )
        while process.poll() is None and (not preds.exists() or preds.read_text().count("\n") < 5):
            time.sleep(0.005)
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        # In-flight calls are cancelled, not left to run: no new request after the interrupt
        # (a little slack for one already on the wire).
        assert not [t for t in server.arrivals if t > interrupted_at + 0.2]
        assert process.returncode == 130, stderr.decode()
        assert "rerun the same command to resume" in stderr.decode()
        assert "Traceback" not in stderr.decode()
        kept = predictions(out)
        assert 5 <= len(kept) < EXAMPLES
        finished = subprocess.run(command(server.base_url, data, out), capture_output=True, timeout=300)
        assert finished.returncode == 0, finished.stderr.decode()
    assert sorted(predictions(out)) == [(i, str(10000 + i)) for i in range(EXAMPLES)]


def test_a_second_run_on_the_same_folder_is_refused_and_nothing_is_written_twice(tmp_path):
    """Measured before the lock: two overlapping runs on one folder wrote every finished example
    twice. The second is refused in one line that names the folder and the first run's process."""
    import threading

    data = tmp_path / "data"
    write_data(data)
    out = tmp_path / "out"
    opened = threading.Event()  # the first run holds its examples' calls until the second is refused

    def held(body: dict) -> Answer:
        opened.wait(60)
        return respond(body)

    with fake_server({"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": held}) as server:
        first = subprocess.Popen(command(server.base_url, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while first.poll() is None and not server.arrivals:  # the lock is taken before any request
            time.sleep(0.005)
        second = subprocess.run(command(server.base_url, data, out), capture_output=True, timeout=120)
        opened.set()
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr.decode()
    assert second.returncode == 2
    assert second.stderr.decode().splitlines() == [
        f"error: {out} is being written by process {first.pid}; wait for it to end or use another --out"
    ]
    written = predictions(out)
    assert len(written) == len({i for i, _ in written}) == EXAMPLES


def respond_niah(body: dict) -> Answer:
    time.sleep(0.02)
    text = body["messages"][-1]["content"]
    if body["response_format"]["json_schema"]["name"] == "MapOutput":
        if "XYZZY" in text.rsplit("<document_part>", 1)[1]:
            return completion(partial_reply("XYZZY", 5.0, info="The magic word is XYZZY."))
        return completion(partial_reply(None, 0.0, info="", rationale=""))
    return completion(final_reply("XYZZY" if "XYZZY" in text else "none"))


def niah_command(base_url: str, haystack: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "llmxmr", "bench", "niah", "--haystack", str(haystack), "--lengths", "300:900:4",
        "--depths", "0:100:6", "--buffer", "50", "--needle", "The magic word is XYZZY.", "--question",
        "What is the magic word?", "--answer", "XYZZY", "--base-url", base_url, "--tokenizer", "tiktoken",
        "--chunk-tokens", "100", "--cells-in-flight", "3", "--out", str(out), "--no-progress",
    ]  # fmt: skip


GRID = sorted((length, depth) for length in (300, 500, 700, 900) for depth in (0, 20, 40, 60, 80, 100))


def cells(out: Path) -> dict[str, tuple]:
    found = {}
    for path in (out / "cells").glob("*.json"):
        cell = json.loads(path.read_text())  # whole files only: each parses
        found[path.name] = (cell["context_length"], cell["depth_percent"], cell["response"], cell["score"])
    return found


def test_sigkill_during_a_niah_grid_loses_no_cell(tmp_path):
    haystack = tmp_path / "hay.txt"
    haystack.write_text(" ".join(f"Sentence number {i} is plain filler." for i in range(400)))
    rng = random.Random(1)
    with fake_server(
        {"/v1/models": [models("vllm", max_model_len=4096)], "/v1/chat/completions": respond_niah}
    ) as server:
        out = tmp_path / "killed"
        kills = 0
        while kills < 4:
            target = len(list((out / "cells").glob("*.json"))) + rng.randint(2, 5) if (out / "cells").exists() else 2
            process = subprocess.Popen(
                niah_command(server.base_url, haystack, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while process.poll() is None and (
                not (out / "cells").exists() or len(list((out / "cells").glob("*.json"))) < target
            ):
                time.sleep(0.005)
            if process.poll() is not None:
                break
            time.sleep(rng.uniform(0, 0.05))
            process.kill()
            process.wait()
            kills += 1
        finished = subprocess.run(niah_command(server.base_url, haystack, out), capture_output=True, timeout=300)
        assert finished.returncode == 0, finished.stderr.decode()
    assert kills >= 2
    # 4 lengths by 6 depths, each cell found: the server's rule finds the needle wherever it is.
    assert sorted((length, depth) for length, depth, _, _ in cells(out).values()) == GRID
    assert {(response, score) for _, _, response, score in cells(out).values()} == {("XYZZY", 1.0)}
