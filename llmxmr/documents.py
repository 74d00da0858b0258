"""Reading the user's document: text only, in the encodings people actually have."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError

# A byte-order mark says which Unicode encoding a file is in; without one, UTF-8 it must be.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_document(source: str, max_bytes: int | None = None) -> str:
    """The text of a file path, or of standard input for ``-``. A source over ``max_bytes`` is
    refused before it is read (a file) or as soon as the limit is passed (a stream), so memory
    stays bounded whatever is thrown at it."""
    if source == "-":
        data = _read_capped(sys.stdin.buffer, max_bytes, "standard input")
        name = "standard input"
    else:
        path = Path(source)
        if path.is_dir():
            raise UsageError(f"{source} is a directory, not a text file")
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise UsageError(_too_large(source, size, max_bytes))
            with path.open("rb") as handle:
                data = _read_capped(handle, max_bytes, source)
        except FileNotFoundError:
            raise UsageError(f"input file not found: {source}") from None
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
        name = source
    return decode_text(data, name)


def _read_capped(stream: BinaryIO, max_bytes: int | None, name: str) -> bytes:
    data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise UsageError(_too_large(name, len(data), max_bytes, at_least=True))
    return data


def _too_large(name: str, size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"{name} is {more}{_size(size)}, over the {_size(limit)} limit (max_document_mb in a --config file)"


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} KB"


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
