"""LlamaIndex's ``OpenAILike`` and ``OpenAI`` LLMs given a router as ``openai_client``: chat,
complete (legacy text completions for a non-chat ``OpenAILike``), stream_chat, async, and
structured_predict — the README's snippet, and each beside a bare ``openai.OpenAI``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

# Older releases of the libraries (those that run on openai 1.40) call deprecated pydantic and
# asyncio APIs; that is theirs to fix, not what this suite checks.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

openai_like = pytest.importorskip("llama_index.llms.openai_like")
llms_openai = pytest.importorskip("llama_index.llms.openai")

from compat.support import MODEL, answered_by_fallback, run_snippet  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from openai_server import TEXT_CONTINUATION  # noqa: E402
from pydantic import BaseModel  # noqa: E402

HI = [ChatMessage(role="user", content="hi")]


class City(BaseModel):
    name: str
    population: int


def like(client: Any, aclient: Any, **kw: Any) -> Any:
    return openai_like.OpenAILike(model=MODEL, api_key="unused", openai_client=client,
                                  async_openai_client=aclient, **kw)


def test_readme_snippet(router: Any, arouter: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_snippet("LlamaIndex", router=router, arouter=arouter)
    assert capsys.readouterr().out.strip() == "You said: Say hello. echo"
    assert answered_by_fallback(ns["reply"].raw.route)


def test_chat_model_answers_as_the_openai_client_does(router: Any, arouter: Any, bare: Any,
                                                       abare: Any) -> None:
    for client, aclient in ((bare, abare), (router, arouter)):
        llm = like(client, aclient, is_chat_model=True, is_function_calling_model=True)
        assert llm.chat(HI).message.content == "You said: hi"
        assert llm.complete("Once").text == "You said: Once"
        assert "".join(r.delta or "" for r in llm.stream_chat(HI)) == "You said: hi"
    reply = llm.chat(HI)
    assert answered_by_fallback(reply.raw.route)  # LlamaIndex keeps the completion as .raw


def test_non_chat_model_uses_routed_text_completions(router: Any, arouter: Any,
                                                     bare: Any, abare: Any) -> None:
    for client, aclient in ((bare, abare), (router, arouter)):
        llm = like(client, aclient)  # is_chat_model=False: the /completions endpoint
        assert llm.complete("Once").text == TEXT_CONTINUATION
        assert llm.chat(HI).message.content == TEXT_CONTINUATION
    reply = llm.complete("Once")
    assert reply.raw.route.endpoint == "completions" and answered_by_fallback(reply.raw.route)


def test_async_chat_and_complete(router: Any, arouter: Any) -> None:
    llm = like(router, arouter, is_chat_model=True)

    async def go() -> tuple[str, str, str]:
        chat = await llm.achat(HI)
        text = await llm.acomplete("Once")
        streamed = "".join([r.delta or "" async for r in await llm.astream_chat(HI)])
        await arouter.aclose()
        return str(chat.message.content), text.text, streamed

    assert asyncio.run(go()) == ("You said: hi", "You said: Once", "You said: hi")


def test_structured_predict(router: Any, arouter: Any, bare: Any, abare: Any) -> None:
    prompt = PromptTemplate("Tell me about {city}.")
    for client, aclient in ((bare, abare), (router, arouter)):
        for llm in (like(client, aclient, is_chat_model=True, is_function_calling_model=True),
                    llms_openai.OpenAI(model="gpt-4o-mini", api_key="unused",
                                       openai_client=client, async_openai_client=aclient)):
            city = llm.structured_predict(City, prompt, city="Paris")
            assert city == City(name="name", population=7)


def test_openai_llm(router: Any, arouter: Any) -> None:
    llm = llms_openai.OpenAI(model="gpt-4o-mini", api_key="unused", openai_client=router,
                             async_openai_client=arouter)
    reply = llm.chat(HI)
    assert reply.message.content == "You said: hi" and answered_by_fallback(reply.raw.route)
    assert llm.complete("Once").text == "You said: Once"
    assert "".join(r.delta or "" for r in llm.stream_chat(HI)) == "You said: hi"
