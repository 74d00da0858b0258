"""InfiniteBench (Zhang et al., 2024; github.com/OpenBMB/InfiniteBench): its 12 tasks and their scorers."""

from __future__ import annotations

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
    "TASKS",
    "check_scorer",
    "check_task",
    "load_predictions",
    "score_example",
    "score_file",
    "score_predictions",
]
