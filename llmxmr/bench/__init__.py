"""Benchmarks for llmxmr: data, scoring and batch runs (InfiniteBench under ``bench.infinitebench``)."""
