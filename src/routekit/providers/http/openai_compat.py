"""The HTTP provider: Ollama, vLLM, llama.cpp server and OpenAI-style clouds, through ``openai``.

This module owns one configured HTTP provider: its ``openai.OpenAI`` / ``openai.AsyncOpenAI``
clients (created lazily, once, with ``max_retries=0``: routekit owns retries), the mapping of
a ``Deadline`` onto the client's timeouts, stream bookkeeping (a stream that ends without a
``finish_reason`` is an interruption, not an answer), and a cheap health probe. Every error
leaves through ``_errors.translate`` (``raise ... from exc``).

It must not retry, sleep, pick candidates or touch breaker state (the attempt loop does), and
must not import ``openai`` at module import time (``import routekit`` stays fast).

Stream contract (sync and async alike): failures before the first chunk raise the precise
``ProviderError`` (``ConnectionFailed``, ``RateLimited``, ...). Once a chunk has been yielded,
every failure raises ``StreamInterrupted`` with ``partial`` (the text of choice 0 so far) and
the precise error on ``__cause__``. A stream that ends without any ``finish_reason`` (a cut
connection that the ``openai`` client reports as a normal end, or llama_cpp.server's empty
200 body on a context overflow) raises ``StreamInterrupted`` too, even with zero chunks.

Deadlines: ``connect`` and ``min(read, total)`` become the client's per-phase timeouts (the
read timeout bounds each socket read). The total is enforced between stream chunks, and,
for async calls, by a cancel scope around the whole request; a sync non-streaming call can
overshoot ``total`` only while a slow server keeps trickling bytes.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, AsyncGenerator, Callable, ContextManager, Generator
from urllib.parse import urlsplit

from ... import _constants as C
from ..._config.model import ProviderConfig, TimeoutConfig
from ..._exceptions import (
    ConfigError,
    ConfigIssue,
    MissingAPIKey,
    ProviderError,
    RequestTimeout,
    StreamInterrupted,
)
from ..._secrets import secret_from_env
from .._base import ChatRequest, Deadline, HealthReport
from .errors import translate
from .transport import http_lib

if TYPE_CHECKING:
    import ssl

    import anyio
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["DEFAULT_CLOUD_KEY_ENV", "OpenAICompatProvider"]

# The variable the openai kind reads when the config names none (the openai client's own).
DEFAULT_CLOUD_KEY_ENV = "OPENAI_API_KEY"
# Local servers ignore the key, but the openai client refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"
# Arguments routekit itself sets on every create() call; a request's params may not override them.
_RESERVED = frozenset(
    {"model", "messages", "stream", "timeout", "extra_body", "extra_headers", "extra_query"}
)
_TIMEOUT_CACHE_MAX = 256

_create_args: frozenset[str] | None = None


def _known_create_args() -> frozenset[str]:
    """Keyword arguments the installed ``chat.completions.create`` accepts (computed once)."""
    global _create_args
    if _create_args is None:
        import inspect

        from openai.resources.chat.completions import Completions

        params = inspect.signature(Completions.create).parameters
        _create_args = frozenset(params) - _RESERVED - {"self"}
    return _create_args


def _is_loopback(url: str) -> bool:
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _StreamState:
    """What a stream has delivered so far: enough to judge how it ended."""

    __slots__ = ("chunks", "finished", "parts")

    def __init__(self) -> None:
        self.chunks = 0
        self.finished = False
        self.parts: list[str] = []

    def observe(self, chunk: ChatCompletionChunk) -> None:
        self.chunks += 1
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.finished = True
            if choice.index == 0:
                delta = choice.delta
                content = delta.content if delta is not None else None
                if content:
                    self.parts.append(content)

    @property
    def partial(self) -> str:
        return "".join(self.parts)


class OpenAICompatProvider:
    """One HTTP provider (kinds ``ollama``, ``vllm``, ``llama_cpp_server``, ``openai``).

    Thread safety: one instance may be shared by any number of threads; the sync client is
    created once under a lock and the ``openai`` client is itself thread-safe. Async: one
    ``AsyncOpenAI`` per running event loop (normally exactly one), since pooled connections
    belong to the loop that opened them.
    """

    def __init__(
        self, name: str, config: ProviderConfig, *, default_timeout: TimeoutConfig
    ) -> None:
        base_url = config.effective_base_url
        if config.in_process or base_url is None:
            raise ConfigError(
                [
                    ConfigIssue(
                        f'providers["{name}"].kind',
                        f"kind {config.kind!r} is not an HTTP provider",
                    )
                ]
            )
        self.name = name
        self.kind: str = config.kind
        self.config = config
        self.base_url = base_url.rstrip("/")
        self._models_url = self.base_url + "/models"
        self._timeouts = config.timeout or default_timeout
        self._key_env = config.api_key_env or (
            DEFAULT_CLOUD_KEY_ENV if config.kind in C.CLOUD_KINDS else None
        )
        self._plain_http = urlsplit(self.base_url).scheme == "http"
        self._loopback = _is_loopback(self.base_url)

        self._lock = threading.Lock()
        self._key: str | None = None
        self._http: Any = None  # the http_lib().Client under the sync openai client
        self._create: Callable[..., Any] | None = None  # bound chat.completions.create
        self._client: openai.OpenAI | None = None
        # event loop -> (openai.AsyncOpenAI, bound create)
        self._async: weakref.WeakKeyDictionary[
            object, tuple[openai.AsyncOpenAI, Callable[..., Any]]
        ] = weakref.WeakKeyDictionary()
        self._timeout_cache: dict[tuple[float, float], Any] = {}

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"

    # --- clients ------------------------------------------------------------------------

    def _api_key(self, model: str | None) -> str:
        if self._key is not None:
            return self._key
        if self._key_env is None:
            return _PLACEHOLDER_KEY
        value = secret_from_env(self._key_env)
        if not value:
            origin = "api_key_env" if self.config.api_key_env else f"the {self.kind} kind's default"
            raise MissingAPIKey(
                f"provider {self.name!r}: environment variable {self._key_env} is not set "
                f"({origin}); export it, or take this provider out of the chain",
                provider=self.name,
                model=model,
            )
        self._key = value
        return value

    def _http_options(self) -> dict[str, Any]:
        lib = http_lib()

        opts: dict[str, Any] = {
            "timeout": lib.Timeout(
                connect=self._timeouts.connect,
                read=self._timeouts.read,
                write=self._timeouts.read,
                pool=self._timeouts.connect,
            ),
            "limits": lib.Limits(max_connections=1000, max_keepalive_connections=100),
            # Proxy variables meant for the internet must not capture loopback servers.
            "trust_env": not self._loopback,
        }
        if self._plain_http:
            # No TLS on this URL: building the default SSL context costs ~20 ms per client
            # (certifi bundle), paid on the first request. Redirects are off so nothing
            # can lead this unverified client to an https URL.
            opts["verify"] = False
            opts["follow_redirects"] = False
        else:
            # One verifying context for every TLS client in the process: each new one
            # would load the CA bundle again (~20 ms).
            opts["verify"] = _tls_context()
            opts["follow_redirects"] = True
        return opts

    def _sync_create(self, model: str | None) -> Callable[..., Any]:
        create = self._create
        if create is not None:
            return create
        with self._lock:
            if self._create is None:
                key = self._api_key(model)
                lib = http_lib()
                import openai

                http = lib.Client(**self._http_options())
                client = openai.OpenAI(
                    api_key=key,
                    base_url=self.base_url,
                    max_retries=0,
                    http_client=http,
                )
                self._http, self._client = http, client
                self._create = client.chat.completions.create
            return self._create

    def _async_create(self, model: str | None) -> Callable[..., Any]:
        loop = _running_loop_key()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[1]
        with self._lock:
            entry = self._async.get(loop)
            if entry is None:
                key = self._api_key(model)
                lib = http_lib()
                import openai

                client = openai.AsyncOpenAI(
                    api_key=key,
                    base_url=self.base_url,
                    max_retries=0,
                    http_client=lib.AsyncClient(**self._http_options()),
                )
                entry = (client, client.chat.completions.create)
                self._async[loop] = entry
            return entry[1]

    def warm(self) -> None:
        """Import ``openai`` and build the sync client now (no network), off the hot path.

        Raises ``MissingAPIKey`` when the key's variable is unset.
        """
        self._sync_create(None)

    def _timeout(self, deadline: Deadline, model: str) -> Any:
        total = deadline.total
        if total <= 0:
            raise RequestTimeout(
                f"provider {self.name!r}: no time left in the request deadline",
                provider=self.name,
                model=model,
            )
        connect = min(deadline.connect, total)
        read = min(deadline.read, total)
        key = (connect, read)
        timeout = self._timeout_cache.get(key)
        if timeout is None:
            lib = http_lib()

            timeout = lib.Timeout(connect=connect, read=read, write=read, pool=connect)
            if len(self._timeout_cache) >= _TIMEOUT_CACHE_MAX:
                self._timeout_cache.clear()
            self._timeout_cache[key] = timeout
        return timeout

    def _kwargs(self, request: ChatRequest, timeout: Any, *, stream: bool
                ) -> dict[str, Any]:
        known = _create_args if _create_args is not None else _known_create_args()
        kw: dict[str, Any] = {
            "model": request.model_id,
            "messages": request.messages,
            "timeout": timeout,
        }
        extra: dict[str, Any] | None = None
        for name, value in request.params.items():
            if value is None or name in _RESERVED:
                continue
            if name in known:
                kw[name] = value
            else:
                # Server-specific sampling knobs (top_k, repeat_penalty, ...) travel in the body.
                if extra is None:
                    extra = {}
                extra[name] = value
        if request.extra_body:
            extra = {**extra, **request.extra_body} if extra else dict(request.extra_body)
        if extra:
            kw["extra_body"] = extra
        if request.extra_headers:
            kw["extra_headers"] = request.extra_headers
        if request.extra_query:
            kw["extra_query"] = request.extra_query
        if stream:
            # stream_options only when the caller asked: include_usage adds a last chunk with
            # choices == [], which code written against the openai client does not expect.
            kw["stream"] = True
        else:
            # Shared defaults may carry it; OpenAI rejects it (400) on non-stream requests.
            kw.pop("stream_options", None)
        return kw

    # --- sync -----------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        create = self._sync_create(request.model)
        kwargs = self._kwargs(request, self._timeout(deadline, request.model), stream=False)
        try:
            result = create(**kwargs)
        except Exception as exc:
            raise translate(exc, provider=self.name, model=request.model) from exc
        return self._checked(result, request)

    def stream(
        self, request: ChatRequest, deadline: Deadline
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Generator of chunks; the request is sent on the first ``next()``."""
        end = time.monotonic() + deadline.total
        create = self._sync_create(request.model)
        kwargs = self._kwargs(request, self._timeout(deadline, request.model), stream=True)
        try:
            upstream = create(**kwargs)
        except Exception as exc:
            raise translate(exc, provider=self.name, model=request.model) from exc
        state = _StreamState()
        pull = upstream.__next__
        try:
            while True:
                try:
                    chunk = pull()
                except StopIteration:
                    break
                except Exception as exc:
                    raise self._broken(exc, state, request)  # noqa: B904 - chained inside
                if time.monotonic() > end:
                    raise self._over_deadline(state, request)
                state.observe(chunk)
                yield chunk
        finally:
            upstream.close()
        if not state.finished:
            raise self._unfinished(state, request)

    # --- async ----------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        create = self._async_create(request.model)
        kwargs = self._kwargs(request, self._timeout(deadline, request.model), stream=False)
        try:
            # The client's read timeout bounds each socket read; the scope bounds the whole.
            with _deadline_scope(deadline.total):
                result = await create(**kwargs)
        except Exception as exc:
            raise translate(exc, provider=self.name, model=request.model) from exc
        return self._checked(result, request)

    async def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Async generator of chunks; the request is sent on the first ``__anext__()``."""
        end = time.monotonic() + deadline.total
        create = self._async_create(request.model)
        kwargs = self._kwargs(request, self._timeout(deadline, request.model), stream=True)
        try:
            with _deadline_scope(deadline.total):
                upstream = await create(**kwargs)
        except Exception as exc:
            raise translate(exc, provider=self.name, model=request.model) from exc
        state = _StreamState()
        pull = upstream.__anext__
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise self._over_deadline(state, request)
                try:
                    with _deadline_scope(left):
                        chunk = await pull()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise self._broken(exc, state, request)  # noqa: B904 - chained inside
                state.observe(chunk)
                yield chunk
        finally:
            await upstream.close()
        if not state.finished:
            raise self._unfinished(state, request)

    # --- stream endings -------------------------------------------------------------------

    def _broken(self, exc: BaseException, state: _StreamState, request: ChatRequest) -> ProviderError:
        """The error to raise for ``exc`` met mid-stream, with its causes already chained
        (raise it bare: ``raise ... from exc`` would cut the chain)."""
        err = translate(exc, provider=self.name, model=request.model)
        if err is not exc:
            err.__cause__ = exc
        if state.chunks == 0:
            return err
        interrupted = StreamInterrupted(
            f"provider {self.name!r}: stream interrupted after {state.chunks} chunk(s): {err.message}",
            provider=self.name,
            model=request.model,
            partial=state.partial,
        )
        interrupted.__cause__ = err
        return interrupted

    def _over_deadline(self, state: _StreamState, request: ChatRequest) -> ProviderError:
        err = RequestTimeout(
            f"provider {self.name!r}: total deadline passed while streaming",
            provider=self.name,
            model=request.model,
        )
        return self._broken(err, state, request)

    def _unfinished(self, state: _StreamState, request: ChatRequest) -> StreamInterrupted:
        return StreamInterrupted(
            f"provider {self.name!r}: stream ended without a finish_reason after "
            f"{state.chunks} chunk(s) (connection cut, or the server failed mid-stream)",
            provider=self.name,
            model=request.model,
            partial=state.partial,
        )

    def _checked(self, result: Any, request: ChatRequest) -> ChatCompletion:
        from openai.types.chat import ChatCompletion

        if not isinstance(result, ChatCompletion):
            raise ProviderError(
                f"provider {self.name!r}: response is not a chat completion "
                f"({type(result).__name__})",
                provider=self.name,
                model=request.model,
            )
        return result

    # --- health and lifetime --------------------------------------------------------------

    def health(self, timeout: float = 1.0) -> HealthReport:
        """GET ``{base_url}/models``; never raises."""
        start = time.perf_counter()
        try:
            self._sync_create(None)
            lib = http_lib()

            headers = {"Authorization": f"Bearer {self._key}"} if self._key else None
            response = self._http.get(
                self._models_url, headers=headers, timeout=lib.Timeout(timeout)
            )
            try:
                if response.status_code != 200:
                    response.raise_for_status()
                payload = response.json()
            finally:
                response.close()
        except Exception as exc:
            err = translate(exc, provider=self.name, model=None)
            return HealthReport(self.name, False, err.message, _ms_since(start))
        data = payload.get("data") if isinstance(payload, dict) else None
        count = len(data) if isinstance(data, list) else 0
        return HealthReport(self.name, True, f"{count} model(s) listed", _ms_since(start))

    def close(self) -> None:
        """Close the sync client and forget the async ones (``aclose`` closes those)."""
        with self._lock:
            client, self._client, self._create, self._http = self._client, None, None, None
            self._async = weakref.WeakKeyDictionary()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        loop = _running_loop_key()
        with self._lock:
            entry = self._async.pop(loop, None)
        if entry is not None:
            await entry[0].close()
        self.close()


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    with _tls_lock:
        if _tls is None:
            lib = http_lib()

            _tls = lib.create_ssl_context(verify=True, trust_env=True)
        return _tls


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class _NoLoop:
    """Weak-referenceable stand-in key when no asyncio loop runs (e.g. under trio)."""


_NO_LOOP = _NoLoop()


def _running_loop_key() -> object:
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _NO_LOOP


def _deadline_scope(seconds: float) -> ContextManager[anyio.CancelScope]:
    """A cancel scope raising ``TimeoutError`` after ``seconds`` (anyio: asyncio or trio).

    About 10 µs per use, against ~260 µs of openai client work per streamed chunk.
    """
    import anyio

    return anyio.fail_after(seconds)
