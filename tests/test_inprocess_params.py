"""Request parameters in-process, both kinds: each has its effect or is refused, never
dropped. Found by trying every openai parameter against both kinds: a model default cap
beat the caller's, a streamed echo lost its prompt, ``suffix`` corrupted the prompt, OpenAI
parameters in ``extra_body`` vanished, seed -1 sampled at random, legacy ``logprobs=0`` and
a ``tool_choice`` with nothing to call were ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("llama_cpp")

from inproc_helpers import LONG, request  # noqa: E402

from routekit import Router  # noqa: E402
from routekit._exceptions import ProviderError  # noqa: E402
from routekit.providers._base import ChatRequest, RequestParams  # noqa: E402
from routekit.providers.llama_cpp.params import _seed  # noqa: E402
from routekit.testing import FakeProvider  # noqa: E402

KINDS = pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
WARM = {"temperature": 1.5, "top_k": 40, "top_p": 1.0, "min_p": 0.0}


def _text_request(prompt: str = "The sea is", **params: Any) -> ChatRequest:
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 4)
    return ChatRequest("m", "m", [{"role": "user", "content": prompt}], params, prompt=prompt)


def test_seeds_fold_to_32_bits_without_landing_on_random() -> None:
    assert _seed(7) == 7 and _seed(0) == 0  # seeds that fit are kept
    assert _seed(2**32 - 1) != 2**32 - 1  # llama.cpp's "pick a random seed"
    assert _seed(-1) != 2**32 - 1 and 0 <= _seed(-1) < 2**32
    assert _seed(2**32 + 7) != 7 and _seed(-1) != _seed(-2)


@KINDS
def test_seed_minus_one_is_a_seed_like_any_other(make_tiny: Callable[..., Any],
                                                 kind: str) -> None:
    provider = make_tiny(kind=kind)

    def sample(seed: int) -> str | None:
        native = getattr(provider, "_natives", {}).get("m")
        if native is not None:  # the same cache state each time (as test_native does)
            native[1].invalidate_cache()
        reply = provider.complete(request(max_tokens=16, seed=seed, **WARM), LONG)
        return reply.choices[0].message.content

    for seed in (-1, 2**32 - 1):
        assert sample(seed) == sample(seed) == sample(seed), seed


@KINDS
def test_openai_parameters_in_extra_body_count_as_parameters(make_tiny: Callable[..., Any],
                                                             kind: str) -> None:
    provider = make_tiny(kind=kind)
    reply = provider.complete(request(max_tokens=8, extra_body={"max_tokens": 2}), LONG)
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    with pytest.raises(ProviderError, match="n=2"):
        provider.complete(request(extra_body={"n": 2}), LONG)


@KINDS
def test_refused_rather_than_ignored(make_tiny: Callable[..., Any], kind: str) -> None:
    provider = make_tiny(kind=kind)
    with pytest.raises(ProviderError, match="suffix"):
        provider.complete(_text_request(suffix=" and that is all."), LONG)
    with pytest.raises(ProviderError, match="logprobs"):
        provider.complete(_text_request(logprobs=0), LONG)
    with pytest.raises(ProviderError, match="tool_choice 'required' without tools"):
        provider.complete(request(tool_choice="required"), LONG)
    provider.complete(request(tool_choice="none"), LONG)  # nothing asked that is not done


@KINDS
def test_a_streamed_echo_starts_with_the_prompt(make_tiny: Callable[..., Any],
                                               kind: str) -> None:
    provider = make_tiny(kind=kind)
    whole = provider.complete(_text_request(echo=True), LONG).choices[0].text
    chunks = list(provider.stream(_text_request(echo=True), LONG))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert whole.startswith("The sea is") and streamed == whole


def test_grammar_in_extra_body_constrains_both_kinds(gemma_pair: tuple[Any, Any]) -> None:
    for provider in gemma_pair:
        reply = provider.complete(request(max_tokens=4, extra_body={
            "grammar": 'root ::= "yes" | "no"'}), LONG)
        assert reply.choices[0].message.content in ("yes", "no"), provider.kind


def test_the_callers_cap_replaces_a_models_default_cap_under_either_name(
        tmp_path: Path) -> None:
    fake = FakeProvider("p")
    cfg = {"providers": {"p": {"kind": "ollama"}},
           "models": {"m": {"provider": "p", "defaults": {"max_completion_tokens": 12,
                                                           "temperature": 0.3}}}}
    with Router(cfg, providers={"p": fake}, health_probes=False) as router:
        router.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                       max_tokens=3)
        sent = fake.calls[-1].request.params
        assert sent.get("max_tokens") == 3 and "max_completion_tokens" not in sent
        assert sent.get("temperature") == 0.3  # the other defaults stay
        router.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert fake.calls[-1].request.params.get("max_completion_tokens") == 12


def test_requests_a_model_cannot_do_never_open_its_breaker(tiny_path: Path) -> None:
    cfg = {"providers": {"local": {"kind": "llama_cpp"}},
           "models": {"m": {"provider": "local", "path": str(tiny_path), "chat_format": "chatml",
                            "n_ctx": 256, "n_threads": 1}},
           "routing": {"breaker": {"failure_threshold": 2},
                       "retry": {"last_candidate_attempts": 1}}}
    from routekit import AllCandidatesFailed

    with Router(cfg, health_probes=False) as router:
        for _ in range(4):
            with pytest.raises(AllCandidatesFailed, match="UnsupportedRequest"):
                router.chat.completions.create(model="m", n=2, max_tokens=2, messages=[
                    {"role": "user", "content": "x"}])
        assert router.health(probe=False)["local"].breaker.state == "closed"
        reply = router.chat.completions.create(model="m", max_tokens=2, messages=[
            {"role": "user", "content": "x"}])
        assert reply.route.answered_by.model == "m"


@KINDS
@pytest.mark.parametrize("stream", [False, True])
def test_text_that_is_not_unicode_is_the_requests_fault(make_tiny: Callable[..., Any],
                                                        kind: str, stream: bool) -> None:
    # A lone surrogate (a bad decode upstream) was a plain model failure: six such
    # requests opened the in-process model's breaker for everyone.
    from routekit import BadRequest

    provider = make_tiny(kind=kind)
    bad = ChatRequest(model="m", model_id="m",
                      messages=[{"role": "user", "content": "a\ud800b"}],
                      params=RequestParams(max_tokens=4))
    with pytest.raises(BadRequest, match="not valid Unicode") as info:
        if stream:
            list(provider.stream(bad, LONG))
        else:
            provider.complete(bad, LONG)
    assert info.value.breaker_scope is None and info.value.status_code == 400
