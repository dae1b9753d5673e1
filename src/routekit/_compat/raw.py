"""``with_raw_response`` and ``with_streaming_response``, as the openai client has them.

Owns the response objects those return. A router has no single HTTP response, so these stand
for the routed answer: ``parse()`` returns what ``create`` (or ``parse``) returned — the
routed completion, or the ``Stream`` — and ``headers`` / ``http_response`` are a synthetic
``httpx.Response`` (status 200) whose ``x-routekit-*`` headers name the model and provider
that answered. ``RawResponse`` is openai's ``LegacyAPIResponse`` shape (``parse()`` is sync,
also for async clients); ``StreamingResponse`` is the one ``with_streaming_response`` yields
in a ``with`` block (its ``parse()`` is awaited for async clients), and closes the stream at
the end of the block.

The wrappers forward their keyword arguments unchanged to the method they wrap, whose own
signature checks them (openai's wrappers do the same). Nothing here routes: every call is the
wrapped method's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

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
    return make_response(200, headers=route_headers(route),
                         body=dump(mode="json", warnings=False) if dump is not None else None,
                         path=path)


class RawResponse:
    """What ``with_raw_response.create(...)`` returns: ``parse()`` gives the routed result."""

    def __init__(self, result: Any, *, path: str = "/chat/completions") -> None:
        self._result = result
        self._path = path
        self._http: Any = None

    def parse(self, *, to: Any = None) -> Any:
        return self._result

    @property
    def http_response(self) -> Any:
        if self._http is None:
            self._http = _http_response(self._result, self._path)
        return self._http

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
        return None

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

    def __repr__(self) -> str:
        return f"<RawResponse [{type(self._result).__name__}]>"


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

    async def create(self, **kwargs: Any) -> RawResponse:
        return RawResponse(await self._owner.create(**kwargs), path=self._path)

    async def parse(self, **kwargs: Any) -> RawResponse:
        return RawResponse(await self._owner.parse(**kwargs), path=self._path)


class StreamingResponse(RawResponse):
    """Yielded by ``with_streaming_response.create(...)``'s ``with`` block."""

    def iter_lines(self) -> Iterator[str]:
        """The answer as text lines: for a stream, each chunk as JSON (one per line)."""
        result: Any = self._result
        if hasattr(result, "__next__"):
            for chunk in result:
                yield chunk.model_dump_json()
        else:
            yield from self.text.splitlines()


class AsyncStreamingResponse(RawResponse):
    async def parse(self, *, to: Any = None) -> Any:
        return self._result

    async def close(self) -> None:  # type: ignore[override]
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
