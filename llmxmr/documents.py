"""Reading the user's document: text only, in the encodings people actually have."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path

from .errors import UsageError

# A byte-order mark says which Unicode encoding a file is in; without one, UTF-8 it must be.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_document(source: str) -> str:
    """The text of a file path, or of standard input for ``-``."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        path = Path(source)
        if path.is_dir():
            raise UsageError(f"{source} is a directory, not a text file")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"input file not found: {source}") from None
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
        name = source
    return decode_text(data, name)


def decode_text(data: bytes, name: str) -> str:
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data[:8192]:
        raise UsageError(f"{name} looks like a binary file, not text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{name} is not valid {encoding.upper()} text (bad byte at offset {exc.start}); "
            "convert it to UTF-8"
        ) from None
    if not text.strip():
        raise UsageError(f"{name} is empty")
    return text
