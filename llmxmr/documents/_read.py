"""Getting a document's bytes (a path, standard input, or bytes) within the size limit, decoding
text in the encodings people actually have, and the checks every format shares."""

from __future__ import annotations

import codecs
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from ..errors import MissingExtraError, UsageError

Source = str | os.PathLike[str] | bytes
STDIN = "-"
BYTES_NAME = "bytes input"
# The optional dependencies of every format but text and Markdown.
EXTRA = "docs"
LIMIT_HINT = "max_document_mb in a --config file"

# A byte-order mark says which Unicode encoding a file is in; without one, UTF-8 it must be.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class RawDocument:
    """A document's bytes, and what messages call it. ``suffix`` (lower case, ".pdf") only breaks
    ties that content cannot: Markdown, and which kind a damaged zip archive was meant to be."""

    data: bytes
    name: str
    suffix: str = ""


@dataclass(frozen=True)
class ReadOptions:
    max_bytes: int | None = None  # for the file and for the text extracted from it
    password: str | None = None  # for an encrypted PDF


def read_source(source: Source, max_bytes: int | None) -> RawDocument:
    """The bytes of a file path, of standard input for ``-``, or the bytes given. A source over
    ``max_bytes`` is refused before it is read (a file) or as soon as the limit is passed (a
    stream), so memory stays bounded whatever is thrown at it."""
    if isinstance(source, bytes):
        if max_bytes is not None and len(source) > max_bytes:
            raise UsageError(too_large(BYTES_NAME, len(source), max_bytes))
        return RawDocument(data=source, name=BYTES_NAME)
    name = os.fspath(source)
    if name == STDIN:
        return RawDocument(data=_read_capped(sys.stdin.buffer, max_bytes, "standard input"), name="standard input")
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"{name} is a directory, not a text file")
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise UsageError(too_large(name, size, max_bytes))
        with path.open("rb") as handle:
            data = _read_capped(handle, max_bytes, name)
    except FileNotFoundError:
        raise UsageError(f"input file not found: {name}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    return RawDocument(data=data, name=name, suffix=path.suffix.lower())


def _read_capped(stream: BinaryIO, max_bytes: int | None, name: str) -> bytes:
    data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise UsageError(too_large(name, len(data), max_bytes, at_least=True))
    return data


def too_large(name: str, size: int, limit: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"{name} is {more}{size_label(size)}, over the {size_label(limit)} limit ({LIMIT_HINT})"


def size_label(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.0f} KB"


def decode_text(data: bytes, name: str) -> str:
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data[:8192]:
        raise UsageError(f"{name} looks like a binary file, not text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{name} is not valid {encoding.upper()} text (bad byte at offset {exc.start}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise UsageError(f"{name} is empty")
    return text


def check_extracted(text: str, name: str, what: str, max_bytes: int | None) -> None:
    """The text extracted from a PDF, HTML, EPUB or DOCX must hold something, and stay within the
    limit too: a small archive can unpack to much more text than its size."""
    if not text.strip():
        raise UsageError(f"{name} holds no text to read ({what}): check that it is the document you meant")
    # UTF-8 takes at most 4 bytes a character: encode only when the character count cannot decide.
    if max_bytes is not None and 4 * len(text) > max_bytes:
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise UsageError(
                f"the text of {name} is {size_label(size)}, over the {size_label(max_bytes)} limit ({LIMIT_HINT})"
            )


def import_extra(module: str, package: str, what: str) -> ModuleType:
    """An optional dependency, imported when a document needs it; missing, a one-line error."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, EXTRA, f"reading {what}") from None
