"""routekit errors are openai's errors too: caught by ``except openai.<Class>`` at the public
surface, still routekit's classes, with their attributes, picklable; and ``import routekit``
still imports no openai."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from typing import Any

import openai
import pytest

from routekit import (
    AllCandidatesFailed, AsyncRouter, AuthenticationFailed, BadRequest, ConnectionFailed,
    ModelNotFound, NoRouteError, Overloaded, ProviderError, RateLimited, RequestTimeout,
    RouteKitError, Router, ServerError, StatusError, StreamInterrupted,
)
from routekit._compat.errors import openai_class_name, to_openai
from routekit.testing import FakeProvider, FakeReply

MSG = [{"role": "user", "content": "hi"}]
CONFIG: dict[str, Any] = {
    "providers": {"a": {"kind": "ollama"}, "b": {"kind": "vllm"}},
    "models": {"m": {"provider": "a"}, "n": {"provider": "b"}},
    "fallback_chains": {"m": {"chain": ["n"]}},
    "routing": {"retry": {"max_attempts": 1, "last_candidate_attempts": 1}},
}


def _router(mode: str, a: Any, b: Any) -> Any:
    cls = Router if mode == "sync" else AsyncRouter
    return cls(CONFIG, providers={"a": FakeProvider("a", default=a),
                                  "b": FakeProvider("b", default=b)}, health_probes=False)


def _create(mode: str, router: Any, **kw: Any) -> Any:
    kw.setdefault("model", "m")
    kw.setdefault("messages", MSG)
    if mode == "sync":
        return router.chat.completions.create(**kw)
    return asyncio.run(router.chat.completions.create(**kw))


modes = pytest.mark.parametrize("mode", ["sync", "async"])


@modes
def test_all_rate_limited_is_caught_as_openai_rate_limit_error(mode: str) -> None:
    limited = RateLimited("slow down", status_code=429, retry_after=30.0)
    router = _router(mode, limited, RateLimited("busy", status_code=429, retry_after=30.0))
    with pytest.raises(openai.RateLimitError) as info:
        _create(mode, router)
    exc = info.value
    assert isinstance(exc, AllCandidatesFailed) and isinstance(exc, RouteKitError)
    assert isinstance(exc, openai.APIStatusError) and isinstance(exc, openai.APIError)
    assert exc.status_code == 429 and exc.response.status_code == 429
    assert exc.request.method == "POST" and exc.response.request is exc.request
    assert exc.route is not None and len(exc.route.attempts) == 2
    assert exc.message == str(exc) and "all 2 attempt(s)" in exc.message
    assert exc.response.headers["x-routekit-requested"] == "m"


@modes
def test_a_fatal_bad_request_keeps_its_routekit_attributes(mode: str) -> None:
    body = {"error": {"message": "no", "code": "invalid_value", "param": "temperature"}}
    router = _router(mode, BadRequest("bad temperature", status_code=400, body=body), "ok")
    with pytest.raises(openai.BadRequestError) as info:
        _create(mode, router)
    exc = info.value
    assert isinstance(exc, BadRequest) and exc.status_code == 400
    assert exc.body == body  # routekit's body: the whole error body
    assert (exc.code, exc.param) == ("invalid_value", "temperature")  # openai's, from it
    assert exc.route is not None and exc.route.attempts[0].outcome == "error"


@modes
def test_argument_errors_are_bad_request_errors(mode: str) -> None:
    router = _router(mode, "ok", "ok")
    with pytest.raises(openai.BadRequestError) as info:
        _create(mode, router, temperature=9)
    assert isinstance(info.value, BadRequest)
    assert "temperature" in info.value.message


@modes
def test_unknown_model_is_not_found(mode: str) -> None:
    router = _router(mode, "ok", "ok")
    with pytest.raises(openai.NotFoundError) as info:
        _create(mode, router, model="nope")
    assert isinstance(info.value, NoRouteError) and info.value.status_code == 404


def test_errors_raised_before_a_request_are_openais_too() -> None:
    # Not only create()'s: models.retrieve, with_options and parse's own argument checks.
    from pydantic import BaseModel

    class Answer(BaseModel):
        a: int

    router = _router("sync", "ok", "ok")
    with pytest.raises(openai.NotFoundError) as info:
        router.models.retrieve("nope")
    assert isinstance(info.value, NoRouteError) and info.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        asyncio.run(_router("async", "ok", "ok").models.retrieve("nope"))
    with pytest.raises(openai.BadRequestError) as bad:
        router.with_options(max_retries=-1)
    assert isinstance(bad.value, BadRequest) and "max_retries" in bad.value.message
    with pytest.raises(openai.BadRequestError, match="does not stream"):
        router.chat.completions.parse(model="m", messages=MSG, response_format=Answer,
                                      stream=True)


@modes
def test_last_attempt_timeout_is_an_api_timeout_error(mode: str) -> None:
    router = _router(mode, ConnectionFailed("refused", refused=True),
                     FakeReply(delay=30))
    with pytest.raises(openai.APITimeoutError) as info:
        _create(mode, router, timeout=0.2)
    assert isinstance(info.value, AllCandidatesFailed)
    assert isinstance(info.value, openai.APIConnectionError)


@modes
def test_a_broken_stream_raises_an_api_connection_error(mode: str) -> None:
    cut = FakeReply(text="one two three four", fail_after=2,
                    error=ConnectionFailed("reset"))
    router = _router(mode, cut, "ok")

    def consume() -> None:
        if mode == "sync":
            for _ in router.chat.completions.create(model="m", messages=MSG, stream=True):
                pass
            return

        async def go() -> None:
            stream = await router.chat.completions.create(model="m", messages=MSG, stream=True)
            async for _ in stream:
                pass

        asyncio.run(go())

    with pytest.raises(openai.APIConnectionError) as info:
        consume()
    assert isinstance(info.value, StreamInterrupted) and info.value.partial == "one two"


def test_overloaded_is_a_rate_limit_error() -> None:
    exc = Overloaded("router is at its limit")
    to_openai(exc)
    assert isinstance(exc, openai.RateLimitError) and isinstance(exc, Overloaded)
    assert exc.status_code == 429


@pytest.mark.parametrize(("exc", "name", "status"), [
    (BadRequest("x", status_code=400), "BadRequestError", 400),
    (AuthenticationFailed("x", status_code=401), "AuthenticationError", 401),
    (AuthenticationFailed("x", status_code=403), "PermissionDeniedError", 403),
    (ModelNotFound("x", status_code=404), "NotFoundError", 404),
    (ServerError("x", status_code=409), "ConflictError", 409),
    (ServerError("x", status_code=503), "InternalServerError", 503),
    (StatusError("x", status_code=418), "APIStatusError", 418),
    (RequestTimeout("x"), "APITimeoutError", None),
    (ConnectionFailed("x"), "APIConnectionError", None),
    (ProviderError("x"), "APIError", None),
])
def test_each_error_gets_openais_class_for_it(exc: RouteKitError, name: str,
                                              status: int | None) -> None:
    assert openai_class_name(exc) == (name, status)
    routekit_class = type(exc)
    to_openai(exc)
    assert isinstance(exc, getattr(openai, name)) and isinstance(exc, routekit_class)
    assert type(exc).__name__ == routekit_class.__name__
    assert repr(exc) == f"{routekit_class.__name__}('x')"
    if status is not None:
        assert exc.status_code == status  # type: ignore[attr-defined]
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and again.args == exc.args


def test_retyped_errors_keep_retry_after_partial_and_route_through_pickle() -> None:
    exc = RateLimited("slow", status_code=429, retry_after=1.5, provider="p", model="m")
    to_openai(exc)
    assert exc.response.headers["retry-after"] == "1.5"
    again = pickle.loads(pickle.dumps(exc))
    assert isinstance(again, openai.RateLimitError) and isinstance(again, RateLimited)
    assert (again.retry_after, again.provider, again.status_code) == (1.5, "p", 429)
    cut = StreamInterrupted("cut", partial="abc")
    to_openai(cut)
    assert pickle.loads(pickle.dumps(cut)).partial == "abc"


def test_plain_routekit_errors_pickle() -> None:
    for exc in (StatusError("x", status_code=500, body={"a": 1}),
                RateLimited("x", retry_after=2.0), StreamInterrupted("x", partial="p")):
        again = pickle.loads(pickle.dumps(exc))
        assert type(again) is type(exc) and again.__dict__ == exc.__dict__


def test_retyping_twice_is_a_no_op() -> None:
    exc = ServerError("x", status_code=502)
    to_openai(exc)
    cls = type(exc)
    to_openai(exc)
    assert type(exc) is cls


def test_nothing_changes_without_openai_imported() -> None:
    code = (
        "import sys; from routekit import Router, ServerError\n"
        "from routekit._compat.errors import to_openai\n"
        "e = ServerError('x', status_code=502); to_openai(e)\n"
        "print(type(e) is ServerError, 'openai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["True", "False"]
