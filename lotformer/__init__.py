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
from lotformer.attention.lot import LOTAttention, lot_attention, lot_attention_matrix

__all__ = [
    "AttentionBackend",
    "LOTAttention",
    "LRAEncoder",
    "MultiHeadAttention",
    "available_attentions",
    "build_attention",
    "lot_attention",
    "lot_attention_matrix",
    "register_attention",
]
