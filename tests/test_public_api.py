"""The public surface: a pinned, sorted __all__, and a light `import routekit`."""

from __future__ import annotations

import subprocess
import sys

import routekit

EXPECTED = [
    "AllCandidatesFailed", "AsyncRouter", "AsyncStream", "Attempt", "AuthenticationFailed",
    "BadRequest", "Config", "ConfigError", "ConfigIssue", "ConnectionFailed",
    "ContextLengthExceeded", "MissingAPIKey", "ModelNotFound", "NoRouteError", "ProviderBusy",
    "ProviderError", "RateLimited", "RequestTimeout", "Route", "RouteKitError", "Router",
    "ServerError", "StatusError", "Stream", "StreamInterrupted", "__version__", "load_config",
]


def test_all_is_pinned_and_sorted() -> None:
    assert routekit.__all__ == EXPECTED
    assert routekit.__all__ == sorted(routekit.__all__)
    for name in routekit.__all__:
        assert hasattr(routekit, name), name


def test_import_does_not_load_heavy_packages() -> None:
    code = (
        "import sys; from routekit import Router; "
        "heavy = [m for m in ('openai', 'llama_cpp', 'httpx', 'httpx2', 'redis') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import routekit loaded: {out.stdout.strip()}"


def test_every_error_is_a_routekit_error() -> None:
    for name in EXPECTED:
        obj = getattr(routekit, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, routekit.RouteKitError), name
