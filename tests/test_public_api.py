"""The public surface: a pinned, sorted __all__, and a light `import routekit`."""

from __future__ import annotations

import subprocess
import sys

import routekit

EXPECTED = [
    "AllCandidatesFailed", "AsyncRouter", "AsyncStream", "Attempt", "AuthenticationFailed",
    "BadRequest", "Config", "ConfigError", "ConfigIssue", "ConnectionFailed",
    "ContextLengthExceeded", "HealthSnapshot", "MissingAPIKey", "ModelNotFound",
    "NoRouteError", "Overloaded", "ProviderBusy", "ProviderError", "ProviderHealth",
    "RateLimited", "RequestRejected", "RequestTimeout", "Route", "RouteKitError", "Router", "ServerError",
    "StatusError", "Stream", "StreamInterrupted", "UnsupportedRequest", "__version__",
    "load_config",
]

TESTING = ["Clock", "FakeCall", "FakeClock", "FakeProvider", "FakeReply", "SystemClock"]


def test_all_is_pinned_and_sorted() -> None:
    assert routekit.__all__ == EXPECTED
    assert routekit.__all__ == sorted(routekit.__all__)
    for name in routekit.__all__:
        assert hasattr(routekit, name), name
    from routekit import testing

    assert testing.__all__ == TESTING == sorted(TESTING)
    for name in TESTING:
        assert hasattr(testing, name), name


def test_import_does_not_load_heavy_packages() -> None:
    code = (
        "import sys; from routekit import Router; "
        "heavy = [m for m in ('openai', 'llama_cpp', 'httpx', 'httpx2', 'redis', 'tenacity', 'asyncio', 'pydantic', 'yaml', "
        "'prometheus_client', 'opentelemetry') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import routekit loaded: {out.stdout.strip()}"


def test_every_error_is_a_routekit_error() -> None:
    for name in EXPECTED:
        obj = getattr(routekit, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, routekit.RouteKitError), name


def test_create_accepts_every_argument_of_the_openai_client() -> None:
    import inspect

    from openai.resources.chat.completions import AsyncCompletions as OpenAIAsync
    from openai.resources.chat.completions import Completions as OpenAISync

    from routekit._pipeline.completions import AsyncCompletions, Completions

    for ours, theirs in ((Completions, OpenAISync), (AsyncCompletions, OpenAIAsync)):
        mine = inspect.signature(ours.create).parameters
        missing = set(inspect.signature(theirs.create).parameters) - set(mine)
        assert not missing, f"{ours.__name__}.create lacks {sorted(missing)}"
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY
                   for name, p in mine.items() if name != "self")


def test_create_passes_its_parameters_in_param_names_order() -> None:
    import ast
    import inspect

    from routekit._pipeline import completions
    from routekit._pipeline.params import PARAM_NAMES

    not_params = {"self", "model", "messages", "stream", "extra_headers", "extra_query",
                  "extra_body", "timeout"}
    for cls in (completions.Completions, completions.AsyncCompletions):
        sig = [n for n in inspect.signature(cls.create).parameters if n not in not_params]
        assert tuple(sig) == PARAM_NAMES, cls
    # ...and each implementation passes exactly that tuple to start() (through start_with).
    tree = ast.parse(inspect.getsource(completions))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "start_with"]
    assert len(calls) == 2
    for call in calls:
        values = call.args[-1]
        assert isinstance(values, ast.Tuple)
        assert tuple(getattr(e, "id", None) for e in values.elts) == PARAM_NAMES
