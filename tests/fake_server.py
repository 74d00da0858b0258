"""A local OpenAI-compatible HTTP server for client tests: scripted answers, recorded requests.

With ``worker_routes()`` among its scripts it also passes for an SGLang worker behind the smg
gateway, and ``kill()`` makes it vanish as a killed process would.

A request with ``"stream": true`` gets a chat completion answered as OpenAI's server-sent events:
its content in pieces of ``Answer.piece_chars`` characters, one chunk each (``piece_delay_s``
apart), then its finish reason, its usage if the request asked for it
(``stream_options.include_usage``), and ``[DONE]``. ``FakeServer.streams`` says how many pieces
each stream had, how many were sent, and whether the client hung up before the end."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest


@dataclass
class Answer:
    """One reply. Faults: ``delay_s`` before answering (past a client's timeout: a hang), ``raw``
    bytes sent as the body instead of JSON (non-JSON, truncated JSON), ``reset`` to close the
    connection after half the body has been sent."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None
    reset: bool = False
    piece_chars: int = 4
    piece_delay_s: float = 0.0


def completion(
    content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5, cached: int | None = None
) -> Answer:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return Answer(
        body={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }
    )


# A script is a list of answers given in turn (the last one repeats), or a function of the
# request body.
Script = list[Answer] | Callable[[Any], Answer]


@dataclass
class Streamed:
    """One streamed answer: its content pieces, those sent, whether the client went away first."""

    pieces: int
    sent: int = 0
    hung_up: bool = False


def stream_events(answer: Answer, usage: bool) -> tuple[list[Any], int]:
    """The server-sent events of a chat completion, and how many of them carry content."""
    body = answer.body
    choice = body["choices"][0] if body.get("choices") else None
    content = (choice or {}).get("message", {}).get("content") or ""
    step = answer.piece_chars
    head = {key: body.get(key) for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    if choice is None:  # a completion without choices streams none
        return [{**head, "choices": []}, "[DONE]"], 0
    pieces = [chunk({"content": content[at : at + step]}) for at in range(0, len(content), step)]
    last = chunk({}, choice.get("finish_reason"))
    if "timings" in body:  # llama.cpp's server sends them with its last chunk
        last["timings"] = body["timings"]
    tail = [{**head, "choices": [], "usage": body["usage"]}] if usage and body.get("usage") else []
    return [chunk({"role": "assistant", "content": ""}), *pieces, last, *tail, "[DONE]"], len(pieces)


@dataclass
class FakeServer:
    scripts: dict[str, Script]
    requests: list[tuple[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request
    authorizations: list[str] = field(default_factory=list)
    base_url: str = ""
    in_flight: int = 0
    max_in_flight: int = 0
    open_connections: int = 0
    max_open_connections: int = 0
    streams: list[Streamed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: set[socket.socket] = field(default_factory=set)
    _kill: Callable[[], None] = lambda: None

    def kill(self) -> None:
        """Stops listening and cuts every open connection, requests in flight included."""
        self._kill()

    def answer(self, path: str, body: Any) -> Answer:
        script = self.scripts.get(path)
        if callable(script):
            return script(body)
        if not script:
            return Answer(404, {"error": {"message": f"no route {path}"}})
        with self._lock:  # handler threads take turns
            return script.pop(0) if len(script) > 1 else script[0]


def _streamable(answer: Answer) -> bool:
    """A chat completion the server can stream (errors and raw bodies go as they are)."""
    return answer.status == 200 and answer.raw is None and isinstance(answer.body, dict) and "choices" in answer.body


def models(owned_by: str, **card: Any) -> Answer:
    return Answer(
        body={"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": owned_by, **card}]}
    )


def sdk_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the openai SDK chooses between retries, recorded instead of slept: every retry
    goes at once."""
    waits: list[float] = []
    calculate = openai.AsyncOpenAI._calculate_retry_timeout

    def recorded(client: openai.AsyncOpenAI, *args: Any, **kwargs: Any) -> float:
        waits.append(calculate(client, *args, **kwargs))
        return 0.0

    monkeypatch.setattr(openai.AsyncOpenAI, "_calculate_retry_timeout", recorded)
    return waits


def worker_routes(context_length: int = 8192) -> dict[str, Script]:
    """What the smg gateway asks an SGLang worker before it registers it (health, model, server
    and model info); add a /v1/chat/completions script to make a worker."""
    info = {"model_path": "test-model", "served_model_name": "test-model", "context_length": context_length}
    return {
        "/health": [Answer(body={})],
        "/v1/models": [models("sglang", max_model_len=context_length)],
        "/server_info": [Answer(body=info)],
        "/model_info": [Answer(body={**info, "is_generation": True})],
    }


@contextmanager
def fake_server(scripts: dict[str, Script]) -> Iterator[FakeServer]:
    server = FakeServer(scripts)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: clients reuse connections

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._sockets.add(self.connection)
                server.open_connections += 1
                server.max_open_connections = max(server.max_open_connections, server.open_connections)

        def finish(self) -> None:
            with server._lock:
                server._sockets.discard(self.connection)
                server.open_connections -= 1
            super().finish()

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            server.arrivals.append(time.monotonic())
            server.requests.append((self.path, json.loads(raw) if raw else None))
            server.authorizations.append(self.headers.get("Authorization", ""))
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            body = json.loads(raw) if raw else None
            try:
                answer = server.answer(self.path, body)
                if isinstance(body, dict) and body.get("stream") and _streamable(answer):
                    self._stream(answer, bool((body.get("stream_options") or {}).get("include_usage")))
                else:
                    self._send(answer)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _send(self, answer: Answer) -> None:
            time.sleep(answer.delay_s)
            payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if answer.reset:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

        def _stream(self, answer: Answer, usage: bool) -> None:
            time.sleep(answer.delay_s)
            events, pieces = stream_events(answer, usage)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            log = Streamed(pieces)
            with server._lock:
                server.streams.append(log)
            try:
                for number, event in enumerate(events):
                    if answer.reset and number >= len(events) // 2:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    data = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    log.sent += 0 < number <= pieces
                    if 0 < number <= pieces:
                        time.sleep(answer.piece_delay_s)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:  # the client went away: a reply stopped before its end
                log.hung_up = True
                self.close_connection = True

        do_GET = do_POST = _reply

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.handle_error = lambda request, client_address: None  # clients that hang up
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def kill() -> None:
        # At once, as the kernel does for a dead process: new connections are refused (Linux stops
        # listening on a shut-down socket) and the open ones are cut, requests in flight included.
        with server._lock:
            open_sockets = [httpd.socket, *server._sockets]
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.shutdown()
        httpd.server_close()

    server._kill = kill
    server.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
