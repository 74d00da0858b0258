"""Reading documents: every format's text and locations, detection by content, and one clear line
for every bad input. Fixtures are built in memory (tests/unit/document_fixtures.py)."""

from __future__ import annotations

import io
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import ValidationError

from llmxmr.documents import Document, Location, decode_text, read_document, read_text
from llmxmr.errors import MissingExtraError, UsageError

from .document_fixtures import (
    docx_bytes,
    epub_bytes,
    epub_members,
    image_only_pdf,
    pdf_bytes,
    understate_size,
    zip_bytes,
)

PLANTED = "The vault code is 7341 and only Ada knows it."
PDF_PAGES = [
    "Page one opens the report\nand ends with the word alpha",
    f"Page two begins here.\n{PLANTED}",
    "Page three closes it.",
]
LONG = "This paragraph is long enough prose for an extractor to believe it is content, with clauses, commas and words. "
PAGE = f"""<!DOCTYPE html><html><head><title>Site</title><script>var tracking = 1;</script></head><body>
<header><nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/shop">Shop</a></nav></header>
<article><h1>Chapter 12</h1><p>{LONG * 3}</p>
<h2>Netherfield</h2><p>Mr. Bingley rents Netherfield Park, near Meryton. {LONG * 2}</p>
<table><tr><th>Tenant</th><th>Estate</th></tr><tr><td>Bingley</td><td>Netherfield</td></tr></table>
<h2>Longbourn</h2><p>{LONG * 2}</p></article>
<footer><p>Copyright 2024 Example Corp. All rights reserved.</p><a href="/privacy">Privacy policy</a></footer>
</body></html>"""


def write(tmp_path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return str(path)


def needs_docs() -> None:
    for module in ("pypdfium2", "trafilatura", "docx"):
        pytest.importorskip(module)


def one_line_usage_error(excinfo: pytest.ExceptionInfo[UsageError], *fragments: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and excinfo.value.exit_code == 2
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the model: boundaries and labels ----------------------------------------------------------


def test_location_labels():
    assert Location(line=3, page=143, section=("Chapter 12",)).label == "p. 143"
    assert Location(line=3, section=("Chapter 12", "Netherfield")).label == "Chapter 12 › Netherfield"
    assert Location(line=12).label == "line 12"
    assert Location(line=1, page=2).model_dump()["label"] == "p. 2"


def test_locate_bisects_the_boundaries_and_clamps():
    text = "one\ntwo\n\nthree\nfour"
    document = Document(
        text=text,
        name="doc",
        format="pdf",
        page_starts=(0, text.index("three")),
        section_starts=(text.index("two"),),
        section_paths=(("Part",),),
    )
    assert document.pages == 2
    assert document.locate(0) == Location(line=1, page=1, section=())
    assert document.locate(text.index("two")) == Location(line=2, page=1, section=("Part",))
    assert document.locate(text.index("four")) == Location(line=5, page=2, section=("Part",))
    assert document.locate(-5).line == 1 and document.locate(10**9) == document.locate(len(text))


@pytest.mark.parametrize(
    "fields",
    [
        {"page_starts": (5, 0)},
        {"section_starts": (0, 1), "section_paths": (("A",),)},
        {"section_starts": (4, 1), "section_paths": (("A",), ("B",))},
    ],
)
def test_document_refuses_boundaries_out_of_order(fields):
    with pytest.raises(ValidationError):
        Document(text="abcdef", name="doc", format="text", **fields)


# --- text and Markdown (no extra needed) -------------------------------------------------------


def test_text_is_read_as_before_and_located_by_line(tmp_path):
    path = write(tmp_path, "notes.txt", "alpha\nbeta\ngamma # not a heading\n".encode("utf-8-sig"))
    document = read_document(path)
    assert (document.format, document.text) == ("text", "alpha\nbeta\ngamma # not a heading\n")
    location = document.locate(document.text.index("gamma"))
    assert (location.line, location.page, location.section, location.label) == (3, None, (), "line 3")
    assert read_text(path) == document.text
    assert decode_text("naïve".encode("utf-16"), "doc") == "naïve"


def test_markdown_headings_are_sections_but_not_inside_fences(tmp_path):
    source = (
        "Preamble line.\n"
        "# Chapter 12 #\n"
        "Intro.\n"
        "## Netherfield\n"
        "Mr. Bingley rents Netherfield.\n"
        "```python\n"
        "# a comment, not a heading\n"
        "print('x')\n"
        "```\n"
        "After the code.\n"
        "#hashtag is not a heading either\n"
        "# Chapter 13\n"
        "~~~\n# still code\n~~~\n"
        "The end.\n"
    )
    document = read_document(write(tmp_path, "book.md", source))
    assert document.format == "markdown" and document.text == source
    assert document.section_paths == (("Chapter 12",), ("Chapter 12", "Netherfield"), ("Chapter 13",))
    assert document.locate(0).label == "line 1"
    assert document.locate(source.index("Mr. Bingley")).label == "Chapter 12 › Netherfield"
    assert document.locate(source.index("a comment")).section == ("Chapter 12", "Netherfield")
    assert document.locate(source.index("#hashtag")).section == ("Chapter 12", "Netherfield")
    assert document.locate(source.index("The end")).label == "Chapter 13"
    assert document.locate(source.index("The end")).line == source[: source.index("The end")].count("\n") + 1


def test_markdown_needs_its_extension_and_stays_text_otherwise(tmp_path):
    document = read_document(write(tmp_path, "book.txt", "# Title\nbody\n"))
    assert document.format == "text" and document.section_starts == ()


def test_bytes_and_standard_input_sources(monkeypatch):
    assert read_document(b"plain words").text == "plain words"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from a pipe")))
    document = read_document("-")
    assert (document.text, document.name) == ("from a pipe", "standard input")
    with pytest.raises(UsageError) as excinfo:
        read_document(b"x" * 2048, max_bytes=1024)
    one_line_usage_error(excinfo, "bytes input is 2 KB, over the 1 KB limit")


# --- PDF -----------------------------------------------------------------------------------------


def test_pdf_pages_and_the_planted_sentence_on_page_two(tmp_path):
    pytest.importorskip("pypdfium2")
    document = read_document(write(tmp_path, "report.pdf", pdf_bytes(PDF_PAGES)))
    assert (document.format, document.pages, document.warnings) == ("pdf", 3, ())
    assert document.text == (
        "Page one opens the report\nand ends with the word alpha\n\n"
        f"Page two begins here.\n{PLANTED}\n\nPage three closes it."
    )
    location = document.locate(document.text.index(PLANTED))
    assert (location.page, location.label) == (2, "p. 2")
    assert document.locate(0).page == 1 and document.locate(len(document.text) - 1).page == 3
    assert "alpha\n\nPage two" in document.text  # no word glued across the page break


def test_pdf_from_bytes_and_wrong_extension(tmp_path):
    pytest.importorskip("pypdfium2")
    data = pdf_bytes(PDF_PAGES)
    assert read_document(data).format == "pdf"
    assert read_document(write(tmp_path, "report.txt", data)).locate(len(PDF_PAGES[0]) + 5).page == 2


def test_encrypted_pdf_needs_its_password(tmp_path):
    pytest.importorskip("pypdfium2")
    path = write(tmp_path, "secret.pdf", pdf_bytes(["Top secret text on the only page."], password="hunter2"))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "encrypted PDF", "--password")
    with pytest.raises(UsageError) as excinfo:
        read_document(path, password="wrong")
    one_line_usage_error(excinfo, path, "does not open it", "--password")
    assert read_document(path, password="hunter2").text == "Top secret text on the only page."


def test_scanned_pdf_without_text_suggests_ocr(tmp_path):
    pytest.importorskip("pypdfium2")
    path = write(tmp_path, "scan.pdf", image_only_pdf(4))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "no text layer on any of its 4 pages", "ocrmypdf")


def test_pdf_with_some_pages_without_text_is_read_with_a_warning(tmp_path):
    pytest.importorskip("pypdfium2")
    document = read_document(write(tmp_path, "mixed.pdf", pdf_bytes(["First page.", "", "Third page."])))
    assert document.warnings == ("1 of 3 pages have no text layer (scanned?); their text is missing",)
    assert document.text == "First page.\n\nThird page."
    assert document.locate(document.text.index("Third")).page == 3


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.1])
def test_truncated_pdf(tmp_path, keep):
    pytest.importorskip("pypdfium2")
    data = pdf_bytes(PDF_PAGES)
    path = write(tmp_path, "cut.pdf", data[: int(len(data) * keep)])
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is not a readable PDF", "download it again")


def test_pdfs_read_from_several_threads_go_through_pdfium_one_at_a_time(tmp_path, monkeypatch):
    """batch reads documents in worker threads, and PDFium is not thread-safe (not even across
    documents): its calls must never overlap."""
    pdfium = pytest.importorskip("pypdfium2")
    path = write(tmp_path, "report.pdf", pdf_bytes(PDF_PAGES))
    extract = pdfium.PdfTextPage.get_text_range
    inside, most = [], []

    def watched(self, *args, **kwargs):
        inside.append(1)
        most.append(len(inside))
        time.sleep(0.005)  # long enough for another thread to come in, if it could
        inside.pop()
        return extract(self, *args, **kwargs)

    monkeypatch.setattr(pdfium.PdfTextPage, "get_text_range", watched)
    with ThreadPoolExecutor(4) as pool:
        texts = set(pool.map(lambda _: read_text(path), range(8)))
    assert max(most) == 1 and len(most) == 8 * len(PDF_PAGES)
    assert len(texts) == 1 and PLANTED in texts.pop()


# --- HTML ----------------------------------------------------------------------------------------


def test_html_main_text_with_headings_as_sections(tmp_path):
    pytest.importorskip("trafilatura")
    document = read_document(write(tmp_path, "page.html", PAGE))
    assert document.format == "html"
    for boilerplate in ("About us", "Copyright", "Privacy policy", "tracking"):
        assert boilerplate not in document.text
    assert document.text.startswith("Chapter 12\n\nThis paragraph")
    assert "Tenant | Estate\n\nBingley | Netherfield" in document.text
    assert document.locate(document.text.index("Mr. Bingley")).label == "Chapter 12 › Netherfield"
    assert document.locate(document.text.index("Bingley | Netherfield")).section == ("Chapter 12", "Netherfield")
    assert document.locate(len(document.text) - 1).label == "Chapter 12 › Longbourn"


def test_html_detected_by_content_whatever_the_extension(tmp_path):
    pytest.importorskip("trafilatura")
    for name, data in (("page.md", PAGE), ("page.txt", "\ufeff  \n" + PAGE), ("page", PAGE.encode("utf-16"))):
        assert read_document(write(tmp_path, name, data)).format == "html", name
    xhtml = '<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Hi there</p></body></html>'
    assert read_document(write(tmp_path, "page.xhtml", xhtml)).format == "html"
    assert read_document(write(tmp_path, "notes.html", "Just text, <b>not</b> a page.")).format == "text"


def test_a_page_without_main_text_keeps_its_body(tmp_path):
    pytest.importorskip("trafilatura")
    document = read_document(
        write(tmp_path, "tiny.html", "<html><body><h1>Note</h1><p>Back at noon.</p></body></html>")
    )
    assert "Back at noon." in document.text


def test_html_without_text(tmp_path):
    pytest.importorskip("trafilatura")
    path = write(tmp_path, "blank.html", "<!doctype html><html><head><title>x</title></head><body> </body></html>")
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "holds no text to read (an HTML page)")


# --- EPUB ----------------------------------------------------------------------------------------

CHAPTERS = [
    (
        "One",
        f"<section><h1>Chapter 1</h1><h2>Longbourn</h2><p>{LONG * 4}</p>"
        "<p>The Bennets live at Longbourn.</p></section>",
    ),
    ("Two", "<div><h1>Chapter 2</h1><p>Short.</p></div>"),  # trafilatura folds it into "Chapter 2 Short."
    (
        "Three",
        f"<h1>Chapter 12</h1><p>{LONG * 2}</p><h2>Netherfield</h2>"
        f"<p>Mr. Bingley rents Netherfield Park.<br/>{LONG * 3}</p>",
    ),
]


def test_epub_spine_order_headings_and_a_short_chapter(tmp_path):
    pytest.importorskip("trafilatura")
    # The spine, not the manifest, gives the reading order: chapter 12 is read last.
    document = read_document(write(tmp_path, "book.epub", epub_bytes(CHAPTERS, spine=[1, 0, 2])))
    assert document.format == "epub"
    assert document.text.startswith("Chapter 2\n\nShort.\n\nChapter 1\n\nLongbourn\n\n")
    assert document.locate(document.text.index("Short.")).label == "Chapter 2"
    assert document.locate(document.text.index("The Bennets")).label == "Chapter 1 › Longbourn"
    bingley = document.text.index("Mr. Bingley rents Netherfield Park.\nThis paragraph")  # <br/> is a line break
    assert document.locate(bingley).label == "Chapter 12 › Netherfield"
    assert document.section_paths == (
        ("Chapter 2",),
        ("Chapter 1",),
        ("Chapter 1", "Longbourn"),
        ("Chapter 12",),
        ("Chapter 12", "Netherfield"),
    )


def test_epub_detected_by_content_named_docx(tmp_path):
    pytest.importorskip("trafilatura")
    assert read_document(write(tmp_path, "book.docx", epub_bytes(CHAPTERS))).format == "epub"


def test_epub_chapter_encodings_and_entities(tmp_path):
    pytest.importorskip("trafilatura")
    members = epub_members([("Latin", "")])
    members["OEBPS/text/chapter 0.xhtml"] = (
        '<?xml version="1.0" encoding="iso-8859-1"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        "<h1>Caf\xe9</h1><p>Na\xefve&nbsp;text &amp; more.</p></body></html>"
    ).encode("latin-1")
    document = read_document(zip_bytes(members))
    assert document.text == "Café\n\nNaïve text & more."


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda m: m.pop("OEBPS/content.opf"), "OEBPS/content.opf is missing"),
        (
            lambda m: m.update({"META-INF/container.xml": b"<container><rootfiles/></container>"}),
            "names no package file",
        ),
        (lambda m: m.update({"OEBPS/content.opf": b"<package><manifest>"}), "OEBPS/content.opf:"),
        (lambda m: m.pop("OEBPS/text/chapter 1.xhtml"), "OEBPS/text/chapter 1.xhtml is missing"),
        (
            lambda m: m.update({"OEBPS/content.opf": m["OEBPS/content.opf"].replace(b'idref="c1"', b'idref="gone"')}),
            "'gone'",
        ),
    ],
)
def test_damaged_epub(tmp_path, damage, reason):
    pytest.importorskip("trafilatura")
    members = epub_members(CHAPTERS)
    damage(members)
    path = write(tmp_path, "book.epub", zip_bytes(members))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is not a readable EPUB", reason)


def test_drm_epub_is_refused_but_font_obfuscation_is_not(tmp_path):
    pytest.importorskip("trafilatura")
    encryption = """<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
        xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
        <enc:EncryptionMethod Algorithm="{algorithm}"/>
        <enc:CipherData><enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>"""
    members = epub_members(CHAPTERS)
    members["META-INF/encryption.xml"] = encryption.format(
        algorithm="http://www.idpf.org/2008/embedding", uri="OEBPS/fonts/serif.otf"
    ).encode()
    assert "Chapter 12" in read_document(zip_bytes(members)).text
    members["META-INF/encryption.xml"] = encryption.format(
        algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc", uri="OEBPS/text/chapter%201.xhtml"
    ).encode()
    path = write(tmp_path, "locked.epub", zip_bytes(members))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "DRM-protected EPUB")


def test_epub_text_over_the_limit(tmp_path):
    """A small archive can hold much more text than its size: the limit applies to the text too."""
    pytest.importorskip("trafilatura")
    data = epub_bytes([("Big", "<p>" + "Repeated words compress very well. " * 9000 + "</p>")])
    path = write(tmp_path, "big.epub", data)
    assert len(data) < 100_000
    with pytest.raises(UsageError) as excinfo:
        read_document(path, max_bytes=200_000)
    one_line_usage_error(excinfo, f"the text of {path} is 308 KB, over the 195 KB limit")


# --- DOCX ----------------------------------------------------------------------------------------


def _report(document) -> None:
    document.add_paragraph("Prepared for the board.")
    document.add_heading("Chapter 12", level=1)
    document.add_paragraph("Intro to the chapter.")
    document.add_heading("Netherfield", level=2)
    document.add_paragraph("Mr. Bingley rents Netherfield Park.")
    table = document.add_table(rows=2, cols=3)
    for column, text in enumerate(("Tenant", "Estate", "Rent")):
        table.cell(0, column).text = text
    table.cell(1, 0).merge(table.cell(1, 1)).text = "Bingley at Netherfield"
    table.cell(1, 2).text = "£500"
    document.add_heading("Longbourn", level=2)
    document.add_paragraph("The Bennets live here.")
    document.add_heading("Chapter 13", level=1)
    document.add_paragraph("Later.")


def test_docx_paragraphs_headings_and_tables(tmp_path):
    pytest.importorskip("docx")
    document = read_document(write(tmp_path, "report.docx", docx_bytes(_report)))
    assert document.format == "docx"
    assert document.text == (
        "Prepared for the board.\n\nChapter 12\n\nIntro to the chapter.\n\nNetherfield\n\n"
        "Mr. Bingley rents Netherfield Park.\n\nTenant | Estate | Rent\n\nBingley at Netherfield | £500\n\n"
        "Longbourn\n\nThe Bennets live here.\n\nChapter 13\n\nLater."
    )
    assert document.locate(0).label == "line 1"
    assert document.locate(document.text.index("£500")).label == "Chapter 12 › Netherfield"
    assert document.locate(document.text.index("The Bennets")).label == "Chapter 12 › Longbourn"
    assert document.locate(document.text.index("Later")).label == "Chapter 13"


def test_docx_detected_by_content_named_pdf(tmp_path):
    pytest.importorskip("docx")
    assert read_document(write(tmp_path, "report.pdf", docx_bytes(_report))).format == "docx"


def test_docx_without_its_body(tmp_path):
    pytest.importorskip("docx")
    with zipfile.ZipFile(io.BytesIO(docx_bytes(_report))) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != "word/document.xml"}
    path = write(tmp_path, "report.docx", zip_bytes(members))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is not a readable DOCX", "word/document.xml is missing")


def test_docx_with_broken_xml(tmp_path):
    pytest.importorskip("docx")
    with zipfile.ZipFile(io.BytesIO(docx_bytes(_report))) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["word/document.xml"] = members["word/document.xml"][:500]
    path = write(tmp_path, "report.docx", zip_bytes(members))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is not a readable DOCX")


def test_docx_without_text(tmp_path):
    pytest.importorskip("docx")
    path = write(tmp_path, "blank.docx", docx_bytes(lambda document: document.add_paragraph("   ")))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "holds no text to read (a DOCX)")


# --- damaged archives and zip bombs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"), [("book.epub", "EPUB"), ("report.docx", "DOCX"), ("archive.zip", "zip archive")]
)
def test_truncated_archive(tmp_path, name, kind):
    needs_docs()
    data = epub_bytes(CHAPTERS)
    path = write(tmp_path, name, data[: len(data) // 2])
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, f"is not a readable {kind}", "truncated?")


def test_zip_that_is_neither_epub_nor_docx(tmp_path):
    path = write(
        tmp_path, "sheet.xlsx", zip_bytes({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})
    )
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is a zip archive, not an EPUB or DOCX")


@pytest.mark.parametrize("name", ["bomb.epub", "bomb.docx"])
def test_zip_bomb_by_unpacked_size_is_refused_before_extraction(tmp_path, name, monkeypatch):
    needs_docs()
    members = epub_members(CHAPTERS) if name.endswith(".epub") else {"word/document.xml": b"<w:document/>"}
    members["padding.bin"] = bytes(5 * 2**20)  # 5 MB of zeros: a few KB packed
    path = write(tmp_path, name, zip_bytes(members))
    opened = []
    monkeypatch.setattr(
        zipfile.ZipFile, "open", lambda *args, **kwargs: opened.append(args) or pytest.fail("extracted")
    )
    with pytest.raises(UsageError) as excinfo:
        read_document(path, max_bytes=2**20)
    one_line_usage_error(excinfo, path, "would unpack to 5 MB, over the 4 MB limit for an EPUB or DOCX", "zip bomb?")
    assert opened == []


def test_zip_bomb_by_member_count(tmp_path):
    members = {"mimetype": b"application/epub+zip", **{f"x/{index}": b"" for index in range(10_001)}}
    path = write(tmp_path, "many.epub", zip_bytes(members, zipfile.ZIP_STORED))
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "holds 10,002 files, over the limit of 10,000")


def test_member_inflating_past_its_declared_size(tmp_path):
    pytest.importorskip("trafilatura")
    data = understate_size(epub_bytes(CHAPTERS), "OEBPS/text/chapter 2.xhtml", by=100)
    path = write(tmp_path, "liar.epub", data)
    with pytest.raises(UsageError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, path, "is not a readable EPUB", "OEBPS/text/chapter 2.xhtml")


# --- missing extras ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "package", "name", "data"),
    [
        ("pypdfium2", "pypdfium2", "a.pdf", b"%PDF-1.7\n"),
        ("trafilatura", "trafilatura", "a.html", b"<!doctype html><p>x</p>"),
        ("trafilatura", "trafilatura", "a.epub", None),
        ("docx", "python-docx", "a.docx", None),
    ],
)
def test_missing_extra_names_the_package_and_the_extra(tmp_path, monkeypatch, module, package, name, data):
    if data is None:
        data = epub_bytes(CHAPTERS) if name.endswith(".epub") else zip_bytes({"word/document.xml": b"<w:document/>"})
    path = write(tmp_path, name, data)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingExtraError) as excinfo:
        read_document(path)
    one_line_usage_error(excinfo, f"reading {path}", f"needs the '{package}' package: pip install 'llmxmr[docs]'")
