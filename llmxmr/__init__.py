"""llmxmr: answer questions about documents far longer than a model's context window, by
structured map-reduce prompting (LLM x MapReduce)."""

from importlib.metadata import PackageNotFoundError, version

from .config import PipelineConfig
from .documents import Document, read_document
from .pipeline import MapReducePipeline, PipelineResult

try:
    __version__ = version("llmxmr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Document", "MapReducePipeline", "PipelineConfig", "PipelineResult", "__version__", "read_document"]
