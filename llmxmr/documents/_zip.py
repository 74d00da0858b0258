"""Opening EPUB and DOCX archives without letting a zip bomb through.

Everything is checked from the archive's directory before a byte is decompressed: the member count
(read from the end record, before ``zipfile`` builds an object per member) and the sum of the
declared uncompressed sizes. A member whose stream inflates past its declared size is caught by a
bounded read, so what the directory promised is what memory holds at most.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from types import TracebackType

from ..errors import UsageError
from ._read import LIMIT_HINT, RawDocument, size_label

MAX_MEMBERS = 10_000  # a novel's EPUB has a few hundred; a report's DOCX a few dozen
MAX_UNPACKED = 2**30  # whatever the limit: the XML of a DOCX is parsed whole in memory
UNPACKED_PER_LIMIT = 4  # unpacked bytes allowed per byte of max_bytes (XML and markup around the text)
_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_MAX_REASON = 160


def kind_by_suffix(raw: RawDocument) -> str:
    """What a message calls an archive before its content says (a damaged one): by its extension."""
    return {".epub": "EPUB", ".docx": "DOCX"}.get(raw.suffix, "zip archive")


def unpacked_cap(max_bytes: int | None) -> int:
    return MAX_UNPACKED if max_bytes is None else min(MAX_UNPACKED, UNPACKED_PER_LIMIT * max_bytes)


class Archive:
    """An EPUB or DOCX opened once its directory shows a bounded member count and unpacked size;
    ``kind`` ("EPUB", "DOCX") is what its error messages call it."""

    def __init__(self, raw: RawDocument, kind: str, max_bytes: int | None) -> None:
        self.raw, self.kind = raw, kind
        members = _declared_members(raw.data)
        if members is None:
            raise self.damaged("no zip directory at its end: truncated?")
        if members > MAX_MEMBERS:
            raise UsageError(
                f"{raw.name} holds {members:,} files, over the limit of {MAX_MEMBERS:,} for an EPUB or DOCX: "
                "it is not a document llmxmr reads"
            )
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(raw.data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
            raise self.damaged(str(exc)) from None
        unpacked, cap = sum(info.file_size for info in self.zip.infolist()), unpacked_cap(max_bytes)
        if unpacked > cap:
            self.zip.close()
            raise UsageError(
                f"{raw.name} would unpack to {size_label(unpacked)}, over the {size_label(cap)} limit for an EPUB or "
                f"DOCX ({UNPACKED_PER_LIMIT}x the document limit, {LIMIT_HINT}): a zip bomb?"
            )

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.zip.close()

    def names(self) -> list[str]:
        return self.zip.namelist()

    def read(self, member: str, limit: int | None = None) -> bytes:
        """A member's bytes, no more than its declared size (or ``limit``, when smaller)."""
        try:
            info = self.zip.getinfo(member)
        except KeyError:
            raise self.damaged(f"{member} is missing") from None
        size = info.file_size if limit is None else min(limit, info.file_size)
        try:
            with self.zip.open(info) as stream:
                data = stream.read(size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise self.damaged(f"{member}: {exc}") from None
        if len(data) > info.file_size:  # zipfile stops at the declared size itself; this keeps it so
            raise self.damaged(f"{member} inflates past its declared size")
        return data[:size]

    def damaged(self, reason: str) -> UsageError:
        if len(reason) > _MAX_REASON:  # it quotes the file's own names, which may be anything
            reason = reason[: _MAX_REASON - 1] + "…"
        return UsageError(f"{self.raw.name} is not a readable {self.kind} ({reason}): save or download it again")


def _declared_members(data: bytes) -> int | None:
    """The member count of the archive's end record (None without one). A count that does not fit
    the record (0xFFFF, ZIP64) is over the cap anyway."""
    tail_start = max(0, len(data) - _END_RECORD_SIZE - _MAX_COMMENT)
    at = data.rfind(_END_RECORD, tail_start)
    if at < 0 or len(data) - at < _END_RECORD_SIZE:
        return None
    (members,) = struct.unpack_from("<H", data, at + 10)
    return members
