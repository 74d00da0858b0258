"""The integration lane: the real pipeline, server client and grounding against the bundled
model's recorded replies (``tests/replay.py``), and the pass-key haystacks the scenarios read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..haystacks import haystack
from ..replay import ReplyStore, recording, replay_server


@pytest.fixture(scope="session")
def passkey_document() -> str:
    return haystack(repeats=340, depth=0.6)  # about 8k tokens


@pytest.fixture
def model_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bundled model's server as this scenario (the test's name) recorded it: its replies,
    replayed. With ``LLMXMR_RECORD=1``, the real ``llmxmr serve --local``, recorded anew."""
    scenario = request.node.name
    if recording():
        store = ReplyStore(scenario)
        with replay_server(store, request.getfixturevalue("llama_server")) as base_url:
            yield base_url
        store.save()
    else:
        store = ReplyStore.load(scenario)
        with replay_server(store) as base_url:
            yield base_url
        store.check()
