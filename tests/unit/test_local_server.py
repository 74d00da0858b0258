"""``llmxmr serve --local``'s child: llama-cpp-python's server app, set up for llmxmr's calls."""

from __future__ import annotations

from typing import Any

import pytest

from llmxmr import local_server

# The server app's framework, with the 'local' extra (llama-cpp-python[server]).
FastAPI = pytest.importorskip("fastapi", reason="the 'local' extra is not installed").FastAPI


def test_a_waiting_request_never_cuts_a_streamed_reply_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-cpp-python's server ends a streamed reply with "[DONE]" mid-answer when another request
    # waits (interrupt_requests, on by default); llmxmr streams replies and queues the next call.
    app_module = pytest.importorskip("llama_cpp.server.app")
    uvicorn = pytest.importorskip("uvicorn")
    made: dict[str, Any] = {}
    app = FastAPI()

    def create_app(server_settings: Any, model_settings: Any) -> Any:
        made["server"], made["models"] = server_settings, model_settings
        return app

    monkeypatch.setattr(app_module, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: made.update(app=app, **kwargs))
    local_server.serve_from_command_line(["model.gguf", "127.0.0.1", "8123", "4096", "2", "on"])
    assert made["app"] is app and made["port"] == 8123
    assert made["server"].interrupt_requests is False
    assert made["models"][0].n_ctx == 4096 and made["models"][0].n_threads == 2


def test_reports_its_window_as_llama_server_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama-cpp-python's server tells no client its window; run --base-url reads llama-server's /props.
    app_module = pytest.importorskip("llama_cpp.server.app")
    uvicorn = pytest.importorskip("uvicorn")
    from fastapi.testclient import TestClient

    app = FastAPI()
    monkeypatch.setattr(app_module, "create_app", lambda server_settings, model_settings: app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    local_server.serve_from_command_line(["model.gguf", "127.0.0.1", "8123", "4096", "2", "on"])
    props = TestClient(app).get("/props").json()
    assert props == {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
