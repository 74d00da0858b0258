"""InfiniteBench examples from local JSONL files or from the Hugging Face Hub.

The raw JSON is read, never the dataset card's feature types (which turn numeric labels into
strings and drop the nesting of Math.Calc's labels): each line is ``{id, context, input, answer,
options}``, with ``answer`` a list (a bare label is wrapped). Offline, point ``--data-dir`` at a
folder holding ``<task>.jsonl`` files (the Hub's file names) or ``--data`` at one file; online,
``--hf`` downloads ``<task>.jsonl`` from the dataset repository at a given revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ...errors import MissingExtraError, UsageError
from ...executor import write_atomically
from .tasks import Example

HF_DATASET = "xinrongzhang2022/InfiniteBench"
# Where a batch run records the dataset commit it read, so that resuming reads the same one.
REVISION_FILE = "hf_revision.txt"


class DataSource(BaseModel):
    """Where a run's examples come from: exactly one of a folder, a file, or a Hub commit."""

    data_dir: str | None = None
    data_file: str | None = None
    hf_revision: str | None = None

    def path_for(self, task: str) -> Path:
        if self.hf_revision:
            return download_task_file(task, self.hf_revision)
        if self.data_dir:
            return task_file(task, self.data_dir)
        if self.data_file:
            return Path(self.data_file)
        raise UsageError("no data source: give --data-dir, --data or --hf")


def read_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    """The first ``limit`` examples of a JSONL file (all when None)."""
    examples: list[Example] = []
    for example in _iter_examples(Path(path)):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(example)
    return examples


def task_file(task: str, data_dir: str | Path) -> Path:
    path = Path(data_dir) / f"{task}.jsonl"
    if not path.is_file():
        raise UsageError(f"no {task}.jsonl in {data_dir} (the Hub's file names are expected)")
    return path


def download_task_file(task: str, revision: str) -> Path:
    """``<task>.jsonl`` from the Hub at ``revision`` (cached by huggingface_hub)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise MissingExtraError("huggingface_hub", "hf", "--hf") from exc
    try:
        return Path(hf_hub_download(HF_DATASET, f"{task}.jsonl", repo_type="dataset", revision=revision))
    except Exception as exc:  # network, missing file or revision: one line, whatever the cause
        raise UsageError(f"cannot download {task}.jsonl from {HF_DATASET}@{revision}: {exc}") from exc


def pinned_revision(out_dir: str | Path, requested: str | None) -> str:
    """The dataset commit for a run in ``out_dir``: the one an earlier run there resolved (when
    ``requested`` is unset, or names that commit or the branch or tag it came from), or
    ``requested`` (default ``main``) resolved to a commit now and recorded."""
    record = Path(out_dir) / REVISION_FILE
    if record.exists():
        try:
            name, commit = record.read_text(encoding="utf-8").split()
        except ValueError:
            raise UsageError(
                f"{record} is damaged: expected '<revision> <commit>'; remove it to resolve again"
            ) from None
        if requested in (None, name, commit):
            return commit
        raise UsageError(f"{out_dir} holds predictions for {HF_DATASET}@{commit} ({name}); use another --out")
    name = requested or "main"
    commit = resolve_hf_revision(name)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(record, f"{name} {commit}\n")
    return commit


def resolve_hf_revision(revision: str) -> str:
    """The commit a branch or tag of the dataset points to now, so that a run (and its resumption)
    reads one fixed version of the data."""
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise MissingExtraError("huggingface_hub", "hf", "--hf") from exc
    try:
        sha = HfApi().dataset_info(HF_DATASET, revision=revision).sha
    except Exception as exc:
        raise UsageError(f"cannot reach {HF_DATASET} on the Hugging Face Hub: {exc}") from exc
    if not sha:
        raise UsageError(f"the Hub gave no commit for {HF_DATASET}@{revision}")
    return sha


def _iter_examples(path: Path) -> Iterator[Example]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield _example(line, number, f"{path}:{number}")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text") from exc


def _example(line: str, number: int, where: str) -> Example:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not a JSON object ({exc.msg})") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: not a JSON object")
    raw.setdefault("id", number - 1)
    if "answer" in raw and not isinstance(raw["answer"], list):
        raw["answer"] = [raw["answer"]]
    try:
        return Example.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{where}: field {field!r}: {first['msg']}") from exc
