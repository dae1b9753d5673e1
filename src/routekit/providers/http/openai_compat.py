"""The HTTP provider: Ollama, vLLM, llama.cpp server and OpenAI-style clouds, through ``openai``.

This module owns one configured HTTP provider: its ``openai.OpenAI`` / ``openai.AsyncOpenAI``
clients (created lazily, once, with ``max_retries=0``: routekit owns retries; never again
after ``close()``), the mapping of a ``Deadline`` onto the client's timeouts, stream
bookkeeping, and the health probe of its kind. The keyword arguments of each call are
``call_args``'s. Every error leaves through
``errors.translate`` (``raise ... from exc``).

It must not retry, sleep, pick candidates or touch breaker state (the pipeline does), and
must not import ``openai`` at module import time (``import routekit`` stays fast).

Streams raise the precise ``ProviderError`` for any failure (``ConnectionFailed``,
``RateLimited``, ``RequestTimeout``...); the pipeline decides what it means (before the first
text: fall back; after: ``StreamInterrupted`` with the partial text). A stream that ends
without any ``finish_reason`` (a cut connection that the ``openai`` client reports as a
normal end, or llama_cpp.server's empty 200 body on a context overflow) raises
``ProviderError`` too.

Deadlines, sync and async alike: the first chunk must come within ``first_byte``, each later
socket read within ``read``, and the whole call ends by ``total`` — sync calls through
``transport.call_deadline`` (every socket operation of the call), async ones through a
cancel scope. With ``stream_upstream`` (default for local kinds) a non-streaming request is
streamed from the server and assembled (``assemble.py``), so a hung server is told from a
slow answer; without it, ``first_byte`` bounds the wait for the whole answer.

Legacy text completions (``complete_text``, ``stream_text`` and their async twins) take the
same paths through the server's ``/v1/completions`` (the openai client's
``completions.create``), with ``prompt`` instead of ``messages``.
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
)
from ..._secrets import install_log_redaction, secret_from_env
from .._base import ChatRequest, Deadline, HealthReport, chat_chunk_answers, text_chunk_answers
from .assemble import Assembler, TextAssembler
from .call_args import call_kwargs
from .errors import translate
from .loops import running_loop_key, start_closer
from .probe import failed as failed_probe
from .probe import judge, probe_url
from .transport import call_deadline, http_lib, install_deadlines, tls_context

if TYPE_CHECKING:
    import anyio
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["DEFAULT_CLOUD_KEY_ENV", "OpenAICompatProvider"]

# The variable the openai kind reads when the config names none (the openai client's own).
DEFAULT_CLOUD_KEY_ENV = "OPENAI_API_KEY"
# Local servers ignore the key, but the openai client refuses to start without one.
_PLACEHOLDER_KEY = "not-needed"
_TIMEOUT_CACHE_MAX = 256


def _is_loopback(url: str) -> bool:
    import ipaddress

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAICompatProvider:
    """One HTTP provider (kinds ``ollama``, ``vllm``, ``llama_cpp_server``, ``openai``).

    Thread safety: one instance may be shared by any number of threads; the sync client is
    created once under a lock and the ``openai`` client is itself thread-safe. Async: one
    ``AsyncOpenAI`` per running event loop (normally exactly one), since pooled connections
    belong to the loop that opened them.
    """

    def __init__(
        self, name: str, config: ProviderConfig, *, default_timeout: TimeoutConfig,
        probe_path: str | None = None,
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
        self._probe_url = probe_url(self.base_url, self.kind, probe_path)
        self._timeouts = default_timeout
        self._stream_upstream = config.effective_stream_upstream
        self._key_env = config.api_key_env or (
            DEFAULT_CLOUD_KEY_ENV if config.kind in C.CLOUD_KINDS else None
        )
        self._plain_http = urlsplit(self.base_url).scheme == "http"
        self._loopback = _is_loopback(self.base_url)
        self._local = config.kind not in C.CLOUD_KINDS  # call_args: the cap as max_tokens

        self._lock = threading.Lock()
        self._closed = False
        self._key: str | None = None
        self._http: Any = None  # the http_lib().Client under the sync openai client
        self._create: Callable[..., Any] | None = None  # bound chat.completions.create
        self._create_text: Callable[..., Any] | None = None  # bound completions.create
        self._client: openai.OpenAI | None = None
        # event loop -> (openai.AsyncOpenAI, bound chat create, http client, bound text create,
        # the loop's closer: see _loop_closer)
        self._async: weakref.WeakKeyDictionary[
            object, tuple[openai.AsyncOpenAI, Callable[..., Any], Any, Callable[..., Any],
                          AsyncGenerator[None, None] | None]
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
        problem = _unsendable(value)
        if problem is not None:
            raise MissingAPIKey(
                f"provider {self.name!r}: environment variable {self._key_env} {problem}, "
                "which an HTTP header cannot carry; fix the value (not shown)",
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
            opts["verify"] = tls_context()
            opts["follow_redirects"] = True
        return opts

    def _closed_error(self, model: str | None) -> ProviderError:
        return ProviderError(f"provider {self.name!r} is closed", provider=self.name, model=model)

    def _sync_create(self, model: str | None, text: bool = False) -> Callable[..., Any]:
        create = self._create_text if text else self._create
        if create is not None:
            return create
        with self._lock:
            if self._closed:
                # A request racing close() must not build a client nobody will close.
                raise self._closed_error(model)
            if self._create is None:
                key = self._api_key(model)
                lib = http_lib()
                import openai

                http = lib.Client(**self._http_options())
                install_deadlines(http)
                install_log_redaction()
                client = openai.OpenAI(
                    api_key=key,
                    base_url=self.base_url,
                    max_retries=0,
                    http_client=http,
                )
                self._http, self._client = http, client
                self._create = client.chat.completions.create
                self._create_text = client.completions.create
            return self._create_text if text else self._create  # type: ignore[return-value]

    def _async_create(self, model: str | None, text: bool = False) -> Callable[..., Any]:
        loop = running_loop_key()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[3] if text else entry[1]
        with self._lock:
            if self._closed:
                raise self._closed_error(model)
            entry = self._async.get(loop)
            if entry is None:
                key = self._api_key(model)
                lib = http_lib()
                import openai

                install_log_redaction()
                http = lib.AsyncClient(**self._http_options())
                client = openai.AsyncOpenAI(
                    api_key=key,
                    base_url=self.base_url,
                    max_retries=0,
                    http_client=http,
                )
                entry = (client, client.chat.completions.create, http,
                         client.completions.create, start_closer(self, loop))
                self._async[loop] = entry
            return entry[3] if text else entry[1]

    def warm(self) -> None:
        """Import ``openai`` and build the sync client now (no network), off the hot path.

        Raises ``MissingAPIKey`` when the key's variable is unset.
        """
        self._sync_create(None)

    def _timeout(self, deadline: Deadline, model: str, *, first: bool) -> Any:
        """The client's per-phase timeouts. Its read timeout must let the first byte take
        as long as ``first_byte`` allows (all of ``total`` when there is no such limit: a
        cloud reasoning model may think for minutes before its first token): ``read``
        bounds only the silences once bytes flow. A non-streaming answer (``first``) has no
        such silences; a stream's are bounded per chunk by the callers (``_silence_end``),
        so here the read timeout is the larger of the two."""
        total = deadline.total
        if total <= 0:
            raise RequestTimeout(
                f"provider {self.name!r}: no time left in the request deadline",
                provider=self.name,
                model=model,
            )
        connect = min(deadline.connect, total)
        fb = deadline.first_byte
        read = total if fb is None or fb > total else fb
        if not first and deadline.read > read:
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

    def _first_byte_timeout(self, request: ChatRequest, deadline: Deadline, waited: float
                            ) -> RequestTimeout:
        return RequestTimeout(
            f"provider {self.name!r}: no first byte within {waited:.3g} s",
            provider=self.name, model=request.model,
        )

    def _ends(self, deadline: Deadline) -> tuple[float, float]:
        """(first-byte end, total end) on the monotonic clock, for this call."""
        now = time.monotonic()
        end = now + deadline.total
        fb = deadline.first_byte
        return (end if fb is None or fb >= deadline.total else now + fb), end

    # --- sync -----------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        if self._stream_upstream:
            assembled: ChatCompletion = self._assembled(request, deadline)
            return assembled
        create = self._sync_create(request.model, request.prompt is not None)
        kwargs = call_kwargs(request, self._timeout(deadline, request.model, first=True),
                              stream=False, cap_as_max_tokens=self._local)
        # No byte arrives before the whole answer here: first_byte bounds all of it.
        first_end, end = self._ends(deadline)
        try:
            with call_deadline(first_end):
                result = create(**kwargs)
        except Exception as exc:
            raise self._failed(exc, request, deadline, first_end, end, False) from exc
        return self._checked(result, request)

    def _assembled(self, request: ChatRequest, deadline: Deadline) -> Any:
        """A non-streaming request, streamed upstream and assembled."""
        asm = Assembler() if request.prompt is None else TextAssembler()
        stream = self._stream(request, deadline, include_usage=True)
        try:
            for chunk in stream:
                asm.add(chunk)
        except RequestTimeout as exc:
            exc.partial = asm.partial()
            raise
        return asm.completion()

    def stream(
        self, request: ChatRequest, deadline: Deadline
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Generator of chunks; the request is sent on the first ``next()``."""
        return self._stream(request, deadline, include_usage=False)

    def _stream(
        self, request: ChatRequest, deadline: Deadline, *, include_usage: bool
    ) -> Generator[ChatCompletionChunk, None, None]:
        first_end, end = self._ends(deadline)
        create = self._sync_create(request.model, request.prompt is not None)
        # Per-read timeout is the stall bound; the first byte is bounded by the call
        # deadline (sync) or cancel scope (async) below, not by every later read.
        kwargs = call_kwargs(request, self._timeout(deadline, request.model, first=False),
                              stream=True, include_usage=include_usage,
                              cap_as_max_tokens=self._local)
        chunks = 0
        finished = answered = False
        answers = chat_chunk_answers if request.prompt is None else text_chunk_answers
        try:
            with call_deadline(first_end):
                upstream = create(**kwargs)
        except Exception as exc:
            raise self._failed(exc, request, deadline, first_end, end, False) from exc
        pull = upstream.__next__
        silence = deadline.read
        try:
            while True:
                # The answer's first chunk (a role-only one is not) by first_byte; each later
                # one within ``read`` of the last.
                t_end = first_end if not answered else _silence_end(end, silence)
                try:
                    with call_deadline(t_end):
                        chunk = pull()
                except StopIteration:
                    break
                except Exception as exc:
                    raise self._failed(exc, request, deadline, first_end, end, answered,
                                       t_end) from exc
                chunks += 1
                answered = answered or answers(chunk)
                if not finished:
                    for choice in chunk.choices:
                        if choice.finish_reason is not None:
                            finished = True
                handed = time.monotonic()
                yield chunk
                # The caller's time with the chunk is not the server's: a slow reader (TTS,
                # a websocket with backpressure) must not cut an answer the server sent.
                end += time.monotonic() - handed
        finally:
            upstream.close()
        if not finished:
            raise self._unfinished(chunks, request)

    def _failed(self, exc: BaseException, request: ChatRequest, deadline: Deadline,
                first_end: float, end: float, answered: bool,
                silence_end: float | None = None) -> ProviderError:
        err = translate(exc, provider=self.name, model=request.model)
        if isinstance(err, RequestTimeout):
            now = time.monotonic()
            if not answered and first_end < end and now >= first_end - 0.001:
                return self._first_byte_timeout(request, deadline,
                                                deadline.total - (end - first_end))
            if now >= end - 0.001:
                return RequestTimeout(
                    f"provider {self.name!r}: the attempt's deadline ({deadline.total:.3g} s) "
                    f"passed" + (" while streaming" if answered else ""),
                    provider=self.name, model=request.model,
                )
            if answered and silence_end is not None and now >= silence_end - 0.001:
                return RequestTimeout(
                    f"provider {self.name!r}: the stream stalled (no chunk for "
                    f"{deadline.read:.3g} s, the read timeout)",
                    provider=self.name, model=request.model,
                )
        return err

    # --- async ----------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        if self._stream_upstream:
            asm: Any = Assembler() if request.prompt is None else TextAssembler()
            try:
                async for chunk in self._astream(request, deadline, include_usage=True):
                    asm.add(chunk)
            except RequestTimeout as exc:
                exc.partial = asm.partial()
                raise
            result: ChatCompletion = asm.completion()
            return result
        create = self._async_create(request.model, request.prompt is not None)
        kwargs = call_kwargs(request, self._timeout(deadline, request.model, first=True),
                              stream=False, cap_as_max_tokens=self._local)
        first_end, end = self._ends(deadline)
        try:
            # The client's read timeout bounds each socket read; the scope bounds the whole.
            with _deadline_scope(first_end - time.monotonic()):
                result = await create(**kwargs)
        except Exception as exc:
            raise self._failed(exc, request, deadline, first_end, end, False) from exc
        return self._checked(result, request)

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Async generator of chunks; the request is sent on the first ``__anext__()``."""
        return self._astream(request, deadline, include_usage=False)

    async def _astream(
        self, request: ChatRequest, deadline: Deadline, *, include_usage: bool
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        first_end, end = self._ends(deadline)
        create = self._async_create(request.model, request.prompt is not None)
        # Per-read timeout is the stall bound; the first byte is bounded by the call
        # deadline (sync) or cancel scope (async) below, not by every later read.
        kwargs = call_kwargs(request, self._timeout(deadline, request.model, first=False),
                              stream=True, include_usage=include_usage,
                              cap_as_max_tokens=self._local)
        chunks = 0
        finished = answered = False
        answers = chat_chunk_answers if request.prompt is None else text_chunk_answers
        try:
            with _deadline_scope(first_end - time.monotonic()):
                upstream = await create(**kwargs)
        except Exception as exc:
            raise self._failed(exc, request, deadline, first_end, end, False) from exc
        pull = upstream.__anext__
        silence = deadline.read
        try:
            while True:
                t_end = first_end if not answered else _silence_end(end, silence)
                try:
                    with _deadline_scope(t_end - time.monotonic()):
                        chunk = await pull()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise self._failed(exc, request, deadline, first_end, end, answered,
                                       t_end) from exc
                chunks += 1
                answered = answered or answers(chunk)
                if not finished:
                    for choice in chunk.choices:
                        if choice.finish_reason is not None:
                            finished = True
                handed = time.monotonic()
                yield chunk
                end += time.monotonic() - handed  # the caller's time is not the server's
        finally:
            await upstream.close()
        if not finished:
            raise self._unfinished(chunks, request)

    # --- legacy text completions (providers._base.TextProvider) ----------------------------
    # The same paths as chat: ``request.prompt`` selects ``completions.create``.

    def complete_text(self, request: ChatRequest, deadline: Deadline) -> Any:
        return self.complete(request, deadline)

    def stream_text(self, request: ChatRequest, deadline: Deadline) -> Generator[Any, None, None]:
        return self._stream(request, deadline, include_usage=False)

    async def acomplete_text(self, request: ChatRequest, deadline: Deadline) -> Any:
        return await self.acomplete(request, deadline)

    def astream_text(self, request: ChatRequest, deadline: Deadline
                     ) -> AsyncGenerator[Any, None]:
        return self._astream(request, deadline, include_usage=False)

    # --- stream endings -------------------------------------------------------------------

    def _unfinished(self, chunks: int, request: ChatRequest) -> ProviderError:
        return ProviderError(
            f"provider {self.name!r}: stream ended without a finish_reason after "
            f"{chunks} chunk(s) (connection cut, or the server failed mid-stream)",
            provider=self.name,
            model=request.model,
        )

    def _checked(self, result: Any, request: ChatRequest) -> ChatCompletion:
        from openai.types import Completion
        from openai.types.chat import ChatCompletion

        expected = ChatCompletion if request.prompt is None else Completion
        if not isinstance(result, expected):
            raise ProviderError(
                f"provider {self.name!r}: response is not a "
                f"{'chat' if request.prompt is None else 'text'} completion "
                f"({type(result).__name__})",
                provider=self.name,
                model=request.model,
            )
        checked: Any = result  # a Completion for text requests (complete_text)
        return checked  # type: ignore[no-any-return]

    # --- health and lifetime --------------------------------------------------------------

    def health(self, timeout: float = 1.0) -> HealthReport:
        """GET the kind's health endpoint (Ollama ``/api/version``, vLLM and llama.cpp
        server ``/health``, OpenAI-compatible ``/v1/models``); never raises, its request
        never takes longer than ``timeout`` (nor does its latency count building the client,
        the first time), and builds no client once the provider is closed."""
        start = time.perf_counter()
        if self._closed:
            return HealthReport(self.name, False, "provider closed", 0.0)
        try:
            self._sync_create(None)
            start = time.perf_counter()
            lib = http_lib()
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else None
            with call_deadline(time.monotonic() + timeout):
                response = self._http.get(self._probe_url, headers=headers,
                                          timeout=lib.Timeout(timeout))
                try:
                    status = response.status_code
                    body = response.read() if status == 200 else b""
                finally:
                    response.close()
        except Exception as exc:
            return failed_probe(self.name, exc, _ms_since(start))
        return judge(self.name, self._probe_url, status, body, _ms_since(start))

    async def ahealth(self, timeout: float = 1.0) -> HealthReport:
        """``health`` for ``AsyncRouter``: the same probe, without blocking the loop."""
        start = time.perf_counter()
        if self._closed:
            return HealthReport(self.name, False, "provider closed", 0.0)
        try:
            self._async_create(None)
            start = time.perf_counter()
            http = self._async[running_loop_key()][2]
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else None
            lib = http_lib()
            with _deadline_scope(timeout):
                response = await http.get(self._probe_url, headers=headers,
                                          timeout=lib.Timeout(timeout))
                status = response.status_code
                body = response.content if status == 200 else b""
        except Exception as exc:
            return failed_probe(self.name, exc, _ms_since(start))
        return judge(self.name, self._probe_url, status, body, _ms_since(start))

    def close(self) -> None:
        """Close the sync client. No client is built again afterwards. The async clients
        cannot be closed from here (each belongs to its event loop): ``aclose`` closes the
        running loop's, and each loop's closer the rest as ``asyncio.run`` ends that loop."""
        with self._lock:
            self._closed = True
            client, self._client, self._create, self._http = self._client, None, None, None
        if client is not None:
            client.close()

    async def aclose_loop(self) -> None:
        """Close the async client of the running event loop only; the provider stays usable
        (for applications that run several event loops in turn)."""
        loop = running_loop_key()
        with self._lock:
            entry = self._async.pop(loop, None)
        if entry is not None:
            await entry[0].close()
            closer = entry[4]
            if closer is not None:
                await closer.aclose()  # its client is closed: it has nothing left to do

    async def _aclose_for(self, loop: object) -> None:
        with self._lock:
            entry = self._async.pop(loop, None)
        if entry is not None:
            await entry[0].close()

    async def aclose(self) -> None:
        await self.aclose_loop()
        self.close()


def _unsendable(key: str) -> str | None:
    """Why ``key`` cannot go in an Authorization header, or None. A CRLF env file leaves a
    trailing CR; httpx refused such a header with an error quoting it whole."""
    if not key.strip():
        return "is blank"
    for ch in key:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"holds a control character ({ch!r})"
        if ord(ch) > 0x7E:
            return "holds a character that is not ASCII"
    return None


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _silence_end(end: float, silence: float) -> float:
    """When the wait for a stream's next chunk ends: ``silence`` (``read``) from now, never
    past the attempt's ``end``."""
    t = time.monotonic() + silence
    return t if t < end else end


def _deadline_scope(seconds: float) -> ContextManager[anyio.CancelScope]:
    """A cancel scope raising ``TimeoutError`` after ``seconds`` (anyio: asyncio or trio).

    About 10 µs per use, against ~260 µs of openai client work per streamed chunk.
    """
    import anyio

    return anyio.fail_after(seconds)
