"""openai result types that also carry their route. Imported only once a router answers
(it imports openai).

``RoutedChatCompletion`` is the type ``chat.completions.create`` returns. Other results — a
legacy ``Completion``, a ``ParsedChatCompletion[YourModel]`` from ``parse`` or the stream
helper — get ``routed``: a subclass of their own class (made once per class) with the same
read-only ``route`` property, so ``isinstance`` checks against openai's types keep holding.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from openai.types.chat import ChatCompletion
from pydantic import BaseModel, PrivateAttr

from .route import Route

__all__ = ["RoutedChatCompletion", "routed", "with_route"]

M = TypeVar("M", bound=BaseModel)


class RoutedChatCompletion(ChatCompletion):
    """A ``ChatCompletion`` (isinstance holds) with ``.route``; the route is not serialised."""

    _route: Route | None = PrivateAttr(default=None)

    @property
    def route(self) -> Route:
        assert self._route is not None
        return self._route


def with_route(completion: ChatCompletion, route: Route) -> RoutedChatCompletion:
    # A shallow copy into the subclass, the way pydantic's own __copy__ does it: the fields
    # were validated once already; model_construct would cost ~35 µs per answer here.
    out = RoutedChatCompletion.__new__(RoutedChatCompletion)
    _share(out, completion, {"_route": route})
    return out


def _share(out: BaseModel, src: BaseModel, private: dict[str, Any] | None) -> None:
    # openai's client sets ``_request_id`` (the upstream x-request-id) on every top-level
    # result, in the instance __dict__; answers routekit assembled or made in-process get
    # None, so code that reads it works on every route.
    src.__dict__.setdefault("_request_id", None)
    object.__setattr__(out, "__dict__", src.__dict__)
    object.__setattr__(out, "__pydantic_fields_set__", src.__pydantic_fields_set__)
    object.__setattr__(out, "__pydantic_extra__", src.__pydantic_extra__)
    object.__setattr__(out, "__pydantic_private__", private)


def _route_of(self: BaseModel) -> Route:
    private = self.__pydantic_private__ or {}
    route = private.get("_routekit_route")
    assert isinstance(route, Route)
    return route


_lock = threading.Lock()
_routed: dict[type, type] = {}


def _reduce_routed(self: BaseModel) -> tuple[Any, tuple[Any, Route]]:
    """Pickle a routed result as its openai class's instance and its route: the subclass is
    made at run time (pickle could not find it by name), ``routed`` makes it again."""
    base = type(self).__mro__[1]
    plain: Any = object.__new__(base)
    private = dict(self.__pydantic_private__ or {})
    route = private.pop("_routekit_route")
    _share(plain, self, private or None)
    return routed, (plain, route)


def routed(obj: M, route: Route) -> M:
    """``obj`` as an instance of a subclass of its own class that has ``.route``."""
    cls: type = type(obj)
    sub = _routed.get(cls)
    if sub is None:
        with _lock:
            sub = _routed.get(cls)
            if sub is None:
                sub = type(cls.__name__, (cls,), {
                    "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                    "__doc__": cls.__doc__, "route": property(_route_of),
                    "__reduce__": _reduce_routed,
                })
                _routed[cls] = sub
    out: Any = object.__new__(sub)
    private = dict(obj.__pydantic_private__ or {})
    private["_routekit_route"] = route
    _share(out, obj, private)
    return out  # type: ignore[no-any-return]
