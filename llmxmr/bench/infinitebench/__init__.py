"""InfiniteBench (Zhang et al., 2024; github.com/OpenBMB/InfiniteBench): its 12 tasks, their scorers,
synthetic data, and batch runs (``runner``)."""

from __future__ import annotations

from .generate import SYNTHETIC_TASKS, generate, parse_length, write_jsonl
from .scorers import (
    SCORERS,
    TASKS,
    check_scorer,
    check_task,
    load_predictions,
    score_example,
    score_file,
    score_predictions,
)

__all__ = [
    "SCORERS",
    "SYNTHETIC_TASKS",
    "TASKS",
    "check_scorer",
    "check_task",
    "generate",
    "load_predictions",
    "parse_length",
    "score_example",
    "score_file",
    "score_predictions",
    "write_jsonl",
]
