"""A batch run killed with SIGKILL at random moments, restarted each time, ends with exactly the
predictions of an uninterrupted run: no id missing, none twice, no half-written line."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import final_reply, partial_reply
from tests.fake_server import Answer, completion, fake_server, models

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
        {"id": i, "context": f"Filler. The pass key is {10000 + i}. Filler.", "input": "What is the pass key?", "answer": [str(10000 + i)], "options": []}
        for i in range(EXAMPLES)
    ]
    (folder / "passkey.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def command(base_url: str, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "llmxmr", "bench", "infinitebench", "--task", "passkey", "--data-dir", str(data),
        "--out", str(out), "--base-url", base_url, "--tokenizer", "tiktoken", "--examples-in-flight", "4", "--no-progress",
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
        uninterrupted = subprocess.run(command(server.base_url, data, tmp_path / "whole"), capture_output=True, timeout=300)
        assert uninterrupted.returncode == 0, uninterrupted.stderr.decode()
        out = tmp_path / "killed"
        preds = out / "preds_passkey.jsonl"
        kills = 0
        while kills < 5:
            before = len(preds.read_text().splitlines()) if preds.exists() else 0
            target = before + rng.randint(3, 12)  # let a few more examples finish, then kill
            process = subprocess.Popen(command(server.base_url, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    assert sorted(resumed) == sorted(predictions(tmp_path / "whole"))
    assert all(prediction == str(10000 + i) for i, prediction in resumed)
