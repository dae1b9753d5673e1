"""LlamaCppProvider and model-file resolution, against real llama.cpp.

Content tests use the real default model (gemma3-270m, ~0.6 s to load); tests about gates,
queues, cancellation, deadlines and errors use the tiny GGUF from ``tinygguf`` (loads in
milliseconds, never emits end-of-sequence, so every request yields exactly ``max_tokens``
words). Nothing here mocks llama.cpp or openai; waits are bounded, and ordering uses the
provider's own ``queue_depth`` rather than sleeps wherever a sleep is not the point.

The AMX crash workaround lives in the library (providers/llama_cpp/compat.py), so these tests
load models exactly as users do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from routekit import _constants as C  # noqa: E402
from routekit._config.model import ModelConfig, ProviderConfig  # noqa: E402
from routekit._exceptions import (  # noqa: E402
    ConfigError,
    ContextLengthExceeded,
    ModelNotFound,
    ProviderBusy,
    ProviderError,
    RequestTimeout,
    StreamInterrupted,
    UnsupportedRequest,
)
from routekit.providers.llama_cpp.model_files import (  # noqa: E402
    check_gguf_file,
    describe_model_source,
    marker_path,
    resolve_model_path,
)
from routekit.providers._base import ChatRequest, Deadline, Provider  # noqa: E402
from routekit.providers.llama_cpp import LlamaCppProvider  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import in_process  # noqa: E402
from inproc_helpers import (  # noqa: E402
    LONG,
    PROVIDER,
    acut_while_dawdling,
    cut_while_dawdling,
    ticking,
)
from inproc_helpers import request as _request  # noqa: E402
from inproc_helpers import text as _text  # noqa: E402
from inproc_helpers import wait_for as _wait_for  # noqa: E402


def _provider(**models: ModelConfig) -> LlamaCppProvider:
    return LlamaCppProvider(PROVIDER, ProviderConfig(kind="llama_cpp"), models)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    pytest.importorskip(C.DEFAULT_MODEL_PACKAGE)
    return resolve_model_path(ModelConfig(provider=PROVIDER, package=C.DEFAULT_MODEL_PACKAGE))


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[LlamaCppProvider]:
    # gemma's own chat template (not the built-in default's "### Response" frame): these
    # tests need long answers, which that frame's early stops would cut short.
    provider = _provider(m=ModelConfig(provider=PROVIDER, package=C.DEFAULT_MODEL_PACKAGE,
                                       n_threads=2, chat_format="gemma"))
    provider.warm("m")
    yield provider
    provider.close()


# -- real model: content and types ---------------------------------------------------------------


def test_complete_returns_a_real_chat_completion(gemma: LlamaCppProvider) -> None:
    assert isinstance(gemma, Provider)
    reply = gemma.complete(_request(max_tokens=12), LONG)
    assert isinstance(reply, ChatCompletion)
    assert reply.model == "m"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 12
    # A round trip through validation gives the same object (no field lost or mistyped).
    assert ChatCompletion.model_validate(reply.model_dump()) == reply


def test_stream_yields_real_chunks(gemma: LlamaCppProvider) -> None:
    chunks = list(gemma.stream(_request(max_tokens=12), LONG))
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert _text(chunks).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert {c.model for c in chunks} == {"m"}
    for c in chunks:
        assert ChatCompletionChunk.model_validate(c.model_dump()) == c
    # Same greedy decode as complete(): the stream carries the same text.
    assert _text(chunks) == gemma.complete(_request(max_tokens=12), LONG).choices[0].message.content


def test_complete_stops_at_the_deadline_with_the_text_so_far(gemma: LlamaCppProvider) -> None:
    # complete() used to decode every token whatever the deadline said (max_tokens=300 with
    # timeout=1 answered after 6-8 s). The deadline is sized from this machine's own speed
    # (three times a 10-token answer: 300 tokens cannot fit), so a busy machine passes too.
    count = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]
    t0 = time.monotonic()
    short = gemma.complete(_request(messages=count, max_tokens=10), LONG)
    t_short = time.monotonic() - t0
    assert short.usage is not None and short.usage.completion_tokens == 10
    with pytest.raises(RequestTimeout) as info:  # returning would mean 300 tokens decoded
        gemma.complete(_request(messages=count, max_tokens=300),
                       Deadline(connect=1, read=60, total=3 * t_short))
    assert info.value.model == "m" and info.value.retryable
    partial = info.value.partial  # the text decoded before the deadline
    assert isinstance(partial, str) and len(partial) < 300 * 8
    # The model is free again, and a request with time to spare runs to its end.
    reply = gemma.complete(_request(messages=count, max_tokens=5), LONG)
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_complete_matches_llama_cpp_python_non_streaming(gemma: LlamaCppProvider) -> None:
    # complete() formats the chat once and decodes through create_completion (to check the
    # deadline per token): text, usage and finish reason are create_chat_completion's own.
    llm: Any = gemma._slot("m").llm
    for prompt, params in [
        ("Write one short sentence about the sea.", {"max_tokens": 12}),
        ("Name three colours.", {"max_tokens": 20, "stop": ["\n"]}),
        ("Say hello.", {"max_tokens": 16, "repeat_penalty": 1.3}),
    ]:
        msgs = [{"role": "user", "content": prompt}]
        kwargs = dict(params)
        extra = {"repeat_penalty": kwargs.pop("repeat_penalty")} if "repeat_penalty" in kwargs \
            else None
        llm.reset()  # both decode from an empty context: same numbers, same tokens
        want = llm.create_chat_completion(messages=msgs, temperature=0, **params)
        llm.reset()
        got = gemma.complete(ChatRequest("m", "m", msgs, {"temperature": 0, **kwargs},
                                         extra_body=extra), LONG)
        assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
        assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
        assert got.usage is not None
        assert got.usage.model_dump(exclude_none=True) == want["usage"]


def test_async_complete_and_stream(gemma: LlamaCppProvider) -> None:
    async def main() -> tuple[ChatCompletion, list[ChatCompletionChunk]]:
        reply = await gemma.acomplete(_request(), LONG)
        chunks = [c async for c in gemma.astream(_request(), LONG)]
        return reply, chunks

    reply, chunks = asyncio.run(main())
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.content
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert _text(chunks) == reply.choices[0].message.content


def test_async_does_not_block_the_event_loop(gemma: LlamaCppProvider) -> None:
    _, ticks = asyncio.run(ticking(lambda: gemma.acomplete(_request(max_tokens=16), LONG)))
    # 16 tokens take >100 ms on CPU; a blocked loop would tick once or twice.
    assert ticks >= 5


def test_response_format_constrains_output_to_json(gemma: LlamaCppProvider) -> None:
    reply = gemma.complete(_request(max_tokens=12, response_format={"type": "json_object"}),
                           LONG)
    assert (reply.choices[0].message.content or "").lstrip().startswith("{")
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}
    reply = gemma.complete(
        _request(max_tokens=12, response_format={"type": "json_schema",
                                                 "json_schema": {"name": "a", "schema": schema}}),
        LONG,
    )
    # The schema's grammar forces its one required key first.
    assert (reply.choices[0].message.content or "").replace(" ", "").startswith('{"answer":')


def test_prompt_longer_than_n_ctx_raises_context_length_exceeded(gemma_path: Path) -> None:
    provider = _provider(m=ModelConfig(provider=PROVIDER, path=str(gemma_path),
                                       chat_format="gemma", n_ctx=64, n_threads=2))
    try:
        # n_ctx 64 becomes llama.cpp's padded 256; this prompt is ~500 tokens.
        long = [{"role": "user", "content": "tell me about the sea " * 100}]
        with pytest.raises(ContextLengthExceeded) as info:
            provider.complete(_request(messages=long), LONG)
        err = info.value
        assert err.status_code == 400 and not err.fatal and not err.retryable
        assert err.model == "m" and err.provider == PROVIDER
        assert "n_ctx 256" in str(err)
        assert provider.load_params("m")["n_ctx"] == 256
        assert isinstance(err.__cause__, ValueError)  # translated once, with the cause kept
        with pytest.raises(ContextLengthExceeded):
            next(iter(provider.stream(_request(messages=long), LONG)))
        # The gate was released both times: a prompt that fits still works.
        reply = provider.complete(_request(max_tokens=4), LONG)
        assert reply.choices[0].message.content is not None
    finally:
        provider.close()


# -- load parameters -----------------------------------------------------------------------------


def test_gpu_layers_follow_offload_support(tiny_path: Path) -> None:
    expected = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    provider = _provider(
        auto=ModelConfig(provider=PROVIDER, path=str(tiny_path)),
        cpu=ModelConfig(provider=PROVIDER, path=str(tiny_path), n_gpu_layers=0),
        some=ModelConfig(provider=PROVIDER, path=str(tiny_path), n_gpu_layers=3),
    )
    with provider:
        assert provider.load_params("auto")["n_gpu_layers"] == expected
        assert provider.load_params("cpu")["n_gpu_layers"] == 0
        assert provider.load_params("some")["n_gpu_layers"] == 3
        params = provider.load_params("auto")
        assert params["verbose"] is False
        assert params["n_ctx"] == C.DEFAULT_N_CTX
        assert "chat_format" not in params  # a path model uses the GGUF's own template
        assert "n_threads" not in params
        provider.warm("auto")
        assert provider.load_params("auto")["n_gpu_layers"] == expected  # what was used
        assert not provider.is_loaded("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not llama_cpp.llama_supports_gpu_offload(), reason="needs a GPU build")
def test_a_gpu_load_after_numpy_answers(tiny_path: Path) -> None:
    # The crash this build had (cxx_runtime): numpy first, then routekit's first load. In a
    # fresh interpreter, as an application would be; it died by SIGSEGV in print_info.
    import subprocess

    config = {"providers": {"local": {"kind": "llama_cpp"}},
              "models": {"tiny": {"provider": "local", "path": str(tiny_path),
                                  "chat_format": "chatml", "n_ctx": 256, "n_gpu_layers": -1}}}
    code = (
        "import json, sys, numpy\n"
        "from routekit import Router\n"
        "with Router(json.loads(sys.argv[1])) as r:\n"
        "    reply = r.chat.completions.create(model='tiny', max_tokens=3,\n"
        "                                      messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(reply.usage.completion_tokens, reply.route.attempts[0].outcome)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True,
                         text=True, timeout=180, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    tokens, outcome = out.stdout.split()[-2:]
    assert outcome == "ok" and 1 <= int(tokens) <= 3


@pytest.mark.skipif(os.environ.get("ROUTEKIT_LLAMA_LOG") == "stderr",
                    reason="llama-cpp-python's own log hook is kept")
def test_llama_cpp_logs_reach_logging_without_python_inside_llama_cpp(
    tiny_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp calls its log hook from inside llama_model_load_from_file (and from loader,
    # CUDA and decode threads). routekit's hook is C code in _core that only buffers the
    # line: no Python runs inside llama.cpp, on any thread. The lines reach logging after.
    from routekit.providers.llama_cpp import compat

    python_calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename == compat.__file__:
            python_calls.append(frame.f_code.co_name)

    caplog.set_level(logging.DEBUG, logger="routekit.llama_cpp")
    provider = _provider(m=ModelConfig(provider=PROVIDER, path=str(tiny_path),
                                       chat_format="chatml", n_ctx=256, n_threads=1))
    with provider:
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            provider.warm("m")
            provider.complete(_request(max_tokens=2), LONG)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    assert compat._sink and compat._bridge is None
    # Python ran only routekit's own calls around the load, never a log callback.
    assert "bridge" not in python_calls
    assert set(python_calls) <= {"route_llama_logs", "flush_llama_logs", "construction_guard",
                                 "disable_extra_bufts", "_cpu_has_amx", "params",
                                 "probe_wanted", "probe_load", "_run_probe"}
    lines = [r.getMessage() for r in caplog.records if r.name == "routekit.llama_cpp"]
    assert any("llama_model_loader" in line or "load_tensors" in line for line in lines)
    assert all(not line.endswith("\n") for line in lines)


def test_load_probe_refuses_a_model_that_crashes_llama_cpp(
    tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A segfault inside llama.cpp cannot be caught; GPU loads are tried in a child process
    # first, and a model whose probe dies is refused (the plan moves on, this process lives).
    from routekit.providers.llama_cpp import compat

    monkeypatch.setenv("ROUTEKIT_LLAMA_LOAD_PROBE", "1")
    monkeypatch.setattr(compat, "_probed", {})
    provider = _provider(ok=ModelConfig(provider=PROVIDER, path=str(tiny_path), n_ctx=256,
                                        chat_format="chatml", n_threads=1))
    with provider:
        provider.warm("ok")  # the probe loaded and decoded in a child, then here
        assert list(compat._probed.values()) == [None]
    crash = "import os, signal, sys\nsys.stderr.write('ggml: boom\\n')\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    monkeypatch.setattr(compat, "_PROBE_CODE", crash)
    monkeypatch.setattr(compat, "_probed", {})
    provider = _provider(bad=ModelConfig(provider=PROVIDER, path=str(tiny_path), n_ctx=512,
                                         chat_format="chatml", n_threads=1))
    with provider:
        with pytest.raises(ProviderError) as info:
            provider.warm("bad")
        assert "SIGSEGV" in str(info.value) and "ggml: boom" in str(info.value)
        assert not provider.is_loaded("bad")
        with pytest.raises(ProviderError, match="probe"):  # at request time too: move on
            provider.complete(_request(model="bad"), LONG)
    # Off for CPU loads unless asked: a CPU build cannot offload.
    monkeypatch.delenv("ROUTEKIT_LLAMA_LOAD_PROBE")
    assert not compat.probe_wanted(llama_cpp, {"n_gpu_layers": 0})


def test_the_load_probe_imports_llama_cpp_as_routekit_does(tiny_path: Path) -> None:
    # On the H200 CUDA build a parent that imported routekit first crashed in its load while
    # the probe, which imported llama_cpp first (the order that loads there), passed. The
    # child must import it as the parent does: routekit's C++ core first, libstdc++ global.
    import subprocess

    from conftest import routekit_path
    from routekit.providers.llama_cpp import compat

    watch = (
        "import ctypes, json, sys\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.dlsym.restype = ctypes.c_void_p\n"
        "libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]\n"
        "seen = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('llama_cpp', 'routekit._core'):\n"
        "            seen.append([name, bool(libc.dlsym(None, b'_ZNSo9_M_insertIlEERSoT_'))])\n"
        "sys.meta_path.insert(0, Watch())\n"
        "try:\n"
        f"    exec(compile({compat._PROBE_CODE!r}, 'probe', 'exec'))\n"
        "finally:\n"
        "    print(json.dumps(seen))\n")
    params = {"model_path": str(tiny_path), "n_ctx": 256, "n_threads": 1, "verbose": False}
    env = dict(os.environ, PYTHONPATH=routekit_path())
    out = subprocess.run([sys.executable, "-c", watch, json.dumps(params)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    names = [name for name, _ in seen]
    assert names.index("routekit._core") < names.index("llama_cpp")
    # When llama_cpp was imported, libstdc++'s symbols were in the global scope.
    assert dict(seen)["llama_cpp"] is True


def test_package_model_defaults_to_gemma_chat_format(gemma_path: Path) -> None:
    provider = _provider(m=ModelConfig(provider=PROVIDER, package=C.DEFAULT_MODEL_PACKAGE,
                                       n_ctx=512, n_threads=3))
    with provider:
        params = provider.load_params("m")
        assert params["chat_format"] == C.DEFAULT_MODEL_CHAT_FORMAT == "snoozy"
        assert params["model_path"] == str(gemma_path)
        assert params["n_ctx"] == 512 and params["n_threads"] == 3
        assert not provider.is_loaded("m")


def test_model_loads_once_under_concurrent_warm(tiny_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    constructed: list[int] = []
    real = llama_cpp.Llama

    class CountingLlama(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            constructed.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", CountingLlama)
    provider = _provider(m=ModelConfig(provider=PROVIDER, path=str(tiny_path), n_ctx=64))
    barrier = threading.Barrier(4)

    def warm() -> None:
        barrier.wait(5)
        provider.warm("m")

    threads = [threading.Thread(target=warm) for _ in range(4)]
    with provider:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert provider.is_loaded("m")
        assert len(constructed) == 1


# -- warm-up: the first request costs what the next one does -------------------------------------


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_warm_runs_the_request_path_once(tiny_path: Path, kind: str) -> None:
    # In a fresh interpreter: what the first request used to pay (openai's result types, ~0.4 s
    # to import here) is paid by warm(), and the model has decoded (a streamed two-token
    # answer), once however often warm() is called. benchmarks/bench_first_request.py times it.
    import subprocess

    code = (
        "import json, sys\n"
        "from routekit._config.model import ModelConfig, ProviderConfig\n"
        "from routekit.providers.llama_cpp import LlamaCppProvider, LlamaCppNativeProvider\n"
        "kind = sys.argv[1]\n"
        "cls = LlamaCppNativeProvider if kind == 'llama_cpp_native' else LlamaCppProvider\n"
        "m = ModelConfig(provider='local', path=sys.argv[2], chat_format='chatml', n_ctx=256,\n"
        "                n_threads=1)\n"
        "p = cls('local', ProviderConfig(kind=kind), {'m': m})\n"
        "calls = []\n"
        "real = p.stream\n"
        "p.stream = lambda rq, dl: calls.append(rq.params) or real(rq, dl)\n"
        "before = 'openai.types.chat' in sys.modules\n"
        "p.warm('m')\n"
        "after = 'openai.types.chat' in sys.modules\n"
        "p.warm('m')\n"
        "slot = p._slot('m')\n"
        "decoded = (p._last_job['m'].completion_tokens if kind == 'llama_cpp_native'\n"
        "           else slot.llm.n_tokens)\n"
        "print(json.dumps([before, after, calls, slot.warmed is slot.llm, decoded]))\n"
        "p.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, kind, str(tiny_path)],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, calls, warmed, decoded = json.loads(out.stdout.splitlines()[-1])
    assert (before, after) == (False, True)
    assert calls == [{"max_tokens": 2, "temperature": 0}]  # one warm-up, not two
    assert warmed
    # native: the warm-up job's two tokens; llama_cpp: the prompt and the first token in the
    # KV cache (the last sampled token is never decoded).
    assert decoded == 2 if kind == "llama_cpp_native" else decoded > 2


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_warm_up_waits_for_nobody_and_never_raises(
    tiny_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = in_process(kind, m=ModelConfig(provider=PROVIDER, path=str(tiny_path),
                                              chat_format="chatml", n_ctx=256, n_threads=1,
                                              queue_size=0))
    with provider:
        slot = provider._slot("m")
        # A model already serving is warm: warm() neither queues behind the request (with
        # queue_size 0 it would take the only place) nor marks the model warmed.
        provider.warm_up = lambda s: None  # load only
        provider.warm("m")
        del provider.warm_up
        stream = provider.stream(_request(max_tokens=40), LONG)
        next(stream)
        t0 = time.monotonic()
        provider.warm("m")
        assert time.monotonic() - t0 < 5.0
        assert slot.warmed is None and provider.queue_depth("m") == 0
        stream.close()
        # A warm-up that fails is logged, not raised: the first request will say what is wrong.
        caplog.set_level(logging.DEBUG, logger="routekit.providers.llama_cpp")

        def broken(rq: ChatRequest, dl: Deadline) -> Any:
            raise ProviderError("broken on purpose", provider=PROVIDER, model="m")

        provider.stream = broken
        provider.warm("m")
        assert slot.warmed is slot.llm
        assert any("warm-up of in-process model 'm' failed: broken on purpose" in r.message
                   for r in caplog.records)
        del provider.stream
        assert _text(list(provider.stream(_request(max_tokens=3), LONG)))


# -- gate: one request at a time, bounded queue --------------------------------------------------


def test_queue_bound_fails_fast_with_provider_busy(make_tiny: Callable[..., LlamaCppProvider]
                                                   ) -> None:
    provider = make_tiny(queue_size=1)
    holder = provider.stream(_request(max_tokens=50), LONG)
    first = next(holder)  # holds the model's context from here on
    assert first.choices[0].delta.role == "assistant"

    results: list[Any] = []
    waiter = threading.Thread(
        target=lambda: results.append(provider.complete(_request(max_tokens=3), LONG))
    )
    waiter.start()
    _wait_for(lambda: provider.queue_depth("m") == 1)

    t0 = time.monotonic()
    with pytest.raises(ProviderBusy) as info:
        provider.complete(_request(), LONG)
    assert time.monotonic() - t0 < 0.5  # fails at once, never waits
    assert info.value.retryable and not info.value.fatal
    with pytest.raises(ProviderBusy):
        next(iter(provider.stream(_request(), LONG)))
    assert provider.queue_depth("m") == 1  # refused requests left no trace

    holder.close()  # releases the context; the waiter proceeds
    waiter.join(10)
    assert not waiter.is_alive()
    assert isinstance(results[0], ChatCompletion)
    assert results[0].usage.completion_tokens == 3
    assert provider.queue_depth("m") == 0


@pytest.mark.parametrize("leave", ["deadline", "cancel"])
def test_a_waiter_that_gives_up_leaves_only_its_own_place(leave: str) -> None:
    # Every waiter's place used to be an equal [False]: deque.remove() took the first equal
    # one, so a later waiter giving up removed an earlier one's place, and the next release
    # handed the model to the waiter that had left. The model then stayed busy for good
    # (found by a stress run: every later request timed out waiting for it).
    from routekit.providers.llama_cpp.gate import ModelSlot

    slot = ModelSlot("m", ModelConfig(provider=PROVIDER, path="unused.gguf", queue_size=2),
                     PROVIDER)
    slot.enter(time.monotonic() + 5)  # the holder
    got: dict[str, BaseException | None] = {}

    def wait(name: str, seconds: float, cancel: threading.Event | None = None) -> None:
        try:
            if cancel is None:
                slot.enter(time.monotonic() + seconds)
            else:
                slot.admit()
                slot.acquire_admitted(time.monotonic() + seconds, cancel)
            got[name] = None
        except BaseException as exc:
            got[name] = exc

    first = threading.Thread(target=wait, args=("first", 10.0))
    first.start()
    _wait_for(lambda: len(slot.waiters) == 1)
    if leave == "deadline":
        later = threading.Thread(target=wait, args=("later", 0.2))
    else:
        cancel = threading.Event()
        later = threading.Thread(target=wait, args=("later", 10.0, cancel))
    later.start()
    _wait_for(lambda: len(slot.waiters) == 2)
    if leave == "cancel":
        cancel.set()
        slot.wake_all()
    later.join(10)
    assert isinstance(got["later"], RequestTimeout if leave == "deadline" else ProviderError)
    assert len(slot.waiters) == 1 and slot.pending == 2
    slot.release()  # the holder is done: the model goes to the first waiter, still there
    first.join(10)
    assert not first.is_alive() and got["first"] is None
    slot.release()
    assert (slot.busy, slot.pending, len(slot.waiters)) == (False, 0, 0)


def test_queue_size_zero_admits_only_the_running_request(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=0)
    holder = provider.stream(_request(max_tokens=50), LONG)
    next(holder)
    with pytest.raises(ProviderBusy):
        provider.complete(_request(), LONG)
    holder.close()
    assert provider.complete(_request(max_tokens=2), LONG).usage.completion_tokens == 2


def test_closing_a_stream_early_releases_the_model(make_tiny: Callable[..., LlamaCppProvider]
                                                   ) -> None:
    provider = make_tiny(queue_size=0)
    stream = provider.stream(_request(max_tokens=200), LONG)
    chunks = [next(stream) for _ in range(3)]
    assert _text(chunks)
    stream.close()
    # With queue_size=0 a still-held model would refuse this with ProviderBusy.
    reply = provider.complete(_request(max_tokens=4), LONG)
    assert reply.usage.completion_tokens == 4
    # Abandoning a started stream without close() releases it too (generator finalizer).
    abandoned = provider.stream(_request(max_tokens=200), LONG)
    next(abandoned)
    del abandoned
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1


def test_waiting_honours_the_deadline(make_tiny: Callable[..., LlamaCppProvider]) -> None:
    provider = make_tiny(queue_size=4)
    holder = provider.stream(_request(max_tokens=50), LONG)
    next(holder)
    try:
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout):
            provider.complete(_request(), Deadline(connect=1, read=1, total=0.2))
        waited = time.monotonic() - t0
        assert 0.15 <= waited < 2.0
        assert provider.queue_depth("m") == 0  # the timed-out waiter left the queue
    finally:
        holder.close()


def test_waiters_are_served_in_arrival_order(make_tiny: Callable[..., LlamaCppProvider]) -> None:
    provider = make_tiny(queue_size=3)
    holder = provider.stream(_request(max_tokens=50), LONG)
    next(holder)
    order: list[int] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        provider.complete(_request(max_tokens=1), LONG)
        with lock:
            order.append(i)

    threads = []
    for i in range(3):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        _wait_for(lambda: provider.queue_depth("m") == i + 1)
    holder.close()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2]


# -- deadlines mid-stream ------------------------------------------------------------------------


def test_deadline_before_first_token_is_a_request_timeout(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny()
    provider.warm("m")
    with pytest.raises(RequestTimeout):
        next(iter(provider.stream(_request(), Deadline(connect=1, read=1, total=0.0))))
    # and the model is free again
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1


def test_deadline_mid_stream_interrupts_with_partial_text(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=0)
    provider.warm("m")
    stream = provider.stream(_request(max_tokens=200), Deadline(connect=1, read=1, total=0.3))
    got, cut = cut_while_dawdling(stream, 4)
    assert cut.partial == _text(got) != ""
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1
    # Async: exactly the text the consumer received, also when the producer was stopped while
    # it waited for the dawdling consumer to make room (backpressure).
    agot, acut = asyncio.run(acut_while_dawdling(
        provider.astream(_request(max_tokens=200), Deadline(connect=1, read=1, total=0.3)), 4))
    assert acut.partial == _text(agot) != ""
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1


def test_a_stream_asked_for_usage_keeps_its_deadline_and_unhooks_the_model(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    """include_usage wraps the Llama's sample for one request: the deadline still cuts the
    stream, no usage chunk follows an interrupted one, and the wrapper is gone after."""
    provider = make_tiny(queue_size=0)
    provider.warm("m")
    asked = {"stream_options": {"include_usage": True}}
    stream = provider.stream(_request(max_tokens=200, **asked),
                             Deadline(connect=1, read=1, total=0.3))
    got, cut = cut_while_dawdling(stream, 4)
    assert cut.partial == _text(got) != ""
    assert all(c.choices and c.usage is None for c in got)
    assert "sample" not in vars(provider._slot("m").llm)  # the counter let go
    chunks = list(provider.stream(_request(max_tokens=3, **asked), LONG))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert "sample" not in vars(provider._slot("m").llm)


def test_first_byte_bounds_the_first_token_and_the_gate(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=2)
    provider.warm("m")
    late = Deadline(connect=1, read=60, total=60, first_byte=0.0)
    with pytest.raises(RequestTimeout, match="first_byte"):
        provider.complete(_request(), late)
    with pytest.raises(RequestTimeout, match="first_byte"):
        next(iter(provider.stream(_request(), late)))
    # Waiting for a busy model counts against first_byte too.
    holder = provider.stream(_request(max_tokens=50), LONG)
    next(holder)
    try:
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout):
            provider.complete(_request(), Deadline(connect=1, read=60, total=60, first_byte=0.2))
        assert time.monotonic() - t0 < 5.0
    finally:
        holder.close()
    ok = provider.complete(_request(max_tokens=2), Deadline(1, 60, 60, first_byte=30))
    assert ok.usage is not None and ok.usage.completion_tokens == 2


# -- async gate and cancellation -----------------------------------------------------------------


def test_async_queue_bound_and_early_close(make_tiny: Callable[..., LlamaCppProvider]) -> None:
    provider = make_tiny(queue_size=0)

    async def main() -> None:
        stream = provider.astream(_request(max_tokens=200), LONG)
        first = await stream.__anext__()
        assert first.choices[0].delta.role == "assistant"
        with pytest.raises(ProviderBusy):
            await provider.acomplete(_request(), LONG)
        with pytest.raises(ProviderBusy):
            await provider.astream(_request(), LONG).__anext__()
        await stream.aclose()  # type: ignore[attr-defined]
        # aclose() returns once the producer let go of the model.
        reply = await provider.acomplete(_request(max_tokens=2), LONG)
        assert reply.usage is not None and reply.usage.completion_tokens == 2

    asyncio.run(main())


def test_cancelling_an_async_consumer_releases_the_model(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    strict = make_tiny(queue_size=0)
    lenient = make_tiny(queue_size=1)

    async def cancel_consumer(provider: LlamaCppProvider, *, closing: bool) -> None:
        started = asyncio.Event()

        async def consume() -> None:
            stream = provider.astream(_request(max_tokens=100), LONG)
            if closing:
                async with contextlib.aclosing(stream) as s:  # type: ignore[type-var]
                    async for _ in s:
                        started.set()
                        await asyncio.sleep(10)  # slow consumer: backpressure stops the producer
            else:
                async for _ in stream:
                    started.set()
                    await asyncio.sleep(10)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def main() -> None:
        # aclosing(): the model is free the moment the cancelled consumer is done
        # (queue_size=0 would refuse the next request otherwise).
        await cancel_consumer(strict, closing=True)
        reply = await strict.acomplete(_request(max_tokens=1), LONG)
        assert reply.usage is not None and reply.usage.completion_tokens == 1
        # Without aclosing(), Python closes the abandoned generator from the event loop's
        # finalizer hook soon after: a queued request gets the model then.
        await cancel_consumer(lenient, closing=False)
        reply = await asyncio.wait_for(lenient.acomplete(_request(max_tokens=1), LONG), 10)
        assert reply.usage is not None and reply.usage.completion_tokens == 1

    asyncio.run(main())


def test_cancelling_a_decoding_acomplete_stops_it(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=0, n_ctx=2048)

    async def main() -> None:
        task = asyncio.create_task(provider.acomplete(_request(max_tokens=2000), LONG))
        await asyncio.sleep(0.2)  # decoding by now
        assert provider._slot("m").busy
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled completion stops at its next token instead of running 2000.
        for _ in range(400):
            if not provider._slot("m").busy:
                break
            await asyncio.sleep(0.005)
        assert not provider._slot("m").busy
        reply = await provider.acomplete(_request(max_tokens=1), LONG)
        assert reply.usage is not None and reply.usage.completion_tokens == 1

    asyncio.run(main())


def test_cancelling_a_queued_acomplete_leaves_the_queue(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=1)
    holder = provider.stream(_request(max_tokens=50), LONG)
    next(holder)

    async def main() -> None:
        # The pool's future ends with "request cancelled" after the caller has gone; left
        # unretrieved, asyncio logs it with a traceback ("Future exception was never
        # retrieved") through the application's loop, for every request cancelled this way.
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        task = asyncio.create_task(provider.acomplete(_request(), LONG))
        for _ in range(1000):
            if provider.queue_depth("m") == 1:
                break
            await asyncio.sleep(0.005)
        assert provider.queue_depth("m") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(1000):
            if provider.queue_depth("m") == 0:
                break
            await asyncio.sleep(0.005)
        assert provider.queue_depth("m") == 0
        await asyncio.sleep(0.05)  # the pool thread's result reaches the loop
        del task
        gc.collect()
        assert [ctx["message"] for ctx in reported] == []

    try:
        asyncio.run(main())
    finally:
        holder.close()
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1


def test_async_stream_backpressure_bounds_the_producer(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    from routekit.providers.llama_cpp import provider as module

    provider = make_tiny(queue_size=0, n_ctx=512)

    async def main() -> int:
        stream = provider.astream(_request(max_tokens=300), LONG)
        await stream.__anext__()
        await asyncio.sleep(0.3)  # unthrottled, the tiny model would decode all 300 by now
        # What the producer ran ahead sits in the generator's queue.
        ahead = stream.ag_frame.f_locals["queue"].qsize()  # type: ignore[attr-defined]
        await stream.aclose()  # type: ignore[attr-defined]
        return int(ahead)

    ahead = asyncio.run(main())
    assert 0 < ahead <= module._ASYNC_STREAM_BUFFER


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"n": 2},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"logprobs": True},
        {"logit_bias": {"42": 5}},
        {"response_format": {"type": "xml"}},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {"modalities": ["audio"]},
        {"audio": {"voice": "alloy", "format": "wav"}},
        {"web_search_options": {}},
    ],
)
def test_unsupported_parameters_move_on(make_tiny: Callable[..., LlamaCppProvider],
                                         params: dict[str, Any]) -> None:
    provider = make_tiny()
    with pytest.raises(ProviderError) as info:
        provider.complete(_request(**params), LONG)
    err = info.value
    assert type(err) is UnsupportedRequest and not err.fatal and not err.retryable
    assert err.breaker_scope is None  # the model is fine: no breaker hears of it
    assert "does not support" in str(err)
    assert not provider.is_loaded("m")  # rejected before touching the model


def test_supported_parameters_take_effect(make_tiny: Callable[..., LlamaCppProvider]) -> None:
    provider = make_tiny()
    reply = provider.complete(
        _request(max_tokens=50, max_completion_tokens=3, user="u", stream_options={"x": 1},
                 tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="none",
                 n=1, seed=7, top_p=0.9, presence_penalty=0.0, frequency_penalty=0.0,
                 metadata={"k": "v"}, modalities=["text"], some_future_param=True),
        LONG,
    )
    # max_completion_tokens wins over max_tokens
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    # A stop string cuts the text where it first appears.
    free = provider.complete(_request(max_tokens=12), LONG).choices[0].message.content or ""
    assert len(free) >= 8
    stop = free[5:8]
    stopped = provider.complete(_request(max_tokens=12, stop=[stop]), LONG)
    assert stopped.choices[0].finish_reason == "stop"
    content = stopped.choices[0].message.content or ""
    assert stop not in content and len(content) < len(free)


def test_unknown_model_is_model_not_found(make_tiny: Callable[..., LlamaCppProvider]) -> None:
    provider = make_tiny()
    with pytest.raises(ModelNotFound) as info:
        provider.complete(_request(model="nope"), LONG)
    assert info.value.status_code == 404 and "serves: m" in str(info.value)


# -- missing / bad files -------------------------------------------------------------------------


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    provider = _provider(m=ModelConfig(provider=PROVIDER, path=str(missing)))
    with provider:
        with pytest.raises(ConfigError) as info:
            provider.warm("m")
        issue = info.value.issues[0]
        assert issue.path == 'models["m"].path'
        assert "not found" in issue.message and str(missing) in issue.message
        # At request time it is this candidate's failure: the router moves on.
        with pytest.raises(ProviderError) as perr:
            provider.complete(_request(), LONG)
        assert type(perr.value) is ProviderError and not perr.value.fatal
        assert str(missing) in str(perr.value)
        report = provider.health()
        assert not report.ok and "not found" in report.detail


def test_non_gguf_file_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ConfigError) as info:
        check_gguf_file(bogus)
    assert "not a GGUF file" in str(info.value)
    with pytest.raises(ConfigError, match="directory"):
        check_gguf_file(tmp_path)


def test_corrupt_gguf_fails_to_load_as_provider_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    provider = _provider(m=ModelConfig(provider=PROVIDER, path=str(bad)))
    with provider:
        with pytest.raises(ProviderError) as info:
            provider.warm("m")
        assert "could not load" in str(info.value)


def test_missing_package_names_the_install_command() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_model_path(ModelConfig(provider=PROVIDER, package="routekit_no_such_model_pkg"),
                           name="x")
    issue = info.value.issues[0]
    assert issue.path == 'models["x"].package'
    assert "not installed" in issue.message
    assert "pip install routekit-no-such-model-pkg" in issue.message


def test_missing_default_package_suggests_the_model_extra(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    # A None entry in sys.modules makes the import fail exactly as if it were not installed.
    monkeypatch.setitem(sys.modules, C.DEFAULT_MODEL_PACKAGE, None)
    with pytest.raises(ConfigError, match=r"pip install 'routekit\[model\]'"):
        resolve_model_path(ModelConfig(provider=PROVIDER, package=C.DEFAULT_MODEL_PACKAGE))


# -- package resolution and its fast path --------------------------------------------------------


def _fake_package(tmp_path: Path, name: str, payload: bytes) -> ModuleType:
    """A real importable model package (same API as the gemma one) written to tmp_path."""
    pkg_dir = tmp_path / "pkgs" / name
    pkg_dir.mkdir(parents=True)
    (pkg_dir / "data").mkdir()
    (pkg_dir / "data" / "part0").write_bytes(payload[: len(payload) // 2])
    (pkg_dir / "data" / "part1").write_bytes(payload[len(payload) // 2:])
    cache = tmp_path / "cache"
    (pkg_dir / "__init__.py").write_text(
        f"""
import hashlib
from pathlib import Path
EXPECTED_SHA256 = {hashlib.sha256(payload).hexdigest()!r}
CALLS = []
_DATA = Path(__file__).parent / "data"
def chunk_paths():
    return [_DATA / "part0", _DATA / "part1"]
def default_output_path():
    base = Path({str(cache)!r}); base.mkdir(parents=True, exist_ok=True)
    return base / "model.gguf"
def assemble(output_path=None, overwrite=False):
    CALLS.append((output_path, overwrite))
    target = default_output_path() if output_path is None else Path(output_path)
    if target.exists() and not overwrite:
        if hashlib.sha256(target.read_bytes()).hexdigest() != EXPECTED_SHA256:
            raise FileExistsError("unexpected sha256")
        return target
    target.write_bytes(b"".join(p.read_bytes() for p in chunk_paths()))
    if hashlib.sha256(target.read_bytes()).hexdigest() != EXPECTED_SHA256:
        raise ValueError("sha256 mismatch")
    return target
"""
    )
    sys.path.insert(0, str(tmp_path / "pkgs"))
    try:
        __import__(name)
    finally:
        sys.path.remove(str(tmp_path / "pkgs"))
    return sys.modules[name]


@pytest.fixture
def fake_pkg(tmp_path: Path) -> Iterator[ModuleType]:
    name = f"routekit_fake_model_{os.getpid()}_{id(tmp_path)}"
    module = _fake_package(tmp_path, name, b"GGUF" + bytes(range(256)) * 8)
    yield module
    sys.modules.pop(name, None)


def test_package_is_assembled_once_then_the_marker_skips_rehashing(fake_pkg: ModuleType
                                                                   ) -> None:
    cfg = ModelConfig(provider=PROVIDER, package=fake_pkg.__name__)
    phases: list[tuple[str, float]] = []
    path = resolve_model_path(cfg, progress=lambda p, f: phases.append((p, f)))
    assert path == fake_pkg.default_output_path() and path.read_bytes()[:4] == b"GGUF"
    assert len(fake_pkg.CALLS) == 1  # built once, into a temp file renamed into place
    assert phases[0][1] == 0.0 and phases[-1] == ("model file ready", 1.0)
    assert all(0.0 <= f <= 1.0 for _, f in phases)
    marker = json.loads(marker_path(path).read_text())
    assert marker["sha256"] == fake_pkg.EXPECTED_SHA256 and marker["size"] == path.stat().st_size
    assert not list(path.parent.glob(".*.tmp"))

    for _ in range(3):
        assert resolve_model_path(cfg) == path
    assert len(fake_pkg.CALLS) == 1  # fast path: no assemble, no hashing

    # The file changed behind our back (new mtime): verify again, once.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000))
    assert resolve_model_path(cfg) == path
    assert len(fake_pkg.CALLS) == 2 and fake_pkg.CALLS[-1] == (path, False)
    assert resolve_model_path(cfg) == path
    assert len(fake_pkg.CALLS) == 2
    ok, detail = describe_model_source(cfg)
    assert ok and "verified" in detail


def test_corrupt_assembled_file_is_rebuilt(fake_pkg: ModuleType) -> None:
    cfg = ModelConfig(provider=PROVIDER, package=fake_pkg.__name__)
    target = fake_pkg.default_output_path()
    target.write_bytes(b"GGUF half-written")  # e.g. an earlier crash mid-assemble
    path = resolve_model_path(cfg)
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size > 100
    assert len(fake_pkg.CALLS) == 2  # verify (fails), then rebuild
    assert resolve_model_path(cfg) == path and len(fake_pkg.CALLS) == 2


def test_real_package_fast_path_does_not_rehash(gemma_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    pkg = importlib.import_module(C.DEFAULT_MODEL_PACKAGE)
    cfg = ModelConfig(provider=PROVIDER, package=C.DEFAULT_MODEL_PACKAGE)
    assert marker_path(gemma_path).exists()  # the session fixture resolved it once
    calls: list[Any] = []
    real = pkg.assemble
    monkeypatch.setattr(pkg, "assemble", lambda *a, **k: calls.append(a) or real(*a, **k))
    t0 = time.perf_counter()
    assert resolve_model_path(cfg) == gemma_path
    fast = time.perf_counter() - t0
    assert calls == []
    print(f"\nfast-path resolve of the real package: {fast * 1e3:.2f} ms")


# -- lifecycle -----------------------------------------------------------------------------------


def test_close_is_idempotent_and_refuses_new_work(make_tiny: Callable[..., LlamaCppProvider]
                                                  ) -> None:
    provider = make_tiny()
    provider.warm("m")
    assert provider.health().ok and "loaded" in provider.health().detail
    stream = provider.stream(_request(max_tokens=100), LONG)
    next(stream)
    provider.close()
    provider.close()
    with pytest.raises(StreamInterrupted):  # an open stream stops at its next token
        for _ in stream:
            pass
    assert not provider.is_loaded("m")  # freed once the stream let go
    with pytest.raises(ProviderError, match="closed"):
        provider.complete(_request(), LONG)
    with pytest.raises(ProviderError, match="closed"):
        provider.warm("m")
    assert not provider.health().ok

    async def main() -> None:
        with pytest.raises(ProviderError, match="closed"):
            await provider.acomplete(_request(), LONG)
        await provider.aclose()

    asyncio.run(main())


def test_import_is_lazy() -> None:
    import subprocess

    code = (
        "import sys; import routekit.providers.llama_cpp.provider, routekit.providers.llama_cpp.model_files; "
        "print('llama_cpp' in sys.modules, 'openai' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_concurrent_mixed_load_keeps_the_gate_consistent(
    make_tiny: Callable[..., LlamaCppProvider]
) -> None:
    provider = make_tiny(queue_size=2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        for i in range(8):
            try:
                if (seed + i) % 3 == 0:
                    stream = provider.stream(_request(max_tokens=20), LONG)
                    for n, _ in enumerate(stream):
                        if n == (seed + i) % 5:
                            stream.close()  # some streams end early
                            break
                else:
                    provider.complete(_request(max_tokens=2), LONG)
                result = "ok"
            except ProviderBusy:
                result = "busy"
            except Exception as exc:  # anything else is a bug
                result = f"error: {exc!r}"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 48
    assert set(outcomes) <= {"ok", "busy"}, [o for o in outcomes if o.startswith("error")]
    assert outcomes.count("ok") >= 8
    assert provider.queue_depth("m") == 0
    assert provider.complete(_request(max_tokens=1), LONG).usage.completion_tokens == 1


def test_models_loading_at_once_leave_the_processs_stdout_and_stderr_alone(
        tiny_path: Path, tmp_path: Path) -> None:
    # llama-cpp-python (verbose=False) points fds 1 and 2 at /dev/null while a model loads;
    # two loads at once saved /dev/null as "the original" and the process stayed silenced
    # for good. In a child process: here it would silence pytest itself.
    import subprocess

    from conftest import routekit_path

    result = tmp_path / "fds.txt"
    script = f"""
import os, threading
from routekit import Router
models = {{f"m{{i}}": {{"provider": "local", "path": {str(tiny_path)!r}, "chat_format": "chatml",
                       "n_ctx": 64, "n_threads": 1}} for i in range(8)}}
before = [os.readlink(f"/proc/self/fd/{{fd}}") for fd in (1, 2)]
for _ in range(3):
    cfg = {{"providers": {{"local": {{"kind": "llama_cpp"}}}}, "models": models}}
    with Router(cfg, warm=False, health_probes=False) as router:
        def ask(name):
            router.chat.completions.create(model=name, max_tokens=1,
                                           messages=[{{"role": "user", "content": "hi"}}])
        threads = [threading.Thread(target=ask, args=(m,)) for m in models]
        for t in threads: t.start()
        for t in threads: t.join()
after = [os.readlink(f"/proc/self/fd/{{fd}}") for fd in (1, 2)]
open({str(result)!r}, "w").write(repr((before, after)))
print("still here")
"""
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.run([sys.executable, "-c", script], stdout=out, stderr=err,
                              env={**os.environ, "PYTHONPATH": routekit_path()}, timeout=120)
    assert proc.returncode == 0, (tmp_path / "err.txt").read_text()
    before, after = eval(result.read_text())  # noqa: S307 - our own repr
    assert after == before
    assert (tmp_path / "out.txt").read_text() == "still here\n"


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_a_stream_left_open_at_exit_prints_nothing(tiny_path: Path, kind: str) -> None:
    # Its generator is finalised at interpreter exit, when imports no longer work: that
    # printed "Exception ignored ... ImportError: sys.meta_path is None".
    import subprocess

    from conftest import routekit_path

    script = f"""
from routekit import Router
cfg = {{"providers": {{"local": {{"kind": {kind!r}}}}},
        "models": {{"m": {{"provider": "local", "path": {str(tiny_path)!r},
                          "chat_format": "chatml", "n_ctx": 64, "n_threads": 1}}}}}}
router = Router(cfg, health_probes=False)
stream = router.chat.completions.create(model="m", stream=True, max_tokens=8,
                                        messages=[{{"role": "user", "content": "hi"}}])
next(stream)
print("left open")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": routekit_path()}, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "left open\n", proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, \
        proc.stderr


def test_closing_the_router_stops_a_non_streaming_in_process_answer(tiny_path: Path) -> None:
    # A llama_cpp complete() in flight ran on to its max_tokens after router.close() (the
    # stream path and the native kind stopped). Compared with the same answer's full
    # length measured in this run.
    from routekit import RouteKitError, Router

    cfg = {"providers": {"local": {"kind": "llama_cpp"}},
           "models": {"m": {"provider": "local", "path": str(tiny_path),
                            "chat_format": "chatml", "n_ctx": 2048, "n_threads": 1}}}
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
           "max_tokens": 1900, "temperature": 0}
    with Router(cfg, health_probes=False) as router:
        start = time.perf_counter()
        full = router.chat.completions.create(**ask)
        whole = time.perf_counter() - start
    assert full.usage is not None and full.usage.completion_tokens == 1900
    router = Router(cfg, health_probes=False)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["reply"] = router.chat.completions.create(**ask)
        except RouteKitError as exc:
            outcome["error"] = exc
        outcome["at"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(whole / 10)
    closed_at = time.perf_counter()
    router.close()
    worker.join(60)
    assert "router was closed" in str(outcome.get("error")), outcome
    assert outcome["at"] - closed_at < whole / 2
