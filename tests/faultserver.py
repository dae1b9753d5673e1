"""A tiny OpenAI-compatible loopback server that misbehaves on purpose.

It owns nothing in routekit; tests use it to produce the statuses and faults real servers
produce rarely: 4xx/5xx bodies, 429 with Retry-After, SSE streams cut before ``[DONE]``,
hangs, and connection resets. Bound to 127.0.0.1 on an ephemeral port, threaded, bounded in
time (a hang never outlives ``hang_seconds`` or the server's shutdown).

Selecting a fault, most specific first:
  * a ``/mode/<name>`` prefix in the base URL:  ``server.url("429")`` ->
    ``http://127.0.0.1:PORT/mode/429/v1`` (one server serves many providers at once);
  * ``server.sequence``: modes consumed one per request (e.g. ``["503", "503", "ok"]``);
  * ``server.mode``: the default (``"ok"``).
Modes:
  ok            200 JSON chat completion (streams when the request says ``"stream": true``)
  stream        200 SSE stream with a finish_reason and ``[DONE]`` (also for non-stream)
  cut           SSE chunks, then the body ends cleanly: no finish_reason, no ``[DONE]``
  sse_error     200 SSE whose first event is an error (vLLM's way), then ``[DONE]``
  cut_reset     SSE chunks, then a TCP reset mid-body
  think         "ok" after ``think_seconds`` of silence (a stream's headers first)
  slow_probe    "ok" at once for requests; health GETs answer after ``think_seconds`` (a
                server too busy for its probe endpoint while it serves traffic)
  drip_stream   SSE chunks, one every ``trickle_every`` s, then ``[DONE]``
  stall_stream  SSE first chunks, then silence (up to ``hang_seconds``); when the client
                hangs up meanwhile, ``server.hangups`` (a semaphore) is released
  role_stall    SSE with only the role chunk, then silence (up to ``hang_seconds``)
  reasoning     SSE: the role chunk, ``reasoning_chunks`` chunks of ``reasoning_content``
                one every ``trickle_every`` s (a reasoning model thinking), then the answer
  hang          reads the request, then silence (up to ``hang_seconds``)
  trickle       200 with a Content-Length, then one byte every ``trickle_every`` s (GET too)
  echo_header   200 completion whose response header ``x-echo-authorization`` echoes the key
  reset         reads the request, then a TCP reset before any response byte
  context       400 with llama_cpp.server's context-length body (code context_length_exceeded)
  401           401 whose body echoes the request's Authorization header (redaction tests)
  429           429 with ``Retry-After: <retry_after>`` (``retry_after_style``: seconds,
                date or ms)
  <NNN>         any other status code with an OpenAI-style error body
``server.response_headers`` go out with every JSON response (``x-request-id``, say).
``GET .../models``, ``/health`` and ``/api/version`` answer 200 in every mode except the
status/fault modes ``hang``, ``reset`` and ``<NNN>`` (so health probes see the fault too).

Counts: ``server.requests`` (all), ``server.count(mode)``; ``server.received`` keeps a
``Received(method, path, mode, body, client_port)`` per request, for assertions on what was
sent and on connection reuse.
"""

from __future__ import annotations

import email.utils
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

__all__ = ["FaultServer", "Received", "closed_port"]

_CONTEXT_BODY = {
    "error": {
        "message": (
            "This model's maximum context length is 512 tokens. However, you requested "
            "1218 tokens (1210 in the messages, 8 in the completion). Please reduce the "
            "length of the messages or completion."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}

# Sockets bound but never listening: a connect to their port is refused, and no other
# process can take the port while the test process lives.
_RESERVED: list[socket.socket] = []
_RESERVED_LOCK = threading.Lock()


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused) for this process' life."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    with _RESERVED_LOCK:
        _RESERVED.append(sock)
    return int(sock.getsockname()[1])


class Received(NamedTuple):
    """One request as the server saw it."""

    method: str
    path: str
    mode: str
    body: Any
    client_port: int


class _Abort(Exception):
    """Raised by a handler after it has reset its connection on purpose."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs under 16+ concurrent connects, which the
    # client sees as a 1 s connect timeout (the SYN retransmit): not the fault under test.
    request_queue_size = 256
    owner: FaultServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Faults are the point; clients hanging up on a hang are expected too. Stay quiet.
        self.owner._errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on Linux loopback).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    # --- plumbing ----------------------------------------------------------------------

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in {**self.server.owner.response_headers, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
        raise _Abort()

    def _wait(self, seconds: float) -> None:
        self.server.owner._stop.wait(seconds)

    def _wait_for_hangup(self, seconds: float) -> None:
        """Stay silent up to ``seconds``; return early (and count it) if the client hangs up."""
        owner = self.server.owner
        end = time.monotonic() + seconds
        self.connection.settimeout(0.05)
        while time.monotonic() < end and not owner._stop.is_set():
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    owner.hangups.release()
                    return
            except socket.timeout:
                continue
            except OSError:
                owner.hangups.release()
                return

    def _trickle(self) -> None:
        """Headers with a Content-Length, then one body byte every ``trickle_every`` seconds
        (never finishing within ``hang_seconds``): every socket read succeeds in time."""
        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.flush()
        end = time.monotonic() + owner.hang_seconds
        while time.monotonic() < end and not owner._stop.is_set():
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(owner.trickle_every)
        self.close_connection = True

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._chunk(f"data: {text}\n\n".encode())

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # --- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        mode, rest = self.server.owner._route(self.path)
        self.server.owner._record("GET", self.path, mode, None, self.client_address[1])
        try:
            if mode == "slow_probe":
                owner = self.server.owner
                self._wait(min(owner.think_seconds, owner.hang_seconds))
            if mode == "hang":
                self._wait(self.server.owner.hang_seconds)
                self.close_connection = True
                return
            if mode == "reset":
                self._reset()
            if mode == "trickle":
                self._trickle()
                return
            if mode.isdigit():
                self._error_status(int(mode))
                return
            if rest.rstrip("/").endswith("/models"):
                self._send_json(
                    200,
                    {"object": "list", "data": [{"id": "fault-model", "object": "model", "owned_by": "tests"}]},
                )
            elif rest.rstrip("/") in ("/health", "/api/version"):
                # vLLM and llama.cpp server answer /health; Ollama /api/version.
                self._send_json(200, {"status": "ok", "version": "0.0-fault"})
            else:
                self._send_json(404, {"error": {"message": f"no route {rest}"}})
        except (_Abort, OSError):
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        owner = self.server.owner
        mode, _rest = owner._route(self.path)
        body = self._read_json()
        owner._record("POST", self.path, mode, body, self.client_address[1])
        with owner._lock:
            owner.post_headers.append({k.lower(): v for k, v in self.headers.items()})
        wants_stream = isinstance(body, dict) and bool(body.get("stream"))
        try:
            self._serve(mode, body, wants_stream)
        except (_Abort, OSError):
            self.close_connection = True

    def _serve(self, mode: str, body: Any, wants_stream: bool) -> None:
        self._answer(mode, body, wants_stream)
        owner = self.server.owner
        if mode in ("ok", "stream", "slow_probe") and owner.served_log is not None:
            # Which request was answered here (the client's "user" field), logged once the
            # whole answer is written: tests count answers across servers (a request
            # answered by two servers is a bug).
            with owner._lock, open(owner.served_log, "a") as log:
                log.write(f"{body.get('user', '?') if isinstance(body, dict) else '?'}\n")

    def _answer(self, mode: str, body: Any, wants_stream: bool) -> None:
        owner = self.server.owner
        model = body.get("model", "fault-model") if isinstance(body, dict) else "fault-model"
        if mode in ("ok", "slow_probe") and not wants_stream:
            self._send_json(200, owner.completion(model))
        elif mode in ("ok", "stream", "slow_probe"):
            self._start_sse()
            for chunk in owner.chunks(model, finish=True):
                self._event(chunk)
            self._event("[DONE]")
            self._end_chunked()
        elif mode == "think":
            # A reasoning model: the answer starts only after ``think_seconds`` (a stream's
            # headers go out at once, as vLLM sends them), then comes as "ok" does.
            if wants_stream:
                self._start_sse()
            self._wait(min(owner.think_seconds, owner.hang_seconds))
            if not wants_stream:
                self._send_json(200, owner.completion(model))
                return
            for chunk in owner.chunks(model, finish=True):
                self._event(chunk)
            self._event("[DONE]")
            self._end_chunked()
        elif mode == "sse_error":
            # vLLM's way of failing inside a 200 stream: an error event, then the end.
            self._start_sse()
            self._event({"error": {"message": "upstream exploded", "type": "server_error",
                                   "code": "engine_dead"}})
            self._event("[DONE]")
            self._end_chunked()
        elif mode == "cut":
            self._start_sse()
            for chunk in owner.chunks(model, finish=False):
                self._event(chunk)
            self._end_chunked()
            self.close_connection = True
        elif mode == "cut_reset":
            self._start_sse()
            for chunk in owner.chunks(model, finish=False):
                self._event(chunk)
            self._reset()
        elif mode == "stall_stream":
            try:
                self._start_sse()
                for chunk in owner.chunks(model, finish=False):
                    self._event(chunk)
            except OSError:
                # The client hung up while the first chunks were still going out.
                owner.hangups.release()
                raise
            self._wait_for_hangup(owner.hang_seconds)
            self.close_connection = True
        elif mode == "drip_stream":
            # Every chunk well within any read timeout, the whole far past a total one.
            self._start_sse()
            try:
                for chunk in owner.chunks(model, finish=True):
                    self._event(chunk)
                    self._wait(owner.trickle_every)
                self._event("[DONE]")
                self._end_chunked()
            except OSError:  # the client hung up: its deadline passed
                self.close_connection = True
        elif mode == "role_stall":
            self._start_sse()
            self._event(owner.chunks(model, finish=True)[0])
            self._wait_for_hangup(owner.hang_seconds)
            self.close_connection = True
        elif mode == "reasoning":
            self._start_sse()
            first, *answer = owner.chunks(model, finish=True)
            self._event(first)
            try:
                for i in range(owner.reasoning_chunks):
                    self._event({**first, "choices": [{"index": 0, "finish_reason": None,
                                 "delta": {"reasoning_content": f"step {i}. "}}]})
                    self._wait(owner.trickle_every)
                for chunk in answer:
                    self._event(chunk)
                self._event("[DONE]")
                self._end_chunked()
            except OSError:  # the client hung up
                self.close_connection = True
        elif mode == "hang":
            self._wait_for_hangup(owner.hang_seconds)
            self.close_connection = True
        elif mode == "reset":
            self._reset()
        elif mode == "trickle":
            self._trickle()
        elif mode == "echo_header":
            echoed = self.headers.get("Authorization", "")
            self._send_json(200, owner.completion(model), {"x-echo-authorization": echoed})
        elif mode == "context":
            self._send_json(400, _CONTEXT_BODY)
        elif mode == "401":
            echoed = self.headers.get("Authorization", "")
            self._send_json(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {echoed}",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                        "received_authorization": echoed,
                    }
                },
            )
        elif mode.isdigit():
            self._error_status(int(mode))
        else:
            self._send_json(500, {"error": {"message": f"faultserver: unknown mode {mode!r}"}})

    def _error_status(self, status: int) -> None:
        owner = self.server.owner
        headers: dict[str, str] = {}
        if status == 429 and owner.retry_after is not None:
            if owner.retry_after_style == "ms":
                headers["retry-after-ms"] = str(int(owner.retry_after * 1000))
            elif owner.retry_after_style == "date":
                headers["Retry-After"] = email.utils.formatdate(
                    time.time() + owner.retry_after, usegmt=True
                )
            else:
                headers["Retry-After"] = f"{owner.retry_after:g}"
        self._send_json(
            status,
            {"error": {"message": f"faultserver says {status}", "type": "fault", "code": str(status)}},
            headers,
        )


class FaultServer:
    """Context manager running the fault server on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        mode: str = "ok",
        *,
        text: str = "Hello from the fault server.",
        retry_after: float | None = 1.0,
        retry_after_style: str = "seconds",
        hang_seconds: float = 10.0,
        port: int = 0,
        served_log: str | None = None,
    ) -> None:
        self.mode = mode
        self.trickle_every = 0.5
        self.think_seconds = 1.0  # "think": the silence before the first byte of the answer
        self.reasoning_chunks = 5  # "reasoning": reasoning_content chunks before the answer
        self.served_log = served_log
        self.sequence: list[str] = []
        self.text = text
        self.retry_after = retry_after
        self.retry_after_style = retry_after_style
        self.hang_seconds = min(hang_seconds, 30.0)  # every wait in a test stays bounded
        self.received: list[Received] = []
        self.post_headers: list[dict[str, str]] = []  # request headers of each POST, in order
        self.response_headers: dict[str, str] = {}  # added to every JSON response
        self.hangups = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._errors = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: an ephemeral port, chosen at start()

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._stop.clear()
        httpd = _Server(("127.0.0.1", self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses and counters ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, mode: str) -> str:
        """Base URL whose requests all get ``mode``."""
        return f"http://127.0.0.1:{self.port}/mode/{mode}/v1"

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.received)

    def count(self, mode: str) -> int:
        with self._lock:
            return sum(1 for r in self.received if r.mode == mode)

    def _route(self, path: str) -> tuple[str, str]:
        if path.startswith("/mode/"):
            _, _, tail = path.partition("/mode/")
            mode, _, rest = tail.partition("/")
            return mode, "/" + rest
        with self._lock:
            mode = self.sequence.pop(0) if self.sequence else self.mode
        return mode, path

    def _record(self, method: str, path: str, mode: str, body: Any, client_port: int) -> None:
        with self._lock:
            self.received.append(Received(method, path, mode, body, int(client_port)))

    # --- payloads ------------------------------------------------------------------------

    def completion(self, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }

    def pieces(self) -> list[str]:
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def chunks(self, model: str, *, finish: bool) -> list[dict[str, Any]]:
        """The stream's chunks: a role chunk, one per word, then (if ``finish``) a stop chunk.

        Cut streams send only the role chunk and the first half of the words.
        """
        pieces = self.pieces()
        if not finish:
            pieces = pieces[: max(1, len(pieces) // 2)]
        created = int(time.time())

        def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fault",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
            }

        out = [chunk({"role": "assistant"}, None)]
        out += [chunk({"content": p}, None) for p in pieces]
        if finish:
            out.append(chunk({}, "stop"))
        return out

    def cut_text(self) -> str:
        """The text a cut stream delivers before it stops."""
        pieces = self.pieces()
        return "".join(pieces[: max(1, len(pieces) // 2)])
