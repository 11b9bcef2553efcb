"""Registry of attention backends: one name per backend, one place to build them."""

from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from torch import nn

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type[nn.Module]] = {}


class UnknownAttentionError(ValueError):
    """Raised for a backend name that is not registered."""


def register_attention(name: str) -> Callable[[T], T]:
    """Class decorator: make a backend available as `build_attention(name, ...)`."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention backend {name!r} is registered twice "
                             f"({_REGISTRY[name].__module__} and {cls.__module__})")
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_attentions() -> list[str]:
    """Sorted names of all registered backends."""
    return sorted(_REGISTRY)


def attention_class(name: str) -> type[nn.Module]:
    """The backend class registered as `name`; a clear error lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAttentionError(
            f"unknown attention backend {name!r}; valid names: {', '.join(available_attentions())}"
        ) from None


def build_attention(name: str, **kwargs) -> nn.Module:
    """Instantiate backend `name` with keyword arguments.

    Every backend takes `num_heads`, `head_dim` and `max_len`; the rest are the backend's own
    typed keyword-only options. A misspelled option fails with the list of valid ones.
    """
    cls = attention_class(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"attention backend {name!r} got unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid)}"
        )
    return cls(**kwargs)
