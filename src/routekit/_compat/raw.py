"""``with_raw_response`` and ``with_streaming_response``, as the openai client has them.

Owns the response objects those return. A router has no single HTTP response, so these stand
for the routed answer: ``parse()`` returns what ``create`` (or ``parse``) returned — the
routed completion, or the ``Stream`` — and ``headers`` / ``http_response`` are a synthetic
``httpx.Response`` (status 200) whose ``x-routekit-*`` headers name the model and provider
that answered. ``RawResponse`` is openai's ``LegacyAPIResponse`` shape (``parse()`` is sync,
also for async clients); ``StreamingResponse`` / ``AsyncStreamingResponse`` are openai's
``APIResponse`` / ``AsyncAPIResponse`` shapes that ``with_streaming_response`` yields in a
``with`` block (``read()``, ``text()``, ``json()``, ``iter_bytes`` / ``iter_text`` /
``iter_lines`` over a stream's server-sent events), and close the stream at the end of the
block. ``parse(to=...)`` takes what openai's does, except a stream class.

The wrappers forward their keyword arguments unchanged to the method they wrap, whose own
signature checks them (openai's wrappers do the same). Nothing here routes: every call is the
wrapped method's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator

from .http import make_response, route_headers

if TYPE_CHECKING:
    import datetime

__all__ = ["AsyncRawNamespace", "AsyncStreamingNamespace", "RawNamespace", "RawResponse",
           "StreamingNamespace", "StreamingResponse"]

def _http_response(result: Any, path: str) -> Any:
    response = getattr(result, "response", None)  # a Stream stands for itself
    if response is not None and hasattr(response, "headers"):
        return response
    route = getattr(result, "route", None)
    dump = getattr(result, "model_dump", None)
    headers = route_headers(route)
    request_id = getattr(result, "_request_id", None)  # the answering server's x-request-id
    if isinstance(request_id, str):
        headers["x-request-id"] = request_id
    return make_response(200, headers=headers,
                         body=dump(mode="json", warnings=False, exclude_unset=True)
                         if dump is not None else None,
                         path=path)


def _is_stream(result: Any) -> bool:
    return hasattr(result, "__next__") or hasattr(result, "__anext__")


def _sse(chunk: Any) -> bytes:
    """One chunk as the server-sent event an OpenAI-compatible server writes."""
    data: str = chunk.model_dump_json(exclude_unset=True)
    return b"data: " + data.encode() + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def _utf8() -> Any:
    import codecs

    return codecs.getincrementaldecoder("utf-8")("replace")


class _Cut:
    """Re-cuts a body's pieces, fed in order: into ``size``-byte chunks (``size`` None:
    as they come), or into lines without their ends (``lines``), as httpx's iterators do."""

    __slots__ = ("size", "bytes_", "text")

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.bytes_ = b""
        self.text = ""

    def chunks(self, piece: bytes) -> list[bytes]:
        if not self.size:
            return [piece]
        buf, size, out = self.bytes_ + piece, self.size, []
        while len(buf) >= size:
            out.append(buf[:size])
            buf = buf[size:]
        self.bytes_ = buf
        return out

    def lines(self, piece: bytes) -> list[str]:
        *out, self.text = (self.text + piece.decode("utf-8")).split("\n")
        return out

    def rest(self) -> list[Any]:
        """What is left once the body ended: a last short chunk, or a last line."""
        left = self.bytes_ or self.text
        return [left] if left else []


def _parse_to(response: _ResponseBase, to: Any) -> Any:
    """``parse(to=...)`` as openai's responses do it, from the answer's JSON: ``str``,
    ``bytes``, ``dict`` / ``list`` / ``object`` (the JSON), an ``httpx.Response``, or a
    pydantic model class."""
    import typing

    result = response._result
    if _is_stream(result):
        raise TypeError("parse(to=...) cannot turn a routekit stream into "
                        f"{getattr(to, '__name__', to)!r}; call parse() for the stream")
    http = response.http_response
    origin = typing.get_origin(to) or to
    if to is str:
        return http.text
    if to is bytes:
        return bytes(http.content)
    if to is object or origin in (dict, list):
        return http.json()
    if isinstance(origin, type) and isinstance(http, origin):
        return http
    model_validate = getattr(to, "model_validate", None)
    if isinstance(to, type) and model_validate is not None:
        return model_validate(http.json())
    raise TypeError(f"parse(to=...) takes str, bytes, dict, list, object, an httpx.Response "
                    f"class or a pydantic model class, got {to!r}")


class _ResponseBase:
    """What every response object here has: the routed result and its synthetic HTTP face."""

    def __init__(self, result: Any, *, path: str = "/chat/completions") -> None:
        self._result = result
        self._path = path
        self._http: Any = None

    @property
    def http_response(self) -> Any:
        if self._http is None:
            self._http = _http_response(self._result, self._path)
        return self._http

    @property
    def http_request(self) -> Any:
        return self.http_response.request

    @property
    def headers(self) -> Any:
        return self.http_response.headers

    @property
    def status_code(self) -> int:
        return 200

    @property
    def url(self) -> Any:
        return self.http_response.request.url

    @property
    def method(self) -> str:
        return "POST"

    @property
    def http_version(self) -> str:
        return "HTTP/1.1"

    @property
    def request_id(self) -> str | None:
        """The answering server's ``x-request-id``, as openai's has it (None in-process)."""
        value = self.headers.get("x-request-id")
        return value if isinstance(value, str) else None

    @property
    def retries_taken(self) -> int:
        """Calls made beyond the first, over every candidate of the route."""
        route = getattr(self._result, "route", None)
        if route is None:
            return 0
        tries: int = sum(max(a.tries, 0) for a in route.attempts)
        return max(0, tries - 1)

    @property
    def elapsed(self) -> datetime.timedelta:
        import datetime

        route = getattr(self._result, "route", None)
        return datetime.timedelta(milliseconds=route.total_ms if route is not None else 0.0)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{type(self._result).__name__}]>"


class RawResponse(_ResponseBase):
    """What ``with_raw_response.create(...)`` returns (openai's ``LegacyAPIResponse``):
    ``parse()`` gives the routed result; ``content`` / ``text`` are properties."""

    def parse(self, *, to: Any = None) -> Any:
        return self._result if to is None else _parse_to(self, to)

    @property
    def is_closed(self) -> bool:
        return True

    @property
    def content(self) -> bytes:
        return bytes(self.http_response.content)

    @property
    def text(self) -> str:
        return str(self.http_response.text)

    def json(self) -> Any:
        return self.http_response.json()

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class AsyncRawResponse(RawResponse):
    """``RawResponse`` of ``AsyncRouter``: its stream closes with ``await close()``."""

    async def close(self) -> None:  # type: ignore[override]
        close = getattr(self._result, "close", None)
        if close is not None:
            await close()


class RawNamespace:
    """``completions.with_raw_response``: each method returns a ``RawResponse``."""

    def __init__(self, owner: Any, path: str) -> None:
        self._owner = owner
        self._path = path

    def create(self, **kwargs: Any) -> RawResponse:
        return RawResponse(self._owner.create(**kwargs), path=self._path)

    def parse(self, **kwargs: Any) -> RawResponse:
        return RawResponse(self._owner.parse(**kwargs), path=self._path)


class AsyncRawNamespace:
    def __init__(self, owner: Any, path: str) -> None:
        self._owner = owner
        self._path = path

    async def create(self, **kwargs: Any) -> AsyncRawResponse:
        return AsyncRawResponse(await self._owner.create(**kwargs), path=self._path)

    async def parse(self, **kwargs: Any) -> AsyncRawResponse:
        return AsyncRawResponse(await self._owner.parse(**kwargs), path=self._path)


class _ReadOnce(_ResponseBase):
    """What both streaming responses keep: a stream's body as server-sent events, recorded
    as it is read (``_event`` / ``_end``), so a later ``read()`` has all of it."""

    def __init__(self, result: Any, *, path: str = "/chat/completions") -> None:
        super().__init__(result, path=path)
        self._body: bytes | None = None  # the whole body, once read to its end
        self._seen: list[bytes] = []  # a stream's events read so far
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed or not _is_stream(self._result)

    def _ready(self) -> bytes | None:
        """The whole body when no stream is left to read (read already, or not a stream)."""
        if self._body is not None:
            return self._body
        return None if _is_stream(self._result) else bytes(self.http_response.content)

    def _event(self, chunk: Any) -> bytes:
        piece = _sse(chunk)
        self._seen.append(piece)
        return piece

    def _end(self) -> bytes:
        if self._body is None:
            self._seen.append(_DONE)
            self._body = b"".join(self._seen)
        return _DONE


class StreamingResponse(_ReadOnce):
    """Yielded by ``with_streaming_response.create(...)``'s ``with`` block (openai's
    ``APIResponse``): ``read()`` / ``text()`` / ``json()`` and ``iter_bytes`` /
    ``iter_text`` / ``iter_lines``. For a stream the body is the server-sent events an
    OpenAI-compatible server writes (``data: {chunk}`` ... ``data: [DONE]``), produced as
    the stream yields; what was read is kept, so a later ``read()`` has all of it."""

    def parse(self, *, to: Any = None) -> Any:
        return self._result if to is None else _parse_to(self, to)

    def _pieces(self) -> Iterator[bytes]:
        """The body, piece by piece: what earlier reads took first (kept), then the rest of
        the stream as it comes."""
        ready = self._ready()
        if ready is not None:
            yield ready
            return
        yield from list(self._seen)
        for chunk in self._result:
            yield self._event(chunk)
        yield self._end()

    def read(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self._pieces())
        return self._body

    def text(self) -> str:
        return self.read().decode("utf-8")

    def json(self) -> Any:
        import json

        return json.loads(self.read())

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        cut = _Cut(chunk_size)
        for piece in self._pieces():
            yield from cut.chunks(piece)
        yield from cut.rest()

    def iter_text(self, chunk_size: int | None = None) -> Iterator[str]:
        decoder = _utf8()  # a character split between two byte chunks comes out whole
        for piece in self.iter_bytes(chunk_size):
            text = decoder.decode(piece)
            if text:
                yield text

    def iter_lines(self) -> Iterator[str]:
        """The body line by line, without line ends (a stream's events and their blank
        separator lines, as ``httpx`` gives them)."""
        cut = _Cut()
        for piece in self._pieces():
            yield from cut.lines(piece)
        yield from cut.rest()

    def close(self) -> None:
        self._closed = True
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class AsyncStreamingResponse(_ReadOnce):
    """``StreamingResponse`` for async routers (openai's ``AsyncAPIResponse``): ``parse``,
    ``read``, ``text``, ``json`` and ``close`` are awaited; ``iter_*`` are async
    iterators."""

    async def parse(self, *, to: Any = None) -> Any:
        return self._result if to is None else _parse_to(self, to)

    async def _pieces(self) -> AsyncIterator[bytes]:
        ready = self._ready()
        if ready is not None:
            yield ready
            return
        for piece in list(self._seen):
            yield piece
        async for chunk in self._result:
            yield self._event(chunk)
        yield self._end()

    async def read(self) -> bytes:
        if self._body is None:
            self._body = b"".join([piece async for piece in self._pieces()])
        return self._body

    async def text(self) -> str:
        return (await self.read()).decode("utf-8")

    async def json(self) -> Any:
        import json

        return json.loads(await self.read())

    async def iter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        cut = _Cut(chunk_size)
        async for piece in self._pieces():
            for chunk in cut.chunks(piece):
                yield chunk
        for chunk in cut.rest():
            yield chunk

    async def iter_text(self, chunk_size: int | None = None) -> AsyncIterator[str]:
        decoder = _utf8()
        async for piece in self.iter_bytes(chunk_size):
            text = decoder.decode(piece)
            if text:
                yield text

    async def iter_lines(self) -> AsyncIterator[str]:
        cut = _Cut()
        async for piece in self._pieces():
            for line in cut.lines(piece):
                yield line
        for line in cut.rest():
            yield line

    async def close(self) -> None:
        self._closed = True
        close = getattr(self._result, "close", None)
        if close is not None:
            await close()


class _StreamingContext:
    def __init__(self, call: Callable[[], Any], path: str) -> None:
        self._call = call
        self._path = path
        self._response: StreamingResponse | None = None

    def __enter__(self) -> StreamingResponse:
        self._response = StreamingResponse(self._call(), path=self._path)
        return self._response

    def __exit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.close()


class _AsyncStreamingContext:
    def __init__(self, call: Callable[[], Awaitable[Any]], path: str) -> None:
        self._call = call
        self._path = path
        self._response: AsyncStreamingResponse | None = None

    async def __aenter__(self) -> AsyncStreamingResponse:
        self._response = AsyncStreamingResponse(await self._call(), path=self._path)
        return self._response

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            await self._response.close()


class StreamingNamespace:
    """``completions.with_streaming_response``: each method returns a context manager; the
    request is made when the ``with`` block is entered."""

    def __init__(self, owner: Any, path: str) -> None:
        self._owner = owner
        self._path = path

    def create(self, **kwargs: Any) -> _StreamingContext:
        return _StreamingContext(lambda: self._owner.create(**kwargs), self._path)

    def parse(self, **kwargs: Any) -> _StreamingContext:
        return _StreamingContext(lambda: self._owner.parse(**kwargs), self._path)


class AsyncStreamingNamespace:
    def __init__(self, owner: Any, path: str) -> None:
        self._owner = owner
        self._path = path

    def create(self, **kwargs: Any) -> _AsyncStreamingContext:
        return _AsyncStreamingContext(lambda: self._owner.create(**kwargs), self._path)

    def parse(self, **kwargs: Any) -> _AsyncStreamingContext:
        return _AsyncStreamingContext(lambda: self._owner.parse(**kwargs), self._path)


class RawSurface:
    """Mixin: ``with_raw_response`` / ``with_streaming_response`` for an object whose
    ``create`` (and ``parse``) they wrap; ``raw_path`` is the API path they stand for."""

    raw_path: str

    @property
    def with_raw_response(self) -> RawNamespace:
        return RawNamespace(self, self.raw_path)

    @property
    def with_streaming_response(self) -> StreamingNamespace:
        return StreamingNamespace(self, self.raw_path)


class AsyncRawSurface:
    """Async twin of ``RawSurface``."""

    raw_path: str

    @property
    def with_raw_response(self) -> AsyncRawNamespace:
        return AsyncRawNamespace(self, self.raw_path)

    @property
    def with_streaming_response(self) -> AsyncStreamingNamespace:
        return AsyncStreamingNamespace(self, self.raw_path)
