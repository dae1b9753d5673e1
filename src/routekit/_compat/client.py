"""The openai client attributes a router answers to, for libraries that take a client.

Owns ``ClientSurface``, mixed into ``Router`` / ``AsyncRouter``: ``base_url`` (``BASE_URL``,
a reserved ``.invalid`` host: a library that builds its own HTTP client from it fails loudly
rather than bypass the routes), ``api_key`` (a placeholder, never a provider's key),
``max_retries`` and ``timeout`` (the effective retries per candidate and request budget),
``default_headers`` / ``default_query``, ``with_options(...)`` / ``copy(...)`` (a view of
the same router with other defaults: see ``_pipeline.options``), ``models.list()`` (the
config's models) and ``beta.chat.completions`` (the same ``parse`` / ``stream`` as
``chat.completions``, where openai 1.x kept them).

A view shares its router's providers, breakers and limits, and closing either closes both
(as with the openai client's ``with_options``). Options with no meaning for a router
(``api_key``, ``base_url``, ``http_client``, ``organization``, ...) are refused rather than
ignored: route elsewhere by building another router.
"""

from __future__ import annotations

import copy as _copy
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .._pipeline.options import ClientOptions
from .http import BASE_URL

if TYPE_CHECKING:
    from .._pipeline.router_state import RouterState

__all__ = ["PLACEHOLDER_API_KEY", "AsyncClientSurface", "ClientSurface", "ModelList"]

# What ``router.api_key`` answers: libraries read it (tracing exporters, headers of their own
# requests); a provider's real key never leaves its provider.
PLACEHOLDER_API_KEY = "routekit-no-key"


class ModelList:
    """``models.list()``: openai ``Model`` objects, one per configured model (``owned_by`` is
    its provider). Iterable (sync and async) like openai's page, with ``data``."""

    def __init__(self, data: list[Any]) -> None:
        self.data = data
        self.object = "list"

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __aiter__(self) -> Any:
        async def gen() -> Any:
            for item in self.data:
                yield item

        return gen()

    def __len__(self) -> int:
        return len(self.data)

    # openai's page surface: one page holds every model.
    def has_next_page(self) -> bool:
        return False

    def next_page_info(self) -> None:
        return None

    def iter_pages(self) -> Iterator[ModelList]:
        yield self

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return {"object": self.object,
                "data": [m.model_dump(**kwargs) for m in self.data]}

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, "data": [m.to_dict() for m in self.data]}

    def to_json(self, *, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self) -> str:
        return f"ModelList(data={self.data!r})"


class _AsyncModelList:
    """What ``AsyncRouter.models.list()`` returns, as openai's ``AsyncPaginator``: ``await``
    it for the ``ModelList``, or ``async for`` over its models directly."""

    def __init__(self, state: RouterState) -> None:
        self._state = state

    def __await__(self) -> Any:
        async def page() -> ModelList:
            return _model_list(self._state)

        return page().__await__()

    def __aiter__(self) -> Any:
        return _model_list(self._state).__aiter__()


def _model_list(state: RouterState) -> ModelList:
    from openai.types import Model

    return ModelList([Model(id=name, created=0, object="model", owned_by=m.provider)
                      for name, m in state.config.models.items()])


class _Models:
    def __init__(self, state: RouterState) -> None:
        self._state = state

    def list(self) -> ModelList:
        return _model_list(self._state)

    def retrieve(self, model: str) -> Any:
        for item in _model_list(self._state):
            if item.id == model:
                return item
        from .._exceptions import NoRouteError
        from .errors import to_openai

        error = NoRouteError(f"no model {model!r} in this router's config")
        to_openai(error, path=f"/models/{model}")  # openai's NotFoundError too, as create()'s
        raise error


class _AsyncModels(_Models):
    def list(self) -> _AsyncModelList:  # type: ignore[override]
        return _AsyncModelList(self._state)

    async def retrieve(self, model: str) -> Any:
        return _Models.retrieve(self, model)


class _BetaChat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class _Beta:
    def __init__(self, completions: Any) -> None:
        self.chat = _BetaChat(completions)


_UNSUPPORTED = ("api_key", "organization", "project", "base_url", "websocket_base_url",
                "http_client", "webhook_secret", "set_default_headers", "set_default_query",
                "_extra_kwargs", "admin_api_key", "workload_identity")


class ClientSurface:
    """openai client attributes for ``Router`` / ``AsyncRouter`` (see the module docstring)."""

    _state: RouterState
    _options: ClientOptions | None = None
    chat: Any
    completions: Any

    @property
    def base_url(self) -> Any:
        from ..providers.http.transport import http_lib

        return http_lib().URL(BASE_URL + "/")

    @property
    def api_key(self) -> str:
        return PLACEHOLDER_API_KEY

    @property
    def organization(self) -> None:
        return None

    @property
    def project(self) -> None:
        return None

    def is_closed(self) -> bool:
        """Whether ``close()`` was called (on this router or a view of it)."""
        return bool(self._state.closed)

    @property
    def max_retries(self) -> int:
        """Retries per candidate (the last candidate may get more: ``routing.retry``)."""
        options = self._options
        if options is not None and options.max_retries is not None:
            return options.max_retries
        return self._state.retry.max_attempts - 1

    @property
    def timeout(self) -> Any:
        """A request's default budget in seconds (or the ``httpx.Timeout`` a view was given)."""
        options = self._options
        if options is not None and options.timeout is not None:
            return options.timeout
        return self._state.default_budget

    @property
    def default_headers(self) -> dict[str, str]:
        options = self._options
        return dict(options.headers or {}) if options is not None else {}

    @property
    def default_query(self) -> dict[str, Any]:
        options = self._options
        return dict(options.query or {}) if options is not None else {}

    _models_type: type[_Models] = _Models

    @property
    def models(self) -> _Models:
        return self._models_type(self._state)

    @property
    def beta(self) -> _Beta:
        return _Beta(self.chat.completions)

    def with_options(self, *, timeout: Any = None, max_retries: Any = None,
                     default_headers: Mapping[str, str] | None = None,
                     default_query: Mapping[str, Any] | None = None,
                     **unsupported: Any) -> Any:
        """A view of this router with other defaults (openai's ``with_options``): ``timeout``
        (a request's budget), ``max_retries`` (per candidate), ``default_headers`` and
        ``default_query`` (sent with every request to HTTP providers)."""
        from .._exceptions import BadRequest
        from .errors import to_openai

        try:
            if unsupported:
                names = ", ".join(sorted(unsupported))
                hint = (" (a router routes by its config: build another Router to use other "
                        "providers or keys)" if set(unsupported) & set(_UNSUPPORTED) else "")
                raise BadRequest(f"with_options()/copy() got options a router cannot honour: "
                                 f"{names}{hint}", status_code=400)
            base = self._options or ClientOptions()
            options = base.merged(timeout=timeout, max_retries=max_retries,
                                  headers=default_headers, query=default_query)
        except BadRequest as exc:  # openai's BadRequestError too, as create()'s errors are
            to_openai(exc)
            raise
        view = _copy.copy(self)
        view._options = options
        view.chat = type(self.chat)(self.chat.completions.with_client_options(options))
        view.completions = self.completions.with_client_options(options)
        return view

    def copy(self, *, timeout: Any = None, max_retries: Any = None,
             default_headers: Mapping[str, str] | None = None,
             default_query: Mapping[str, Any] | None = None, **unsupported: Any) -> Any:
        """The same as ``with_options`` (openai's alias)."""
        return self.with_options(timeout=timeout, max_retries=max_retries,
                                 default_headers=default_headers, default_query=default_query,
                                 **unsupported)


class AsyncClientSurface(ClientSurface):
    """``ClientSurface`` for ``AsyncRouter``: ``await router.models.list()``."""

    _models_type = _AsyncModels
