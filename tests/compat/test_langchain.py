"""langchain-openai's ``ChatOpenAI`` given a router as its clients: invoke, ainvoke, stream,
astream, bind_tools, with_structured_output (json_schema and function calling), sync and
async — the README's snippet, and each beside a bare ``openai.OpenAI``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

# Older releases of the libraries (those that run on openai 1.40) call deprecated pydantic and
# asyncio APIs; that is theirs to fix, not what this suite checks.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

langchain_openai = pytest.importorskip("langchain_openai")

from compat.support import MODEL, run_snippet  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class City(BaseModel):
    name: str
    population: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def chat(router: Any, arouter: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model=MODEL, api_key="unused", client=router.chat.completions, root_client=router,
        async_client=arouter.chat.completions, root_async_client=arouter)


def test_readme_snippet(router: Any, arouter: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_snippet("LangChain", router=router, arouter=arouter)
    assert capsys.readouterr().out.strip() == "You said: Say hello."
    assert ns["llm"].root_client is router


def test_invoke_and_stream_answer_as_the_openai_client_does(router: Any, arouter: Any,
                                                           bare: Any, abare: Any) -> None:
    plain, llm = chat(bare, abare), chat(router, arouter)
    for model in (plain, llm):
        assert model.invoke("hi").content == "You said: hi"
        assert "".join(str(c.content) for c in model.stream("yo")) == "You said: yo"
    message = llm.invoke("hi")
    assert message.response_metadata["model_name"] == "echo"  # the model that answered


def test_async_invoke_and_stream(router: Any, arouter: Any) -> None:
    llm = chat(router, arouter)

    async def go() -> tuple[str, str]:
        answer = (await llm.ainvoke("hey")).content
        streamed = "".join([str(c.content) async for c in llm.astream("yo")])
        await arouter.aclose()
        return str(answer), streamed

    assert asyncio.run(go()) == ("You said: hey", "You said: yo")


def test_bind_tools(router: Any, arouter: Any) -> None:
    message = chat(router, arouter).bind_tools([get_weather]).invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather",
                                                                     {"city": "city"})]


# langchain-openai dumps openai's ParsedChatCompletion, whose generic ``parsed`` field warns;
# a bare openai client warns the same (checked below).
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
# langchain-openai 0.2 (openai 1.40) does not stream json_schema output and says so.
@pytest.mark.filterwarnings("ignore:Streaming with Pydantic response_format:UserWarning")
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(router: Any, arouter: Any, bare: Any, abare: Any,
                                method: str) -> None:
    expected = City(name="name", population=7)
    for client, aclient in ((bare, abare), (router, arouter)):
        llm = chat(client, aclient).with_structured_output(City, method=method)
        assert llm.invoke("Paris") == expected
        assert list(llm.stream("Paris"))[-1] == expected

    async def go() -> Any:
        out = await llm.ainvoke("Paris")
        await arouter.aclose()
        return out

    assert asyncio.run(go()) == expected
