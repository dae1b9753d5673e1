"""The compatibility suite: real libraries built on the openai client, given a routekit router
where they take a client, against a loopback OpenAI-compatible server (``openai_server``).

Each library's module skips when the library is not installed (``pip install
'routekit[compat]'``; ``.ci/run`` installs it, per openai version, in ``.ci/compat-*.txt``
environments). Where a test compares, it runs the same code with a bare ``openai.OpenAI`` on
the same server: the router must answer as the client does, and add its route.

The router's entry model ``llama3.2`` lives on a closed port, so every answer comes through a
fallback (``echo``, the loopback server): the routes prove the pipeline ran.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from openai_server import OpenAIServer

from compat.support import router_config

from routekit import AsyncRouter, Router


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def router(server: OpenAIServer) -> Iterator[Router]:
    with Router(router_config(server.base_url), health_probes=False) as r:
        yield r


@pytest.fixture
def arouter(server: OpenAIServer) -> Iterator[AsyncRouter]:
    r = AsyncRouter(router_config(server.base_url), health_probes=False)
    yield r
    # Async clients belong to the loop that made them (each test's asyncio.run): closing
    # from a fresh loop closes what is left and refuses new requests.
    asyncio.run(r.aclose())


@pytest.fixture
def bare(server: OpenAIServer) -> Iterator[Any]:
    """A plain ``openai.OpenAI`` on the same server, for comparisons. Its HTTP client is
    given: openai < 1.55 cannot build its own on httpx 0.28 (``proxies`` was removed)."""
    import openai

    from routekit.providers.http.transport import http_lib

    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                       http_client=http_lib().Client(timeout=20)) as client:
        yield client


@pytest.fixture
def abare(server: OpenAIServer) -> Any:
    """``bare``'s async twin (not closed: its connections belong to the test's loop)."""
    import openai

    from routekit.providers.http.transport import http_lib

    return openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0,
                              http_client=http_lib().AsyncClient(timeout=20))
