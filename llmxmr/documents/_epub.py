"""EPUB with ``zipfile`` (not ebooklib, which is AGPL): META-INF/container.xml names the package
(OPF), whose spine lists the chapters' XHTML in reading order; each goes through the HTML
extractor. Sections are the book's own headings, chained across chapters."""

from __future__ import annotations

import codecs
import posixpath
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import UsageError
from ._detect import EPUB_CONTAINER
from ._html import HTML, blocks_of, main_text
from ._model import Block, Document, DocumentBuilder
from ._read import RawDocument, ReadOptions, import_extra
from ._zip import Archive

ENCRYPTION = "META-INF/encryption.xml"
CHAPTER_TYPES = frozenset({"application/xhtml+xml", "text/html"})
# Font obfuscation (IDPF, Adobe) hides fonts, not text; any other encryption of a chapter is DRM.
FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
# A chapter is the book's own text, not a web page: trafilatura's cut is kept only if it keeps at
# least this share of the chapter's words and every heading (it folds short chapters into one
# paragraph, headings and all); otherwise the whole chapter is read.
KEEP_WORDS = 0.9
_XML_ENCODING = re.compile(rb"""<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def read_epub(raw: RawDocument, options: ReadOptions) -> Document:
    import_extra("trafilatura", "trafilatura", f"{raw.name} (EPUB)")
    with Archive(raw, "EPUB", options.max_bytes) as archive:
        spine = _spine(archive)
        _refuse_drm(archive, spine)
        builder = DocumentBuilder()
        for member in spine:
            builder.add(chapter_blocks(archive.read(member)))
    return builder.build(raw.name, "epub")


def chapter_blocks(data: bytes) -> list[Block]:
    tree = _parse_xhtml(data)
    whole = [] if tree is None else blocks_of(tree, HTML)
    extracted = main_text(data) if whole else []
    return extracted if _keeps(extracted, whole) else whole


def _keeps(extracted: list[Block], whole: list[Block]) -> bool:
    def words(blocks: list[Block]) -> int:
        return sum(len(block.text.split()) for block in blocks)

    def headings(blocks: list[Block]) -> int:
        return sum(1 for block in blocks if block.level)

    return words(extracted) >= KEEP_WORDS * words(whole) and headings(extracted) >= headings(whole)


def _parse_xhtml(data: bytes) -> Any:
    """XHTML parsed leniently, as HTML (entities such as &nbsp; and sloppy markup read as a browser
    would), in the encoding its XML declaration names: UTF-8 unless it says otherwise. None for a
    chapter with no markup at all."""
    import lxml.html
    from lxml import etree

    try:
        return lxml.html.document_fromstring(data, parser=lxml.html.HTMLParser(encoding=_encoding(data)))
    except etree.ParserError:  # "Document is empty"
        return None


def _encoding(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    declared = _XML_ENCODING.match(data[:200].removeprefix(codecs.BOM_UTF8))
    if declared:
        try:
            return codecs.lookup(declared.group(1).decode("ascii")).name
        except LookupError:
            pass  # a misspelt declaration: the EPUB standard says UTF-8 anyway
    return "utf-8"


def _spine(archive: Archive) -> list[str]:
    """The archive members of the spine's chapters, in reading order."""
    container = _xml(archive, EPUB_CONTAINER)
    package = next(iter(container.xpath("//*[local-name()='rootfile']/@full-path")), None)
    if not package:
        raise archive.damaged(f"{EPUB_CONTAINER} names no package file")
    opf = _xml(archive, package)
    manifest = {
        item.get("id"): (_resolve(package, item.get("href", "")), item.get("media-type", ""))
        for item in opf.xpath("//*[local-name()='manifest']/*[local-name()='item']")
    }
    chapters = []
    for idref in opf.xpath("//*[local-name()='spine']/*[local-name()='itemref']/@idref"):
        if idref not in manifest:
            raise archive.damaged(f"its spine lists {idref!r}, which its manifest lacks")
        member, media_type = manifest[idref]
        if media_type in CHAPTER_TYPES:
            chapters.append(member)
    if not chapters:
        raise archive.damaged("its spine lists no XHTML chapter")
    return chapters


def _resolve(package: str, href: str) -> str:
    """A manifest href (relative to the package file, URL-encoded) as an archive member name."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(package), unquote(urlsplit(href).path)))


def _refuse_drm(archive: Archive, chapters: list[str]) -> None:
    if ENCRYPTION not in archive.names():
        return
    for data in _xml(archive, ENCRYPTION).xpath("//*[local-name()='EncryptedData']"):
        algorithm = next(iter(data.xpath(".//*[local-name()='EncryptionMethod']/@Algorithm")), "")
        uri = next(iter(data.xpath(".//*[local-name()='CipherReference']/@URI")), "")
        if algorithm not in FONT_OBFUSCATION and posixpath.normpath(unquote(uri)) in chapters:
            raise UsageError(
                f"{archive.raw.name} is a DRM-protected EPUB: its text is encrypted; read a copy without DRM"
            )


def _xml(archive: Archive, member: str) -> Any:
    """A member parsed as XML, with no entity expansion, DTD or network: the file is untrusted."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
    try:
        return etree.fromstring(archive.read(member), parser=parser)
    except etree.XMLSyntaxError as exc:
        raise archive.damaged(f"{member}: {exc}") from None
