"""Citations say where in the original file they are: a page of a PDF, the chain of headings of a
sectioned format; through the library and ``llmxmr run``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmxmr import MapReducePipeline, PipelineConfig, read_document
from llmxmr.cli import main
from llmxmr.clients.base import ChatRequest
from llmxmr.clients.fake import ScriptedClient

from ..conftest import WordCounter, final_reply, partial_reply
from .document_fixtures import pdf_bytes

PLANTED = "The vault code is 4417 and opens the east door."
FILLER = "\n".join(["Ships come and go in the grey morning light."] * 5)
PAGES = [
    f"The first page tells of the harbour.\n{FILLER}",
    f"The second page tells of the vault.\n{FILLER}\n{PLANTED}",
    f"The third page tells of the storm.\n{FILLER}",
]
QUESTION = "What is the vault code?"


def responder(request: ChatRequest) -> str:
    text = "\n".join(message.content for message in request.messages)
    if request.schema_name == "MapOutput":
        if "4417" in text:
            return partial_reply("4417", confidence=5, info=PLANTED)
        return partial_reply(None, confidence=0)
    return final_reply("4417", chunks=[0, 1, 2])


def client() -> ScriptedClient:
    return ScriptedClient(responder=responder, counter=WordCounter())


def config() -> PipelineConfig:
    return PipelineConfig.load(**{"chunking.chunk_tokens": 64, "llm.concurrency": 2})


def test_a_sentence_planted_on_page_two_is_cited_as_page_two(tmp_path):
    pytest.importorskip("pypdfium2")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes(PAGES))
    document = read_document(str(path))
    result = MapReducePipeline(config(), client=client()).run(document, QUESTION)
    assert result.found and result.answer == "4417"
    (citation,) = result.citations
    assert citation.quote == PLANTED
    assert (citation.page, citation.location) == (2, "p. 2")
    assert document.text[citation.start : citation.end] == PLANTED


def test_markdown_citations_carry_their_heading_chain(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(f"# Chapter 12\n\nIntro words here.\n\n## Netherfield\n\n{PLANTED}\n", encoding="utf-8")
    result = MapReducePipeline(config(), client=client()).run(read_document(str(path)), QUESTION)
    (citation,) = result.citations
    assert citation.section == ("Chapter 12", "Netherfield")
    assert citation.location == "Chapter 12 › Netherfield"


def test_plain_text_citations_have_no_location_beyond_the_line():
    result = MapReducePipeline(config(), client=client()).run(f"Some words first.\n{PLANTED}\n", QUESTION)
    (citation,) = result.citations
    assert (citation.page, citation.section, citation.location, citation.line) == (None, (), None, 2)


def _run_cli(monkeypatch, *args: str):
    from llmxmr import cli

    original = cli.MapReducePipeline
    monkeypatch.setattr(cli, "MapReducePipeline", lambda cfg, **kwargs: original(cfg, client=client()))
    return CliRunner().invoke(main, ["run", "--question", QUESTION, "--chunk-tokens", "64", *args])


def test_run_prints_the_page_of_each_citation_and_json_carries_it(tmp_path, monkeypatch):
    pytest.importorskip("pypdfium2")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes(PAGES))
    shown = _run_cli(monkeypatch, "--input", str(path))
    assert shown.exit_code == 0, shown.output
    assert "[1] p. 2, chunk" in shown.stdout and PLANTED in shown.stdout
    as_json = json.loads(_run_cli(monkeypatch, "--input", str(path), "--json").stdout)
    assert as_json["citations"][0]["page"] == 2 and as_json["citations"][0]["location"] == "p. 2"


def test_an_encrypted_pdf_opens_with_the_password_flag(tmp_path, monkeypatch):
    pytest.importorskip("pypdfium2")
    path = tmp_path / "secret.pdf"
    path.write_bytes(pdf_bytes(PAGES, password="hunter2"))
    refused = _run_cli(monkeypatch, "--input", str(path))
    assert refused.exit_code == 2 and "--password" in refused.output and "Traceback" not in refused.output
    opened = _run_cli(monkeypatch, "--input", str(path), "--password", "hunter2")
    assert opened.exit_code == 0 and "p. 2" in opened.stdout


def test_batch_results_cite_the_section_of_a_markdown_path(tmp_path):
    import asyncio

    from llmxmr.batch import BatchItem, read_results, run_batch

    path = tmp_path / "notes.md"
    path.write_text(f"# Chapter 12\n\nIntro words here.\n\n## Netherfield\n\n{PLANTED}\n", encoding="utf-8")
    batch = [BatchItem(id="a", question=QUESTION, path=str(path))]
    asyncio.run(run_batch(batch, tmp_path / "out", config(), client=client()))
    (result,) = read_results(tmp_path / "out" / "results.jsonl")
    assert result.citations[0].location == "Chapter 12 › Netherfield"
