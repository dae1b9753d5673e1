"""The OpenAI Agents SDK's ``OpenAIChatCompletionsModel`` given an ``AsyncRouter``:
``Runner.run``, ``Runner.run_streamed``, a function tool, ``output_type`` — the README's
snippet, and each beside a bare ``openai.AsyncOpenAI``. The SDK passes ``omit`` for every
unset setting; the router must take it as "not given"."""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from compat.support import MODEL, run_snippet  # noqa: E402
from pydantic import BaseModel  # noqa: E402

agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI


class City(BaseModel):
    name: str
    population: int


@agents.function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture(autouse=True)
def placeholder_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """openai-agents 0.0.x builds its default OpenAI provider (which needs a key) in every
    ``RunConfig``, even when each agent brings its own model; the key is never sent."""
    if not importlib.metadata.version("openai-agents").startswith("0.0."):
        return
    monkeypatch.setenv("OPENAI_API_KEY", "unused")


def model(client: Any) -> Any:
    return agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client)


def test_readme_snippet(arouter: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run_snippet("OpenAI Agents SDK", arouter=arouter)
    assert capsys.readouterr().out.strip() == "You said: Say hello."


def test_run_tool_and_output_type_as_the_openai_client_does(arouter: Any, abare: Any) -> None:
    async def go(client: Any) -> tuple[str, str, Any]:
        plain = await agents.Runner.run(agents.Agent(name="a", model=model(client)), "hi")
        tooled = await agents.Runner.run(
            agents.Agent(name="b", model=model(client), tools=[get_weather]), "Weather?")
        typed = await agents.Runner.run(
            agents.Agent(name="c", model=model(client), output_type=City), "Paris")
        return plain.final_output, tooled.final_output, typed.final_output

    expected = ("You said: hi", "The tool said: sunny in city", City(name="name", population=7))
    assert asyncio.run(go(abare)) == expected
    assert asyncio.run(go(arouter)) == expected


def test_run_streamed_with_a_tool(arouter: Any, server: Any) -> None:
    async def go() -> tuple[Any, list[str]]:
        agent = agents.Agent(name="b", model=model(arouter), tools=[get_weather])
        result = agents.Runner.run_streamed(agent, "Weather?")
        events = [event.type async for event in result.stream_events()]
        await arouter.aclose()
        return result.final_output, events

    before = len(server.received)
    output, events = asyncio.run(go())
    assert output == "The tool said: sunny in city"
    assert "raw_response_event" in events and "run_item_stream_event" in events
    # Both turns (tool call, then answer) reached the server as the fallback model: routed.
    sent = server.received[before:]
    assert [body["model"] for body in sent] == ["echo", "echo"]
    assert all(body["stream"] for body in sent)
