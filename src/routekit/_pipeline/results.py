"""openai result types that also carry their route. Imported only once a router answers
(it imports openai)."""

from __future__ import annotations

from openai.types.chat import ChatCompletion
from pydantic import PrivateAttr

from .route import Route

__all__ = ["RoutedChatCompletion", "with_route"]


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
    object.__setattr__(out, "__dict__", completion.__dict__)
    object.__setattr__(out, "__pydantic_fields_set__", completion.__pydantic_fields_set__)
    object.__setattr__(out, "__pydantic_extra__", completion.__pydantic_extra__)
    object.__setattr__(out, "__pydantic_private__", {"_route": route})
    return out
