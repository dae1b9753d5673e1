"""instructor: a pydantic ``response_model`` through a router, in TOOLS, JSON and JSON_SCHEMA
modes, sync and async, whole and as partials — the README's snippet, and ``patch``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

# Older releases of the libraries (those that run on openai 1.40) call deprecated pydantic and
# asyncio APIs; that is theirs to fix, not what this suite checks.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

instructor = pytest.importorskip("instructor")

from compat.support import MODEL, answered_by_fallback, run_snippet  # noqa: E402
from pydantic import BaseModel  # noqa: E402

MSG = [{"role": "user", "content": "Tell me about Paris."}]
MODES = [instructor.Mode.TOOLS, instructor.Mode.JSON, instructor.Mode.JSON_SCHEMA]


class City(BaseModel):
    name: str
    population: int


EXPECTED = City(name="name", population=7)  # what the loopback server builds from the schema


def test_readme_snippet(router: Any) -> None:
    ns = run_snippet("instructor", router=router)
    assert ns["city"].model_dump() == EXPECTED.model_dump()
    assert answered_by_fallback(ns["completion"].route)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_response_model_and_partials(router: Any, bare: Any, mode: Any) -> None:
    for client_under_test in (bare, router):
        client = instructor.Instructor(
            client=client_under_test, mode=mode,
            create=instructor.patch(create=client_under_test.chat.completions.create,
                                    mode=mode))
        city, completion = client.chat.completions.create_with_completion(
            model=MODEL, response_model=City, messages=MSG)
        assert city.model_dump() == EXPECTED.model_dump()
        partials = list(client.chat.completions.create_partial(
            model=MODEL, response_model=City, messages=MSG))
        assert partials and partials[-1].model_dump() == EXPECTED.model_dump()
    assert answered_by_fallback(completion.route)
    assert city._raw_response.route is completion.route  # instructor keeps the completion


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_async_response_model_and_partials(arouter: Any, mode: Any) -> None:
    client = instructor.AsyncInstructor(
        client=arouter, mode=mode,
        create=instructor.patch(create=arouter.chat.completions.create, mode=mode))

    async def go() -> tuple[Any, list[Any]]:
        city = await client.chat.completions.create(model=MODEL, response_model=City,
                                                    messages=MSG)
        partials = [p async for p in client.chat.completions.create_partial(
            model=MODEL, response_model=City, messages=MSG)]
        await arouter.aclose()
        return city, partials

    city, partials = asyncio.run(go())
    assert city.model_dump() == EXPECTED.model_dump()
    assert partials[-1].model_dump() == EXPECTED.model_dump()
    assert answered_by_fallback(city._raw_response.route)


def test_patch_the_router_itself(router: Any) -> None:
    patched = instructor.patch(router, mode=instructor.Mode.TOOLS)
    city = patched.chat.completions.create(model=MODEL, response_model=City, messages=MSG)
    assert city.model_dump() == EXPECTED.model_dump()
