"""openai result types that also carry their route. Imported only once a router answers
(it imports openai)."""

from __future__ import annotations

from openai.types.chat import ChatCompletion
from pydantic import PrivateAttr

from ._route import Route

__all__ = ["RoutedChatCompletion", "with_route"]


class RoutedChatCompletion(ChatCompletion):
    """A ``ChatCompletion`` (isinstance holds) with ``.route``; the route is not serialised."""

    _route: Route | None = PrivateAttr(default=None)

    @property
    def route(self) -> Route:
        assert self._route is not None
        return self._route


def with_route(completion: ChatCompletion, route: Route) -> ChatCompletion:
    out = RoutedChatCompletion.model_construct(
        _fields_set=completion.model_fields_set, **completion.__dict__
    )
    if completion.__pydantic_extra__:
        out.__pydantic_extra__ = dict(completion.__pydantic_extra__)
    out._route = route
    return out
