"""Where the package's prompts and configs are, installed or in a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """``prompts`` or ``configs``: in the installed package's ``data/``, else at the top of the
    source checkout."""
    installed = Path(str(resources.files("llmxmr"))) / "data" / name
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / name
