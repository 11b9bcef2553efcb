"""Attention backends behind one contract (see base.py) and one registry.

Every module in this package other than the infrastructure below is a backend file; importing
the package imports them all, so each backend registers itself by name.
"""

import pkgutil
from importlib import import_module

from lotformer.attention.base import AttentionBackend
from lotformer.attention.multihead import MultiHeadAttention
from lotformer.attention.registry import (
    UnknownAttentionError,
    attention_class,
    available_attentions,
    build_attention,
    register_attention,
)

_INFRASTRUCTURE = {"base", "multihead", "registry"}

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _INFRASTRUCTURE and not _info.name.startswith("_"):
        import_module(f"{__name__}.{_info.name}")

__all__ = [
    "AttentionBackend",
    "MultiHeadAttention",
    "UnknownAttentionError",
    "attention_class",
    "available_attentions",
    "build_attention",
    "register_attention",
]
