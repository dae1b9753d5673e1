"""Routing memory and deadlines against real loopback servers, killed and restarted by the
tests: breakers open on a dead provider and close once its health probe sees it back; a hung
server stops costing time; a trickling server cannot hold a call past its deadline; a closed
router builds nothing; keys stay out of third-party logs; odd config paths fail fast."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import http_provider, read_in_thread, read_to_the_end, routekit_path
from faultserver import FaultServer, closed_port
from procserver import ProcServer

from routekit import (AllCandidatesFailed, AsyncRouter, ConfigError, Router, StatusError,
                      load_config)

MSG = [{"role": "user", "content": "hi"}]


def chain(urls: list[str], **routing: Any) -> dict[str, Any]:
    providers = {f"p{i}": http_provider(u) for i, u in enumerate(urls)}
    models = {f"m{i}": {"provider": f"p{i}"} for i in range(len(urls))}
    return {"providers": providers, "models": models,
            "fallback_chains": {"m0": {"chain": [f"m{i}" for i in range(1, len(urls))]}},
            "routing": {"retry": {"max_attempts": 1, "jitter": 0}, **routing}}


def answered(router: Router) -> str:
    reply = router.chat.completions.create(model="m0", messages=MSG)
    return str(reply.route.answered_by.model)


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_killed_provider_is_skipped_then_traffic_returns_when_its_probe_passes() -> None:
    with ProcServer() as first, FaultServer() as second:
        cfg = chain([first.url("ok"), second.url("ok")],
                    health={"interval": 0.2, "jitter": 0, "timeout": 0.5})
        with Router(cfg) as router:
            assert answered(router) == "m0"
            first.kill()
            # The refused connection trips the (local) provider's breaker at once...
            assert answered(router) == "m1"
            assert router.plan("m0") == ["m1"]
            reply = router.chat.completions.create(model="m0", messages=MSG)
            skip = reply.route.attempts[0]
            assert skip.outcome == "skipped" and skip.error_type == "CircuitOpen"
            def posts() -> int:  # chat requests only: health probes GET the same server
                return sum(1 for r in second.received if r.method == "POST")

            served_before = posts()
            # ... and it stays skipped while down: no request pays for it.
            for _ in range(5):
                assert answered(router) == "m1"
            assert posts() == served_before + 5
            first.start()  # back on the same port
            assert wait_for(lambda: router.plan("m0")[0] == "m0", 10.0), router.health(probe=False)
            assert answered(router) == "m0"
            assert router.health(probe=False)["p0"].breaker.state == "closed"


def test_async_router_probes_a_restarted_provider_back() -> None:
    async def scenario(first: ProcServer, url1: str) -> list[str]:
        cfg = chain([first.url("ok"), url1], health={"interval": 0.2, "jitter": 0})
        seen = []
        async with AsyncRouter(cfg) as router:
            async def ask() -> str:
                r = await router.chat.completions.create(model="m0", messages=MSG)
                return str(r.route.answered_by.model)
            seen.append(await ask())
            first.kill()
            seen.append(await ask())
            seen.append(await ask())
            first.start()
            for _ in range(200):
                if router.plan("m0")[0] == "m0":
                    break
                await asyncio.sleep(0.05)
            seen.append(await ask())
        return seen

    with ProcServer() as first, FaultServer() as second:
        assert asyncio.run(scenario(first, second.url("ok"))) == ["m0", "m1", "m1", "m0"]


@pytest.mark.parametrize("flavour", ["Router", "AsyncRouter"])
def test_a_probe_that_times_out_while_requests_are_answered_opens_nothing(flavour: str) -> None:
    # A server too busy for its /health (or a caller whose event loop is too busy to read
    # the answer in time) while it answers every request: the answers win. Before, the
    # first timed-out probe opened the breaker and sent live traffic to the fallback (the
    # soak lost 30 requests that way on a loaded CI machine).
    with FaultServer() as busy, FaultServer() as spare:  # think_seconds 1.0 > timeout
        cfg = chain([busy.url("slow_probe"), spare.url("ok")],
                    health={"interval": 0.1, "jitter": 0, "timeout": 0.2})

        def probes_failed(snap: Any) -> bool:
            last = snap["p0"].probe
            gets = sum(1 for r in busy.received if r.method == "GET")
            return last is not None and not last.ok and gets >= 2

        seen: list[str] = []
        if flavour == "Router":
            with Router(cfg) as router:
                end = time.monotonic() + 10
                while time.monotonic() < end and not probes_failed(router.health(probe=False)):
                    seen.append(answered(router))
                last = router.health(probe=False)
                done, snap = probes_failed(last), last["p0"]
        else:
            async def scenario() -> tuple[bool, Any]:
                async with AsyncRouter(cfg) as router:
                    end = time.monotonic() + 10
                    while (time.monotonic() < end
                           and not probes_failed(await router.health(probe=False))):
                        r = await router.chat.completions.create(model="m0", messages=MSG)
                        seen.append(str(r.route.answered_by.model))
                    last = await router.health(probe=False)
                    return probes_failed(last), last["p0"]

            done, snap = asyncio.run(scenario())
    assert done, snap  # the probes did time out ...
    assert "timeout" in snap.probe.detail or "deadline" in snap.probe.detail, snap.probe
    # ... and still no request left the provider that was answering them.
    assert set(seen) == {"m0"}, collections.Counter(seen)
    assert snap.breaker.state == "closed" and snap.breaker.trips == 0, snap.breaker


def test_a_probe_that_times_out_counts_as_one_failure_not_an_open_breaker() -> None:
    # No traffic at all: a probe that got no answer in time is one failure toward
    # failure_threshold; a refused one (nothing listening) opens the breaker at once.
    with FaultServer() as busy:
        cfg = chain([busy.url("slow_probe"), f"http://127.0.0.1:{closed_port()}/v1"],
                    breaker={"failure_threshold": 2})

        async def twice_async() -> list[Any]:
            async with AsyncRouter(cfg, health_probes=False) as router:
                return [await router.health(timeout=0.2) for _ in range(2)]

        with Router(cfg, health_probes=False) as router:
            sync_snaps = [router.health(timeout=0.2) for _ in range(2)]
        for first, second in (sync_snaps, asyncio.run(twice_async())):
            probe = first["p0"].probe
            assert probe is not None and not probe.ok and probe.timed_out, probe
            assert first["p0"].breaker.state == "closed", first["p0"].breaker
            assert first["p0"].breaker.failures == 1
            assert second["p0"].breaker.state == "open", second["p0"].breaker
            refused = first["p1"]
            assert refused.probe is not None and not refused.probe.timed_out, refused.probe
            assert refused.breaker.state == "open", refused.breaker


def test_a_slow_fallback_keeps_its_time_with_an_open_primary_behind_it() -> None:
    # The primary's breaker is open; the fallback, the only candidate the breakers allow,
    # thinks 1.6 s. It must keep the whole budget (a last resort behind it once capped
    # its first byte at first_byte_share of what was left, and the request failed).
    with FaultServer() as server:
        server.think_seconds = 1.6
        cfg = chain([f"http://127.0.0.1:{closed_port()}/v1", server.url("think")])
        cfg["routing"]["timeout"] = {"total": 3.0}
        with Router(cfg, warm=False, health_probes=False) as router:
            router._state.board.providers["p0"].trip(router._state.clock.now(), "test")
            reply = router.chat.completions.create(model="m0", messages=MSG)
    assert [(a.model, a.outcome) for a in reply.route.attempts] == [("m0", "skipped"),
                                                                    ("m1", "ok")]


def test_a_hung_server_stops_costing_time_once_its_breaker_opens() -> None:
    with FaultServer(hang_seconds=10) as fault:
        cfg = chain([fault.url("hang"), fault.url("ok")], breaker={"failure_threshold": 2})
        cfg["providers"]["p0"]["timeout"] = {"connect": 1, "first_byte": 0.3, "read": 5,
                                             "total": 10}
        with Router(cfg) as router:
            spent = []
            for _ in range(5):
                t0 = time.monotonic()
                assert answered(router) == "m1"
                spent.append(time.monotonic() - t0)
        assert all(s >= 0.25 for s in spent[:2]), spent  # two first-byte deadlines...
        assert all(s < 0.15 for s in spent[2:]), spent  # ...then skipped, no waiting
        assert fault.count("hang") == 2


@pytest.mark.parametrize("upstream", [False, True])
def test_a_trickling_server_cannot_hold_a_sync_call_past_its_deadline(upstream: bool) -> None:
    """Defect 3: a server that sends headers then a byte every 0.5 s kept
    Router.create(timeout=1) for 92.7 s. The deadline must bound the whole call."""
    with FaultServer(hang_seconds=20) as fault:
        cfg = chain([fault.url("trickle")])
        cfg["providers"]["p0"]["stream_upstream"] = upstream
        with Router(cfg) as router:
            t0 = time.monotonic()
            with pytest.raises(AllCandidatesFailed) as info:
                router.chat.completions.create(model="m0", messages=MSG, timeout=1)
            elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed  # wide margin: the point is seconds, not minutes
    assert info.value.attempts[0].error_type == "RequestTimeout"


def test_a_trickling_server_cannot_hold_an_async_call_past_its_deadline() -> None:
    async def go(url: str) -> float:
        cfg = chain([url])
        cfg["providers"]["p0"]["stream_upstream"] = False
        async with AsyncRouter(cfg) as router:
            t0 = time.monotonic()
            with pytest.raises(AllCandidatesFailed):
                await router.chat.completions.create(model="m0", messages=MSG, timeout=1)
            return time.monotonic() - t0

    with FaultServer(hang_seconds=20) as fault:
        assert asyncio.run(go(fault.url("trickle"))) < 3.0


@pytest.mark.parametrize("how", ["sync", "sync-stream", "async-stream"])
def test_a_server_that_sends_only_the_role_chunk_then_stalls_leaves_time_for_the_fallback(
    how: str
) -> None:
    # Sending the role chunk is not answering: the first-byte share still caps the head
    # candidate, so the fallback gets the rest of the deadline (it used to get nothing: the
    # stalled head took all 4 s and the fallback was skipped).
    with FaultServer(hang_seconds=10) as fault:
        cfg = chain([fault.url("role_stall"), fault.url("ok")], deadline=4)
        cfg["providers"]["p0"]["timeout"] = {"connect": 1, "read": 60, "total": 60}

        async def in_async() -> Any:
            async with AsyncRouter(cfg) as router:
                s = await router.chat.completions.create(model="m0", messages=MSG, stream=True)
                return await s.text(), s.route

        t0 = time.monotonic()
        if how == "async-stream":
            text, route = asyncio.run(in_async())
        else:
            with Router(cfg) as router:
                if how == "sync":
                    reply = router.chat.completions.create(model="m0", messages=MSG)
                    text, route = reply.choices[0].message.content, reply.route
                else:
                    s = router.chat.completions.create(model="m0", messages=MSG, stream=True)
                    text, route = s.text(), s.route
        elapsed = time.monotonic() - t0
    assert text == fault.text and route.answered_by.model == "m1"
    head = route.attempts[0]
    assert (head.model, head.error_type) == ("m0", "RequestTimeout")
    assert "no first byte" in str(head.error)
    assert elapsed < 3.9  # the fallback answered inside the 4 s deadline


def test_a_reasoning_model_s_thinking_streams_as_it_comes() -> None:
    # vLLM streams reasoning_content (Ollama: reasoning) before the answer, for minutes on a
    # real model. The stream commits at the first of them; it used to hold every chunk back
    # until the first answer text.
    with FaultServer() as fault:
        fault.trickle_every = 0.3
        fault.reasoning_chunks = 4
        with Router(chain([fault.url("reasoning")])) as router:
            t0 = time.monotonic()
            s = router.chat.completions.create(model="m0", messages=MSG, stream=True)
            first_reasoning = None
            got = []
            for chunk in s:
                delta = chunk.choices[0].delta if chunk.choices else None
                if first_reasoning is None and getattr(delta, "reasoning_content", None):
                    first_reasoning = time.monotonic() - t0
                got.append(chunk)
            total = time.monotonic() - t0
    thinking = [c.choices[0].delta.reasoning_content for c in got
                if c.choices and getattr(c.choices[0].delta, "reasoning_content", None)]
    assert thinking == [f"step {i}. " for i in range(4)]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == fault.text
    # 4 x 0.3 s of thinking: the first step arrives at once, not with the answer at ~1.2 s.
    assert first_reasoning is not None and first_reasoning < total / 2, (first_reasoning, total)


@pytest.mark.parametrize("kind", ["openai", "vllm"])
def test_a_probe_answered_429_is_up_not_an_outage(kind: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A cloud rate-limits /v1/models with the rest of an account's traffic. A 429 to the
    # probe opened the provider's breaker, taking every model of it out of plans; a request's
    # 429 counts against its model's breaker alone.
    monkeypatch.setenv("RK_TEST_PROBE_KEY", "rk-test-probe-key")
    with FaultServer() as fault:
        cfg = chain([fault.url("429"), fault.url("ok")])
        cfg["providers"]["p0"] = http_provider(fault.url("429"), kind=kind,
                                               api_key_env="RK_TEST_PROBE_KEY")
        cfg["models"]["m0b"] = {"provider": "p0"}
        cfg["fallback_chains"]["m0b"] = {"chain": ["m1"]}
        with Router(cfg, health_probes=False) as router:
            for _ in range(6):  # past the failure threshold, were each one a failure
                p0 = router.health()["p0"]
            plan = router.plan("m0b")
    assert p0.probe is not None and p0.probe.ok and "HTTP 429" in p0.probe.detail
    assert p0.breaker.state == "closed"
    assert plan == ["m0b", "m1"]


@pytest.mark.parametrize("status", ["413", "422"])
def test_a_request_one_server_rejects_moves_on_and_opens_no_breaker(status: str) -> None:
    # FastAPI-based servers (llama_cpp.server, TGI) answer 422 to a field their schema does
    # not take; a proxy answers 413 to a body too large for it. Each is about the request as
    # this server reads it: another candidate may take it, and five of them opened the
    # model's breaker for every caller (probe report).
    from routekit import RequestRejected

    with FaultServer() as fault:
        cfg = chain([fault.url(status), fault.url("ok")])
        cfg["routing"]["retry"] = {"max_attempts": 3, "backoff_initial": 0.01, "jitter": 0}
        with Router(cfg, health_probes=False) as router:
            replies = [router.chat.completions.create(model="m0", messages=MSG)
                       for _ in range(7)]
            health = router.health(probe=False)
            plan = router.plan("m0")
        rejected = fault.count(status)
    for reply in replies:
        head, answer = reply.route.attempts
        assert (head.model, head.error_type, answer.model) == ("m0", "RequestRejected", "m1")
        assert head.status_code == int(status)
    assert rejected == 7  # not retried on the server that rejected it
    assert health["p0"].breaker.state == "closed" and plan == ["m0", "m1"]
    assert issubclass(RequestRejected, StatusError) and RequestRejected.breaker_scope is None


def test_health_timeout_bounds_a_trickling_probe(tmp_path: Path) -> None:
    import yaml

    with FaultServer(hang_seconds=20) as fault:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(chain([fault.url("trickle")])))
        env = dict(os.environ, PYTHONPATH=routekit_path())
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "routekit", "health", "--config",
                               str(path), "--timeout", "1", "--json"], capture_output=True,
                              text=True, env=env, timeout=60)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 1 and elapsed < 15, (elapsed, proc.stderr)
    assert '"ok": false' in proc.stdout


def test_a_request_in_flight_during_close_builds_no_new_client() -> None:
    """Defect 6: a request in flight during close() rebuilt the next provider's client."""
    with FaultServer(hang_seconds=2) as fault:
        cfg = chain([fault.url("hang"), fault.url("ok")])
        cfg["providers"]["p0"]["timeout"] = {"connect": 1, "first_byte": 0.6, "read": 5,
                                             "total": 10}
        router = Router(cfg, warm=False)
        p1 = router._state.providers["p1"]
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                router.chat.completions.create(model="m0", messages=MSG)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=ask)
        t.start()
        assert wait_for(lambda: fault.count("hang") == 1, 5)
        router.close()
        t.join(10)
        assert p1._client is None and p1._http is None  # nothing built after close
        # Said as it is (the router closed), not as every candidate failing.
        assert errors and not isinstance(errors[0], AllCandidatesFailed)
        assert "router was closed" in str(errors[0])
        snap = router.health()  # probing a closed router creates nothing either
        assert p1._client is None
        assert all(not p.ok or p.probe is None for p in snap.providers)


def test_keys_echoed_in_response_headers_stay_out_of_httpcore_logs(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "rk-live-Zq8Xw3Pn5Rt7Vb2Mk9Ly4Hd6"
    monkeypatch.setenv("ROUTEKIT_TEST_ECHO_KEY", secret)
    with FaultServer() as fault:
        cfg = chain([fault.url("echo_header")])
        cfg["providers"]["p0"]["api_key_env"] = "ROUTEKIT_TEST_ECHO_KEY"
        cfg["providers"]["p0"]["stream_upstream"] = False
        with caplog.at_level(logging.DEBUG):
            with Router(cfg) as router:
                router.chat.completions.create(model="m0", messages=MSG)
    text = caplog.text
    assert "x-echo-authorization" in text  # the header was logged...
    assert secret not in text  # ...without the key
    assert "***" in text


def test_a_named_pipe_as_config_fails_fast(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)
    env = dict(os.environ, PYTHONPATH=routekit_path())
    for cmd in (["validate", str(fifo)], ["chat", "hi", "--config", str(fifo)]):
        proc = subprocess.run([sys.executable, "-m", "routekit", *cmd], capture_output=True,
                              text=True, env=env, timeout=30)
        assert proc.returncode == 1 and "not a regular file" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_an_oversized_config_is_refused_by_its_size_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(50 * 2**20)  # 50 MiB, sparse: the loader must not read it to refuse it
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(big)
    assert time.monotonic() - t0 < 1.0
    assert "50.0 MiB" in str(info.value) and "at most 4 MiB" in str(info.value)


# --- read: the longest silence once bytes flow, not a bound on the first byte -------------


def _thinking(url: str, kind: str = "vllm", **timeout: Any) -> dict[str, Any]:
    provider = http_provider(url, kind=kind)
    provider["timeout"] = {"connect": 1.0, "read": 0.3, "total": 5.0, **timeout}
    if kind == "openai":
        provider["api_key_env"] = "HOME"
    return {"providers": {"p": provider}, "models": {"m": {"provider": "p"}},
            "routing": {"retry": {"max_attempts": 1, "last_candidate_attempts": 1}}}


def _ask(mode: str, cfg: dict[str, Any], stream: bool, **kw: Any) -> str:
    if mode == "sync":
        with Router(cfg, health_probes=False) as router:
            if stream:
                with router.chat.completions.create(model="m", messages=MSG, stream=True,
                                                    **kw) as s:
                    return s.text()
            reply = router.chat.completions.create(model="m", messages=MSG, **kw)
            return str(reply.choices[0].message.content)

    async def go() -> str:
        async with AsyncRouter(cfg, health_probes=False) as router:
            if stream:
                s = await router.chat.completions.create(model="m", messages=MSG, stream=True,
                                                         **kw)
                async with s:
                    return await s.text()
            reply = await router.chat.completions.create(model="m", messages=MSG, **kw)
            return str(reply.choices[0].message.content)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("stream", [False, True])
def test_read_does_not_bound_the_wait_for_the_first_byte(mode: str, stream: bool) -> None:
    # A model that thinks 0.8 s before its first token, read 0.3 s: first_byte (3 s) is
    # the bound for that wait; it used to fail at 0.3 s with "read timeout".
    with FaultServer() as server:
        server.think_seconds = 0.8
        text = _ask(mode, _thinking(server.url("think"), first_byte=3.0), stream)
    assert text == "Hello from the fault server."


@pytest.mark.parametrize("stream", [False, True])
def test_a_cloud_model_may_think_longer_than_read(stream: bool) -> None:
    # Cloud kinds have no first-byte limit (reasoning models think for minutes): only total.
    with FaultServer() as server:
        server.think_seconds = 0.8
        text = _ask("sync", _thinking(server.url("think"), kind="openai"), stream)
    assert text == "Hello from the fault server."


@pytest.mark.parametrize("kind", ["openai", "vllm"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_slow_reader_is_not_cut_by_the_deadline(mode: str, kind: str) -> None:
    # The server sends the whole answer at once (240 kB: more than the socket buffers hold);
    # the app spends 0.03 s on each of 60 chunks (a TTS, a websocket with backpressure): 1.8 s
    # against a 0.5 s total. The caller's time with a chunk is not the server's: the stream
    # ends whole, as openai's client's does.
    words = " ".join(f"w{i}" + "x" * 4000 for i in range(60))
    with FaultServer(text=words) as server:
        cfg = _thinking(server.url("ok"), kind=kind, read=0.5, total=0.5)
        if mode == "sync":
            with Router(cfg, health_probes=False) as router:
                parts = []
                for chunk in router.chat.completions.create(model="m", messages=MSG,
                                                             stream=True):
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                    time.sleep(0.03)
        else:
            async def read() -> list[str]:
                async with AsyncRouter(cfg, health_probes=False) as router:
                    got = []
                    stream = await router.chat.completions.create(model="m", messages=MSG,
                                                                  stream=True)
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            got.append(chunk.choices[0].delta.content)
                        await asyncio.sleep(0.03)
                    return got

            parts = asyncio.run(read())
    assert "".join(parts) == words


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_total_still_bounds_a_stream_that_drips_for_a_fast_reader(mode: str) -> None:
    # The reader's own time no longer counts; the server's still does: chunks every 0.1 s
    # (well within read 0.5) for ~4 s of answer, against a total of 1 s.
    from routekit import StreamInterrupted

    words = " ".join(f"w{i}" for i in range(40))
    with FaultServer(text=words) as server:
        server.trickle_every = 0.1
        cfg = _thinking(server.url("drip_stream"), read=0.5, total=1.0)
        start = time.monotonic()
        with pytest.raises(StreamInterrupted) as info:
            _ask(mode, cfg, True)
        took = time.monotonic() - start
    assert 0.9 < took < 3.0, took  # ~1 s; wide margin for a loaded machine
    assert "deadline" in str(info.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_read_still_bounds_a_silence_between_chunks(mode: str) -> None:
    from routekit import StreamInterrupted

    with FaultServer(hang_seconds=5) as server:
        start = time.monotonic()
        with pytest.raises(StreamInterrupted, match="stalled") as info:
            _ask(mode, _thinking(server.url("stall_stream"), first_byte=3.0), True)
        assert time.monotonic() - start < 2.5  # 0.3 s of silence, not first_byte or total
    assert info.value.partial


def test_an_httpx_timeout_keeps_openais_meaning_read_bounds_the_first_byte() -> None:
    from routekit.providers.http.transport import http_lib

    httpx = http_lib()  # httpx or httpx2, whichever the installed openai uses
    with FaultServer() as server:
        server.think_seconds = 2.0
        with pytest.raises(AllCandidatesFailed, match="no first byte within 0.3 s"):
            _ask("sync", _thinking(server.url("think"), first_byte=3.0), False,
                 timeout=httpx.Timeout(5.0, read=0.3))


def test_an_async_router_used_by_one_asyncio_run_after_another_keeps_no_old_sockets() -> None:
    # Each event loop gets its own HTTP client; a finished loop's client used to stay open
    # (two sockets per loop) until the router was collected, one ResourceWarning each.
    import gc
    import warnings

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with FaultServer() as server:
        router = AsyncRouter(chain([server.url("ok")]), health_probes=False)

        async def work() -> str:
            reply = await router.chat.completions.create(model="m0", messages=MSG)
            s = await router.chat.completions.create(model="m0", messages=MSG, stream=True)
            async with s:
                streamed = await s.text()
            return f"{reply.choices[0].message.content}|{streamed}"

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(work())
            gc.collect()
            base = open_fds()
            answers = [asyncio.run(work()) for _ in range(5)]
            gc.collect()
            grown = open_fds() - base
            asyncio.run(router.aclose())
            gc.collect()
    assert all(a == answers[0] and a for a in answers)
    assert grown <= 0, f"{grown} descriptors more after 5 loops"
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_an_async_stream_closed_from_another_task_ends_the_waiting_read() -> None:
    import openai

    from routekit import StreamInterrupted

    async def go() -> tuple[BaseException | None, float, dict[str, Any]]:
        with FaultServer(hang_seconds=5) as server:
            cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
            cfg["providers"]["p"]["timeout"]["read"] = 4.0
            cfg["providers"]["p"]["max_concurrency"] = 2
            async with AsyncRouter(cfg, health_probes=False) as router:
                stream = await router.chat.completions.create(model="m", messages=MSG,
                                                              stream=True)

                reader = asyncio.ensure_future(read_to_the_end(stream))
                await asyncio.sleep(0.2)  # the reader waits for a chunk that never comes
                start = time.monotonic()
                await stream.aclose()  # a watchdog, in another task
                error = await reader
                took = time.monotonic() - start
                return error, took, {n: b.as_dict()
                                     for n, b in router._state.bulkheads.items()}

    error, took, bulkheads = asyncio.run(go())
    assert isinstance(error, StreamInterrupted) and isinstance(error, openai.APIConnectionError)
    assert "closed while a read was waiting" in str(error) and error.partial
    assert took < 2.0  # at once, not after the 4 s read timeout
    assert bulkheads["p"]["in_flight"] == 0


def test_two_watchdogs_closing_one_async_stream_both_return() -> None:
    # Two close() calls at once: the second used to wait forever for an event the first
    # had replaced, and the reader's task was left with a cancellation pending.
    from routekit import StreamInterrupted

    async def go() -> tuple[BaseException | None, int, int]:
        with FaultServer(hang_seconds=5) as server:
            cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
            async with AsyncRouter(cfg, health_probes=False) as router:
                stream = await router.chat.completions.create(model="m", messages=MSG,
                                                              stream=True)
                cancelling: list[int] = []

                async def reader() -> BaseException | None:
                    error = await read_to_the_end(stream)
                    task = asyncio.current_task()
                    cancelling.append(getattr(task, "cancelling", lambda: 0)())
                    return error

                reading = asyncio.ensure_future(reader())
                await asyncio.sleep(0.2)
                closers = [asyncio.ensure_future(stream.close()) for _ in range(2)]
                done, _ = await asyncio.wait(closers, timeout=3.0)
                error = await asyncio.wait_for(reading, 3.0)
                await stream.close()  # and once more, after the fact
                return error, len(done), cancelling[0]

    error, closed, cancelling = asyncio.run(go())
    assert closed == 2
    assert isinstance(error, StreamInterrupted)
    assert cancelling == 0


def test_an_async_raw_streaming_response_closes_with_await() -> None:
    async def go(server: FaultServer) -> bool:
        cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
        async with AsyncRouter(cfg, health_probes=False) as router:
            raw = await router.chat.completions.with_raw_response.create(
                model="m", messages=MSG, stream=True)
            stream = raw.parse()
            await stream.__anext__()
            await raw.close()  # was a plain method that dropped the stream's close()
            return await asyncio.to_thread(server.hangups.acquire, True, 2.0)

    with FaultServer(hang_seconds=5) as server:
        assert asyncio.run(go(server)) is True  # the server saw the hang-up at once


def test_a_stream_read_while_its_router_closes_says_so() -> None:
    from routekit import StreamInterrupted

    async def go() -> BaseException | None:
        with FaultServer(hang_seconds=5) as server:
            cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
            cfg["providers"]["p"]["timeout"]["read"] = 4.0
            router = AsyncRouter(cfg, health_probes=False)
            stream = await router.chat.completions.create(model="m", messages=MSG,
                                                          stream=True)

            reader = asyncio.ensure_future(read_to_the_end(stream))
            await asyncio.sleep(0.2)
            await router.aclose()
            return await asyncio.wait_for(reader, 3.0)

    error = asyncio.run(go())
    assert isinstance(error, StreamInterrupted)
    assert "the router was closed" in str(error) and error.partial
    assert error.route is not None and error.route.attempts[-1].error_type == "StreamInterrupted"


def test_a_sync_stream_closed_from_another_thread_ends_the_waiting_read() -> None:
    # A watchdog thread's close() raised "ValueError: generator already executing", closed
    # nothing, and the reader waited out its 4 s read timeout, blamed on the provider.
    import openai

    from routekit import StreamInterrupted
    from routekit.testing import FakeProvider, FakeReply

    with FaultServer(hang_seconds=10) as server:
        cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
        cfg["providers"]["p"]["timeout"]["read"] = 4.0
        with Router(cfg, health_probes=False) as router:
            stream = router.chat.completions.create(model="m", messages=MSG, stream=True)
            reader, outcome = read_in_thread(stream)
            time.sleep(0.3)  # the reader waits for a chunk that never comes
            start = time.monotonic()
            stream.close()  # the watchdog
            took = time.monotonic() - start
            reader.join(10)
            assert server.hangups.acquire(timeout=2.0)  # the connection was let go
            health = router.health(probe=False)["p"]
    error = outcome["error"]
    assert isinstance(error, StreamInterrupted) and isinstance(error, openai.APIConnectionError)
    assert "closed while a read was waiting" in str(error) and error.partial
    assert took < 2.0 and not reader.is_alive()
    assert stream.route.attempts[-1].error_type == "StreamInterrupted"
    assert health.breaker.failures == 0 and health.models[0].failures == 0

    # No socket to shut down (an in-process model, here a fake one): the read ends at its
    # next chunk, and the stream stops there.
    fake = FakeProvider("p", replies=[FakeReply(text="one two three four five six",
                                                chunk_delay=0.2)])
    cfg = {"providers": {"p": {"kind": "ollama"}}, "models": {"m": {"provider": "p"}}}
    with Router(cfg, providers={"p": fake}, health_probes=False) as router:
        stream = router.chat.completions.create(model="m", messages=MSG, stream=True)
        reader, outcome = read_in_thread(stream)
        time.sleep(0.3)
        stream.close()
        reader.join(10)
    assert isinstance(outcome["error"], StreamInterrupted)
    assert 1 <= len(outcome["chunks"]) < 6


def test_a_sync_stream_read_while_its_router_closes_in_another_thread_ends_at_once() -> None:
    # close() alone did not wake the reading thread's recv(): it waited out its 4 s read
    # timeout, and the route blamed the provider (ConnectionFailed).
    from routekit import StreamInterrupted

    with FaultServer(hang_seconds=10) as server:
        cfg = _thinking(server.url("stall_stream"), first_byte=3.0)
        cfg["providers"]["p"]["timeout"]["read"] = 4.0
        router = Router(cfg, health_probes=False)
        stream = router.chat.completions.create(model="m", messages=MSG, stream=True)
        reader, outcome = read_in_thread(stream)
        time.sleep(0.3)  # the reader waits for a chunk that never comes
        start = time.monotonic()
        router.close()
        reader.join(10)
        assert server.hangups.acquire(timeout=2.0)  # the server saw the connection go
    error = outcome["error"]
    assert isinstance(error, StreamInterrupted) and "the router was closed" in str(error)
    assert outcome["at"] - start < 2.0  # at once, not after the 4 s read timeout
    assert stream.route.attempts[-1].error_type == "StreamInterrupted"
    assert router.health(probe=False)["p"].breaker.failures == 0


@pytest.mark.parametrize("mode", ["sync", "async", "sync-stream", "async-stream"])
def test_closing_the_router_under_a_call_blames_no_provider(mode: str) -> None:
    # The call's client is closed under it: that error says nothing about the provider. It
    # used to count against the breakers (both ended open with ~10 requests in flight), walk
    # on to the fallback, and end as AllCandidatesFailed telling the user to start servers.
    # A stream waiting for its first chunk did so still (probe report).
    from routekit import RouteKitError

    stream = mode.endswith("-stream")
    with FaultServer() as server:
        server.think_seconds = 3.0
        cfg = chain([server.url("think"), server.url("ok")])
        errors: list[BaseException] = []
        if mode.startswith("sync"):
            router = Router(cfg, health_probes=False)

            def call() -> None:
                try:
                    router.chat.completions.create(model="m0", messages=MSG, timeout=8,
                                                   stream=stream)
                except BaseException as exc:  # noqa: BLE001 - what the caller sees
                    errors.append(exc)

            thread = threading.Thread(target=call)
            thread.start()
            assert wait_for(lambda: server.requests >= 1)
            router.close()
            thread.join(10)
            board = router._state.board
        else:
            async def go() -> Any:
                arouter = AsyncRouter(cfg, health_probes=False)
                task = asyncio.ensure_future(arouter.chat.completions.create(
                    model="m0", messages=MSG, timeout=8, stream=stream))
                while server.requests < 1:
                    await asyncio.sleep(0.01)
                await arouter.aclose()
                try:
                    await task
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                return arouter._state.board

            board = asyncio.run(go())
        assert server.count("ok") == 0  # no fallback tried
    (error,) = errors
    assert not isinstance(error, AllCandidatesFailed)
    assert isinstance(error, RouteKitError) and "router was closed" in str(error)
    assert [(a.model, a.outcome) for a in error.route.attempts] == [("m0", "error")]
    assert {b.state for b in board.models.values()} == {"closed"}
    assert {b.state for b in board.providers.values()} == {"closed"}
