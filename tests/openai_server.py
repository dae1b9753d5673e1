"""A small OpenAI-compatible loopback server that answers deterministically, tools and
structured output included.

It owns nothing in routekit; the compatibility suite (``tests/compat/``) and the surface tests
run libraries against it. Bound to 127.0.0.1 on an ephemeral port, threaded, stopped by the
context manager. What it answers, for ``POST .../chat/completions``:

* tools given (and ``tool_choice`` is not ``"none"``) and the last message is not a tool
  result: a call of the first tool (or the one ``tool_choice`` names), with arguments built
  from its JSON schema (``finish_reason="tool_calls"``);
* else ``response_format`` ``json_schema``: a JSON object matching the schema;
  ``json_object``: an object matching the first JSON schema found in the messages (where
  JSON-mode libraries put it), else ``{}``;
* else text: ``"You said: <last user text>"`` (after a tool result: ``"The tool said:
  <its content>"``).

Values from a schema: strings are the property's name (``{"name": "name"}``), integers 7,
numbers 1.5, booleans true, arrays one item, enums their first value, ``anyOf`` its first
non-null branch, ``$ref`` followed. Every answer streams as SSE when ``"stream": true`` (a
role chunk, the content word by word or the tool arguments in two pieces, a finish chunk,
the usage chunk when ``stream_options.include_usage``, ``[DONE]``). ``POST .../completions``
(legacy text) continues the prompt with ``" and so on."``; ``GET .../models`` lists one model.
``server.received`` keeps each request body.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIServer", "value_for"]

TEXT_CONTINUATION = " and so on."


def value_for(schema: Any, root: Any, name: str = "value", depth: int = 0) -> Any:
    """A deterministic value that satisfies ``schema`` (a JSON schema; ``root`` holds $defs)."""
    if depth > 12 or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return value_for(target, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return value_for(options[0], root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: value_for(v, root, k, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [value_for(schema.get("items", {}), root, name, depth + 1)]
    if kind == "integer":
        return 7
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return name


def _schema_in_messages(messages: list[Any]) -> Any:
    """The first JSON object with ``properties`` in any message's text (JSON-mode prompts)."""
    for m in messages:
        content = m.get("content")
        texts = [content] if isinstance(content, str) else [
            p.get("text", "") for p in content or [] if isinstance(p, dict)]
        for text in texts:
            for match in re.finditer(r"\{", text):
                try:
                    obj, _ = json.JSONDecoder().raw_decode(text[match.start():])
                except ValueError:
                    continue
                if isinstance(obj, dict) and "properties" in obj:
                    return obj
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The assistant message (``content`` or ``tool_calls``) and finish reason for a request."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if tools and choice != "none" and last.get("role") != "tool":
        tool = tools[0]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name") or choice.get("name")
            tool = next((t for t in tools if (t.get("function") or {}).get("name") == wanted),
                        tool)
        fn = tool.get("function") or {}
        params = fn.get("parameters") or {}
        args = value_for(params, params) if params.get("properties") else {}
        return {"tool_calls": [{"id": "call_0", "type": "function",
                                "function": {"name": fn.get("name", "tool"),
                                             "arguments": json.dumps(args)}}],
                "finish_reason": "tool_calls"}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return {"content": json.dumps(value_for(schema, schema)), "finish_reason": "stop"}
    if fmt.get("type") == "json_object":
        schema = _schema_in_messages(messages)
        value = value_for(schema, schema) if schema else {}
        return {"content": json.dumps(value), "finish_reason": "stop"}
    if last.get("role") == "tool":
        return {"content": f"The tool said: {_text(last.get('content'))}",
                "finish_reason": "stop"}
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return {"content": f"You said: {_text(user.get('content'))}", "finish_reason": "stop"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that closes a finished stream before reading [DONE] is normal; anything
        # else is a bug in this server and is printed as usual.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            self.owner.hangups += 1
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [*events, "[DONE]"]:
            text = event if isinstance(event, str) else json.dumps(event)
            data = f"data: {text}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [
                {"id": "echo", "object": "model", "created": 0, "owned_by": "tests"}]})
        else:
            self._send_json(200, {"status": "ok"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        owner = self.server.owner
        with owner.lock:
            owner.received.append(body)
        path = self.path.rstrip("/")
        if path.endswith("/chat/completions"):
            self._chat(body)
        elif path.endswith("/completions"):
            self._text(body)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict[str, Any]) -> None:
        out = answer(body)
        model = body.get("model", "echo")
        created = int(time.time())
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        message: dict[str, Any] = {"role": "assistant", "content": out.get("content")}
        if "tool_calls" in out:
            message["tool_calls"] = out["tool_calls"]
        if not body.get("stream"):
            self._send_json(200, {
                "id": "chatcmpl-echo", "object": "chat.completion", "created": created,
                "model": model, "usage": usage, "choices": [
                    {"index": 0, "message": message, "logprobs": None,
                     "finish_reason": out["finish_reason"]}]})
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": "chatcmpl-echo", "object": "chat.completion.chunk",
                    "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}

        events: list[Any] = [chunk({"role": "assistant", "content": ""}, None)]
        if "tool_calls" in out:
            call = out["tool_calls"][0]
            args = call["function"]["arguments"]
            half = len(args) // 2
            events.append(chunk({"tool_calls": [{"index": 0, "id": call["id"],
                                                 "type": "function", "function": {
                                                     "name": call["function"]["name"],
                                                     "arguments": args[:half]}}]}, None))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {
                "arguments": args[half:]}}]}, None))
        else:
            words = out["content"].split(" ")
            events += [chunk({"content": w if i == 0 else " " + w}, None)
                       for i, w in enumerate(words)]
        events.append(chunk({}, out["finish_reason"]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "chatcmpl-echo", "object": "chat.completion.chunk",
                           "created": created, "model": model, "choices": [], "usage": usage})
        self._sse(events)

    def _text(self, body: dict[str, Any]) -> None:
        model = body.get("model", "echo")
        created = int(time.time())
        text = TEXT_CONTINUATION
        usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
        if not body.get("stream"):
            self._send_json(200, {
                "id": "cmpl-echo", "object": "text_completion", "created": created,
                "model": model, "usage": usage, "choices": [
                    {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]})
            return

        def chunk(piece: str, finish: str | None) -> dict[str, Any]:
            return {"id": "cmpl-echo", "object": "text_completion", "created": created,
                    "model": model, "choices": [{"index": 0, "text": piece, "logprobs": None,
                                                 "finish_reason": finish}]}

        words = text.split(" ")
        events: list[Any] = [chunk(w if i == 0 else " " + w, None)
                             for i, w in enumerate(words) if w or i == 0]
        events.append(chunk("", "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "cmpl-echo", "object": "text_completion", "created": created,
                           "model": model, "choices": [], "usage": usage})
        self._sse(events)


class OpenAIServer:
    """Context manager running the server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hangups = 0  # connections the client closed while an answer was going out
        self.lock = threading.Lock()
        self.port = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> OpenAIServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
