"""The router with in-process llama.cpp models: the embedded default, warm standby, the
in-process queue bound as a reason to move on, and in-process streaming."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_retry, http_provider
from faultserver import FaultServer, closed_port
from tinygguf import write_tiny_gguf

from routekit import AsyncRouter, Router
from routekit._config.default import DEFAULT_CONFIG, DEFAULT_MODEL

MSG = [{"role": "user", "content": "Name one colour."}]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def test_default_router_answers_in_process_when_nothing_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTEKIT_CONFIG", raising=False)
    with Router.default() as router:
        reply = router.chat.completions.create(model=DEFAULT_MODEL, messages=MSG, max_tokens=8,
                                               temperature=0)
    route = reply.route
    assert reply.choices[0].message.content  # real llama.cpp text
    assert route.answered_by is not None
    if not _listening(11434) and not _listening(8000):
        assert [a.model for a in route.attempts] == ["llama3.2", "vllm-default", "gemma3-270m"]
        assert [a.error_type for a in route.attempts[:2]] == ["ConnectionFailed"] * 2
        assert route.answered_by.model == "gemma3-270m"
        assert all(a.tries == 1 for a in route.attempts)


def test_default_config_is_overridable_by_env(tmp_path: Path, gemma_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "rk.yaml"
    cfg.write_text(
        "providers: {local: {kind: llama_cpp}}\n"
        f"models: {{solo: {{provider: local, path: '{gemma_path}', chat_format: gemma, "
        "n_ctx: 512, warm: false}}\n"
    )
    monkeypatch.setenv("ROUTEKIT_CONFIG", str(cfg))
    with Router.default() as router:
        assert list(router.config.models) == ["solo"]
        assert router.plan("solo") == ["solo"]
    assert set(DEFAULT_CONFIG["models"]) == {"llama3.2", "vllm-default", "gemma3-270m"}


def _chain_to_local(model_path: Path, *, head_url: str, **local: Any) -> dict[str, Any]:
    return {
        "providers": {"head": http_provider(head_url), "local": {"kind": "llama_cpp"}},
        "models": {
            "head": {"provider": "head", "model_id": "x"},
            "local-model": {"provider": "local", "path": str(model_path), "n_ctx": 512,
                            "n_threads": 1, **local},
        },
        "fallback_chains": {"head": {"chain": ["local-model"]}},
        "routing": fast_retry(),
    }


def test_terminal_in_process_models_are_warm_at_start(tiny_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = _chain_to_local(tiny_path, head_url=dead, chat_format="chatml")
    with Router(cfg) as router:
        provider: Any = router._state.providers["local"]
        assert provider.is_loaded("local-model")  # loaded before any request
        reply = router.chat.completions.create(model="head", messages=MSG, max_tokens=4)
        assert reply.route.answered_by.model == "local-model"
        assert reply.route.attempts[0].error_type == "ConnectionFailed"
    with Router(cfg, warm=False) as router:
        assert not router._state.providers["local"].is_loaded("local-model")  # type: ignore[attr-defined]
    cfg["models"]["local-model"]["warm"] = False
    with Router(cfg) as router:
        assert not router._state.providers["local"].is_loaded("local-model")  # type: ignore[attr-defined]


def test_a_warm_start_collects_its_garbage_once_per_process(tiny_path: Path) -> None:
    # The imports of a warm start leave CPython's next full collection (62 ms here) to land
    # on the first request; start-up runs it instead, once per process. In a fresh
    # interpreter, as an application starts.
    import json
    import os
    import subprocess
    import sys

    code = (
        "import gc, json, sys\n"
        "calls, full = [], []\n"
        "real = gc.collect\n"
        "gc.collect = lambda *a: calls.append(1) or real(*a)\n"
        "gc.callbacks.append(lambda p, i: p == 'stop' and i['generation'] == 2 and"
        " full.append(1))\n"
        "from routekit import Router\n"
        "cfg = json.loads(sys.argv[1])\n"
        "with Router(cfg) as r:\n"
        "    started = (len(calls), len(full))\n"
        "    r.chat.completions.create(model='m', max_tokens=3,\n"
        "                              messages=[{'role': 'user', 'content': 'hi'}])\n"
        "    first = len(full) - started[1]\n"
        "with Router(cfg) as r:\n"
        "    again = len(calls)\n"
        "print(json.dumps([started, first, again]))\n"
    )
    cfg = {"providers": {"local": {"kind": "llama_cpp"}},
           "models": {"m": {"provider": "local", "path": str(tiny_path),
                            "chat_format": "chatml", "n_ctx": 256, "n_threads": 1}}}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True,
                         text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    (collects, full_at_start), full_in_first_request, collects_after_two = json.loads(
        out.stdout.splitlines()[-1])
    assert collects == 1 and full_at_start >= 1  # the warm start collected
    if sys.version_info < (3, 14):  # 3.14's incremental collector scans the old generation
        assert full_in_first_request == 0  # in steps; before it: the first request did not
    assert collects_after_two == 1  # and the second router did not collect again
    # An application that turned automatic collection off gets no collection from routekit.
    off = subprocess.run([sys.executable, "-c", "import gc; gc.disable()\n" + code,
                          json.dumps(cfg)], capture_output=True, text=True, timeout=120,
                         env=env, check=False)
    assert off.returncode == 0, off.stderr[-2000:]
    assert json.loads(off.stdout.splitlines()[-1])[0][0] == 0


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_an_in_process_stream_asked_for_usage_prices_its_route(tiny_path: Path,
                                                                  kind: str) -> None:
    """stream_options.include_usage: the last chunk carries the usage, and the route prices
    the answer from it, as for a server's stream."""
    cfg = _chain_to_local(tiny_path, head_url=f"http://127.0.0.1:{closed_port()}/v1",
                          chat_format="chatml",
                          price={"input_per_1k": 1.0, "output_per_1k": 2.0})
    cfg["providers"]["local"]["kind"] = kind
    with Router(cfg) as router:
        with router.chat.completions.create(model="head", messages=MSG, max_tokens=4,
                                            stream=True,
                                            stream_options={"include_usage": True}) as s:
            chunks = list(s)
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage is not None
        assert usage.completion_tokens == 4  # the tiny model never ends by itself
        answered = s.route.attempts[-1]
        assert answered.outcome == "ok" and answered.model == "local-model"
        assert answered.cost_usd == pytest.approx(
            usage.prompt_tokens / 1000 * 1.0 + 4 / 1000 * 2.0)
        with router.chat.completions.create(model="head", messages=MSG, max_tokens=4,
                                            stream=True) as s:
            assert all(c.choices for c in s)
        assert s.route.attempts[-1].cost_usd is None  # no usage asked for, none reported


def test_busy_in_process_model_moves_on(tiny_path: Path, fault: FaultServer) -> None:
    """queue_size 0: while one stream holds the model, the next request fails fast as busy
    and is answered by the next candidate."""
    cfg = {
        "providers": {"local": {"kind": "llama_cpp"}, "backup": http_provider(fault.url("ok"))},
        "models": {
            "local-model": {"provider": "local", "path": str(tiny_path), "n_ctx": 512,
                            "n_threads": 1, "chat_format": "chatml", "queue_size": 0},
            "backup": {"provider": "backup", "model_id": "b"},
        },
        "fallback_chains": {"local-model": {"chain": ["backup"]}},
        "routing": fast_retry(),
    }
    with Router(cfg) as router:
        holder = router.chat.completions.create(model="local-model", messages=MSG,
                                                stream=True, max_tokens=200)
        try:
            assert holder.route.answered_by is None  # still streaming: holds the model
            reply = router.chat.completions.create(model="local-model", messages=MSG,
                                                   max_tokens=4)
        finally:
            holder.close()
        first = reply.route.attempts[0]
        assert first.error_type == "ProviderBusy"
        assert reply.route.answered_by.model == "backup"
        # closing the stream released the model: it answers again
        again = router.chat.completions.create(model="local-model", messages=MSG, max_tokens=4)
        assert again.route.answered_by.model == "local-model"
    assert holder.route.answered_by is not None  # closed early: the answer was served


def test_many_threads_share_one_in_process_model(tiny_path: Path) -> None:
    cfg = _chain_to_local(tiny_path, head_url=f"http://127.0.0.1:{closed_port()}/v1",
                          chat_format="chatml", queue_size=16)
    results: list[Any] = []
    lock = threading.Lock()
    with Router(cfg) as router:
        def worker() -> None:
            r = router.chat.completions.create(model="head", messages=MSG, max_tokens=3)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(results) == 8
    assert all(r.route.answered_by.model == "local-model" for r in results)
    assert len({id(r.route) for r in results}) == 8


def test_async_stream_in_process(gemma_path: Path) -> None:
    cfg = _chain_to_local(gemma_path, head_url=f"http://127.0.0.1:{closed_port()}/v1",
                          chat_format="gemma")

    async def go() -> tuple[str, Any]:
        async with AsyncRouter(cfg) as router:
            stream = await router.chat.completions.create(
                model="head", messages=MSG, stream=True, max_tokens=8, temperature=0)
            async with stream:
                return await stream.text(), stream.route

    text, route = asyncio.run(go())
    assert text.strip()
    assert [a.outcome for a in route.attempts] == ["error", "ok"]
    assert route.answered_by.ttfb_ms is not None and route.answered_by.ttfb_ms > 0


def test_llama_cpp_logs_go_to_logging_not_stderr(tiny_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import logging, sys; from routekit import Router; "
        "logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='%(name)s %(message)s'); "
        f"r = Router({{'providers': {{'l': {{'kind': 'llama_cpp'}}}}, 'models': {{'m': "
        f"{{'provider': 'l', 'path': {str(tiny_path)!r}, 'chat_format': 'chatml', 'n_ctx': 256}}}}}}); "
        "r.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}], max_tokens=2); "
        "r.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "llama" not in out.stderr  # quiet library: nothing from llama.cpp on stderr
    assert "routekit.llama_cpp" in out.stdout  # ... but every line reaches logging


def _gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_offload(), reason="needs a CUDA build of llama-cpp-python and a GPU")
def test_gpu_offload_serves_the_default_model(gemma_path: Path) -> None:
    cfg = {"providers": {"local": {"kind": "llama_cpp"}},
           "models": {"g": {"provider": "local", "path": str(gemma_path), "chat_format": "gemma",
                            "n_ctx": 512}}}
    with Router(cfg) as router:
        provider: Any = router._state.providers["local"]
        assert provider.load_params("g")["n_gpu_layers"] == -1  # every layer on the GPU
        reply = router.chat.completions.create(model="g", messages=MSG, max_tokens=8)
    assert reply.choices[0].message.content


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_an_in_process_model_counts_the_prompt_not_an_estimate(gemma_path: Path,
                                                                kind: str) -> None:
    # 2,175 characters are 295 gemma tokens: with max_tokens 8 they fit n_ctx 512, though the
    # router's estimate (4 characters a token: ≈546) said they did not, and skipped the model.
    # A prompt that does not fit is still refused, by the model's own count, and the plan
    # moves on.
    prose = ("The committee reviewed the quarterly infrastructure report and recommended "
             "replacing the aging distribution transformers before the summer peak. ") * 15
    cfg = {"providers": {"local": {"kind": kind}, "spare": {"kind": "vllm",
                                                           "base_url": "http://127.0.0.1:9/v1"}},
           "models": {"m": {"provider": "local", "path": str(gemma_path), "chat_format": "gemma",
                            "n_ctx": 512, "n_threads": 2},
                      "s": {"provider": "spare"}},
           "fallback_chains": {"m": {"chain": ["s"]}}}
    with Router(cfg, health_probes=False) as router:
        reply = router.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prose}], max_tokens=8,
            temperature=0)
        assert reply.route.answered_by.model == "m"
        assert 250 < reply.usage.prompt_tokens < 512
        with pytest.raises(Exception) as info:  # too long by the model's count: moves on to s
            router.chat.completions.create(
                model="m", messages=[{"role": "user", "content": prose * 3}], max_tokens=8)
    first = info.value.route.attempts[0]  # type: ignore[attr-defined]
    assert (first.model, first.outcome, first.error_type) == ("m", "error",
                                                              "ContextLengthExceeded")
    assert info.value.route.attempts[1].model == "s"  # type: ignore[attr-defined]


def test_one_token_completing_two_stops_cuts_at_the_earliest(tiny_path: Path) -> None:
    # A token that completes two stops at once: the answer ends before the earlier match,
    # whichever is listed first, and never holds a stop (llama-cpp-python's non-streamed
    # path and the native loop cut at the first listed). Stops are picked from the model's
    # own greedy answer: s_early starts one character before a piece of 3+ characters and
    # ends inside it, s_late is the piece's last two characters.
    cfg = {"providers": {"py": {"kind": "llama_cpp"}, "nat": {"kind": "llama_cpp_native"}},
           "models": {kind: {"provider": kind, "path": str(tiny_path), "chat_format": "chatml",
                             "n_ctx": 256, "n_threads": 1} for kind in ("py", "nat")}}
    ask = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0,
           "max_tokens": 16}
    with Router(cfg, health_probes=False) as router:
        pieces = [c.choices[0].delta.content or "" for c in router.chat.completions.create(
            model="py", stream=True, **ask) if c.choices]
        text = "".join(pieces)
        picked = None
        at = 0
        for piece in pieces:
            a, b = at, at + len(piece)
            at = b
            if a < 2 or len(piece) < 3:  # a non-empty answer before it
                continue
            early, late = text[a - 1:a + 1], text[b - 2:b]
            if text.find(early) == a - 1 and text.find(late) == b - 2:
                picked = (early, late, text[:a - 1])
                break
        assert picked is not None, f"no piece to build the case from in {pieces!r}"
        early, late, expected = picked
        for model in ("py", "nat"):
            for stream in (False, True):
                if stream:
                    got = "".join(c.choices[0].delta.content or "" for c in
                                  router.chat.completions.create(
                                      model=model, stream=True, stop=[late, early], **ask)
                                  if c.choices)
                else:
                    got = router.chat.completions.create(
                        model=model, stop=[late, early], **ask).choices[0].message.content
                assert got == expected, (model, stream, got, pieces)
