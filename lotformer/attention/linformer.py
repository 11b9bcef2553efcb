"""Linformer attention: learned projections of keys and values along the sequence.

Wang, Li, Khabsa, Fang and Ma, "Linformer: Self-Attention with Linear Complexity", 2020
(arXiv 2006.04768).

Keys and values are compressed along the sequence axis to `proj_dim` rows with learned
matrices E, F of shape (proj_dim, max_len):

    out = softmax(q (E k)^T / sqrt(D)) (F v),      O(N proj_dim D) time per head.

E and F are shared by all heads of the layer (the paper's headwise sharing); keys and values
use separate matrices. An input of length N <= max_len uses the first N columns of E and F.
Padded positions of k and v are zeroed before the projection, so valid outputs do not depend
on padded content (the projected rows are mixtures, so padding cannot be masked after it).

Initialisation (`init`): "normal" draws entries from N(0, 1 / (max_len + proj_dim)), the
variance of the Xavier init with gain 1/sqrt(2) used by the authors' fairseq code (which
draws it uniformly); it keeps projected keys and values at about the scale of the inputs.
"identity" sets E = F = I and requires proj_dim == max_len, which makes the layer exactly
softmax attention for unpadded inputs of length max_len (a check, and a starting point that
begins as full attention).

Harness compatibility (`compat`). "clean" (default) is the method above: separate learned E
and F. "harness" replays the LRA harness (mlpen/Nystromformer LRA/code/attention_linformer.py,
reused by the Skyformer harness): one (proj_dim, max_len) projection per head, shared by keys
and values, drawn from N(0, 0.02^2). The harness creates it as `nn.Parameter(...)` and then
moves it with `.to(device)`, which returns a plain tensor, so the projection was never
registered with the optimiser: the published rows used a FIXED random projection. Here it is
the buffer `harness_proj` (saved in the state dict, never trained). The harness also shares
that one tensor across all layers of the model (a class attribute); here each layer draws
its own.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lotformer.attention.base import (AttentionBackend, dense_map, identity_values,
                                      option_at_most_max_len, zero_padded)
from lotformer.attention.registry import register_attention

_INITS = ("normal", "identity")
_COMPATS = ("clean", "harness")
HARNESS_INIT_STD = 0.02


@register_attention("linformer")
class LinformerAttention(AttentionBackend):
    """softmax(q (E k)^T / sqrt(D)) (F v) with learned (proj_dim, max_len) projections E, F."""

    title = "Linformer"
    published_names = ("Linformer",)

    @classmethod
    def check_options(cls, options, *, max_len):
        option_at_most_max_len(
            options, "proj_dim", 128, max_len, "Linformer projects the sequence to "
            "attn.proj_dim={value} rows, more than its task.max_len={max_len} positions; use "
            "attn.proj_dim <= {max_len}.")

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 proj_dim: int = 128, init: str = "normal", compat: str = "clean") -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if max_len is None:
            raise ValueError(
                "linformer needs max_len (the longest sequence it will see) to size its "
                f"(proj_dim, max_len) = ({proj_dim}, max_len) projections; pass max_len=<the "
                "task's maximum sequence length>, e.g. build_attention('linformer', ..., max_len=1024)"
            )
        if max_len < 1 or proj_dim < 1:
            raise ValueError(f"max_len and proj_dim must be >= 1, got {max_len} and {proj_dim}")
        if init not in _INITS:
            raise ValueError(f"unknown linformer init {init!r}; valid: {', '.join(_INITS)}")
        if init == "identity" and proj_dim != max_len:
            raise ValueError(f"init='identity' needs proj_dim == max_len, got proj_dim={proj_dim} "
                             f"and max_len={max_len}; set proj_dim={max_len} or use init='normal'")
        if compat not in _COMPATS:
            raise ValueError(f"compat must be one of {', '.join(_COMPATS)}, got {compat!r}")
        if compat == "harness" and init != "normal":
            raise ValueError(f"compat='harness' draws its own fixed projection; init={init!r} "
                             "applies only to compat='clean'")
        self.proj_dim = proj_dim
        self.init = init
        self.compat = compat
        if compat == "harness":
            self.register_buffer(  # (H, k, L): one fixed projection per head, for K and V
                "harness_proj", HARNESS_INIT_STD * torch.randn(num_heads, proj_dim, max_len))
            return
        self.key_proj = nn.Parameter(torch.empty(proj_dim, max_len))  # E: (k, L)
        self.value_proj = nn.Parameter(torch.empty(proj_dim, max_len))  # F: (k, L)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.compat == "harness":
            return
        for weight in (self.key_proj, self.value_proj):
            if self.init == "identity":
                weight.copy_(torch.eye(self.proj_dim, self.max_len))
            else:
                nn.init.normal_(weight, std=1.0 / math.sqrt(self.max_len + self.proj_dim))

    def forward(self, q, k, v, key_padding_mask=None):
        N = q.shape[-2]
        if N > self.max_len:
            raise ValueError(
                f"linformer got a sequence of length {N} but was built with max_len={self.max_len} "
                f"(its projections have {self.max_len} columns); rebuild it with max_len >= {N} "
                "or truncate the inputs"
            )
        if self.compat == "harness":
            e = f = self.harness_proj[:, :, :N].to(k.dtype)  # (H, k, N)
        else:
            H = q.shape[1]
            e = self.key_proj[:, :N].to(k.dtype).expand(H, -1, -1)  # (H, k, N), shared by heads
            f = self.value_proj[:, :N].to(v.dtype).expand(H, -1, -1)  # (H, k, N)
        k_proj = torch.einsum("hpn,bhnd->bhpd", e, zero_padded(k, key_padding_mask))  # (B, H, k, D)
        v_proj = torch.einsum("hpn,bhnd->bhpd", f, zero_padded(v, key_padding_mask))  # (B, H, k, Dv)
        scores = q @ k_proj.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, k)
        return torch.softmax(scores, dim=-1) @ v_proj  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """softmax(q (E k)^T / sqrt(D)) F over the original positions, F with its padded columns
        zeroed: an (N, N) map of rank <= proj_dim, read off the forward pass with v = I."""
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, proj_dim={self.proj_dim}, init={self.init!r}, "
                f"compat={self.compat!r}")
