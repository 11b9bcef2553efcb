"""LOTFormer: doubly-stochastic linear attention via low-rank optimal transport.

`from lotformer import LOTAttention, build_attention, LRAEncoder`.
"""

from lotformer.attention import (
    AttentionBackend,
    MultiHeadAttention,
    available_attentions,
    build_attention,
    register_attention,
)
from lotformer.encoder import LRAEncoder

__all__ = [
    "AttentionBackend",
    "LRAEncoder",
    "MultiHeadAttention",
    "available_attentions",
    "build_attention",
    "register_attention",
]
