"""What a needle-in-a-haystack run shows: the score grid as a heatmap, a CSV, and one summary line.

The heatmap follows the reference test's picture: depth down the y axis, context length along the
x axis, the mean score of each cell, on a red -> yellow -> green scale fixed from 0 to the highest
possible score (1 for recall, 10 with the judge), so two pictures compare at a glance.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from ...errors import MissingExtraError
from ...executor import write_atomically
from .runner import CellResult

# The reference test's colours: red, yellow, green.
_COLOURS = ("#F0496E", "#EBB839", "#0CD79F")


class Grid(BaseModel):
    lengths: list[int]
    depths: list[float]
    # scores[i][j]: mean score at depths[i], lengths[j]; None where no cell finished.
    scores: list[list[float | None]]


class Summary(BaseModel):
    mean_score: float
    max_score: float
    cells: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cell_time_s: float  # summed over cells (they overlap when run concurrently)


def score_grid(cells: list[CellResult]) -> Grid:
    by_cell: dict[tuple[float, int], list[float]] = defaultdict(list)
    for cell in cells:
        by_cell[(cell.depth_percent, cell.context_length)].append(cell.score)
    lengths = sorted({length for _, length in by_cell})
    depths = sorted({depth for depth, _ in by_cell})
    scores = [
        [sum(by_cell[(d, n)]) / len(by_cell[(d, n)]) if by_cell.get((d, n)) else None for n in lengths] for d in depths
    ]
    return Grid(lengths=lengths, depths=depths, scores=scores)


def summarize(cells: list[CellResult], max_score: float) -> Summary:
    return Summary(
        mean_score=round(sum(c.score for c in cells) / len(cells), 4) if cells else 0.0,
        max_score=max_score,
        cells=len(cells),
        calls=sum(c.calls for c in cells),
        prompt_tokens=sum(c.prompt_tokens for c in cells),
        completion_tokens=sum(c.completion_tokens for c in cells),
        cell_time_s=round(sum(c.duration_s for c in cells), 3),
    )


def summary_line(summary: Summary, wall_time_s: float | None = None) -> str:
    wall = f" · {wall_time_s:.1f} s wall" if wall_time_s is not None else ""
    return (
        f"mean score {summary.mean_score:.3f} of {summary.max_score:g} · {summary.cells} cells · "
        f"{summary.calls} calls · {summary.prompt_tokens + summary.completion_tokens:,} tokens · "
        f"{summary.cell_time_s:.1f} s in cells{wall}"
    )


def write_csv(grid: Grid, path: Path) -> None:
    """Rows are depths, columns lengths, as in the picture; empty where no cell finished. Whole or
    not at all: a run killed while writing leaves the previous file."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["depth_percent", *grid.lengths])
    for depth, row in zip(grid.depths, grid.scores, strict=True):
        writer.writerow([f"{depth:g}", *("" if s is None else f"{s:.4f}" for s in row)])
    write_atomically(path, text.getvalue())


def draw_heatmap(grid: Grid, path: Path, title: str, max_score: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "bench", "the heatmap") from exc
    values = [[float("nan") if s is None else s for s in row] for row in grid.scores]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(grid.lengths) + 3), max(4.0, 0.45 * len(grid.depths) + 2)))
    image = axes.imshow(
        values,
        cmap=LinearSegmentedColormap.from_list("niah", _COLOURS),
        vmin=0,
        vmax=max_score,
        aspect="auto",
    )
    for i, row in enumerate(grid.scores):
        for j, score in enumerate(row):
            if score is not None:
                axes.text(j, i, f"{score:.2g}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(grid.lengths)), [_tokens(n) for n in grid.lengths], rotation=45)
    axes.set_yticks(range(len(grid.depths)), [f"{d:g}" for d in grid.depths])
    axes.set_xlabel("Context length (tokens)")
    axes.set_ylabel("Depth (%)")
    axes.set_title(title, fontsize=10, wrap=True)  # wrapped to the figure: model names run long
    figure.colorbar(image, ax=axes, label="Score")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _tokens(n: int) -> str:
    return f"{n / 1024:g}k" if n % 1024 == 0 else f"{n:,}"
