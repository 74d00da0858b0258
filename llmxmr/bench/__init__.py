"""Benchmarks for llmxmr: data, scoring and batch runs (InfiniteBench under ``bench.infinitebench``)."""

from typing import Literal

# How a benchmark item is answered: map-reduce, or one direct call with the middle of the text cut.
Method = Literal["mr", "direct"]
