"""Nyström attention with segment-mean landmarks and an iterative pseudo-inverse.

Xiong, Zeng, Chakraborty, Tan, Fung, Li and Singh, "Nyströmformer: A Nyström-Based Algorithm
for Approximating Self-Attention", AAAI 2021.

With m landmarks q~, k~ (means of consecutive segments of the queries and keys),

    softmax(q k^T / sqrt(D)) v  ~  F1 pinv(A) (F3 v),
    F1 = softmax(q k~^T / sqrt(D))  (N x m),   A = softmax(q~ k~^T / sqrt(D))  (m x m),
    F3 = softmax(q~ k^T / sqrt(D))  (m x N),

O(N m D) time per head. pinv(A) is the paper's iterative Moore-Penrose approximation
(`pinv_iters` steps of Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4, started from
Z = A^T / (max column sum * max row sum), computed per batch element and head).

Padding: the landmarks are means over valid tokens only. Valid token number t (0-based among
the n_valid valid tokens of a sequence) goes to segment floor(t * m / max(n_valid, m)), so
every segment is non-empty when n_valid >= m; when n_valid < m each valid token is its own
landmark and the surplus landmarks are disabled (zero weight in F1 and F3, identity block in
A). Padded keys are masked out of F3. When `num_landmarks >= N` the exact softmax is computed
instead, so `num_landmarks = N` reproduces softmax attention.

`conv_kernel` > 0 adds the depthwise convolution skip over the (padding-zeroed) values, one
filter per head. Kernel 33 is lucidrains' nystrom-attention default; the official Nyströmformer
LRA config uses 35, and the Skyformer-harness table runs used no convolution. It is off by
default, so the backend is a pure approximation of softmax attention and the landmarks = N
identity is testable.

Harness compatibility (`compat`). "clean" (default) is the method above. "harness" replays
the LRA harness (mlpen/Nystromformer LRA/code, reused by the Skyformer harness): queries and
keys are zeroed at padded positions and the landmarks are means of N / m consecutive
positions, padded ones included (so zeros are averaged into the last segments; segments are
`floor(t m / N)` over all positions, which is the harness's reshape when m divides N); F1 and
A are not masked, F3 masks padded keys; and the pseudo-inverse starts from
Z = A^T / (max column sum over the whole batch and all heads) instead of one scale per
batch element and head. The landmarks >= N exact path is the same in both modes.

The whole computation runs in float32 (float64 for float64 inputs) with autocast disabled
(the policy of every backend, base.py), because the pseudo-inverse iteration diverges in half precision; the output is cast back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lotformer.attention.base import AttentionBackend, dense_map, identity_values, zero_padded
from lotformer.attention.registry import register_attention


def segment_means(
    x: torch.Tensor,  # (B, H, N, D)
    key_padding_mask: torch.Tensor | None,  # (B, N) bool, True = token
    num_segments: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # (B, H, m, D), (B, m) bool
    """Means of x over `num_segments` consecutive runs of valid tokens, and which are non-empty."""
    B, _, N, _ = x.shape
    valid = (torch.ones(B, N, dtype=torch.bool, device=x.device)
             if key_padding_mask is None else key_padding_mask)  # (B, N)
    rank = valid.long().cumsum(dim=-1) - 1  # (B, N): index among valid tokens
    n_valid = valid.sum(dim=-1, keepdim=True)  # (B, 1)
    segment = torch.div(rank * num_segments, n_valid.clamp_min(num_segments),
                        rounding_mode="floor")  # (B, N)
    segment = segment.clamp(0, num_segments - 1)
    ids = torch.arange(num_segments, device=x.device)  # (m,)
    assign = ((segment[:, None, :] == ids[None, :, None]) & valid[:, None, :]).to(x.dtype)  # (B, m, N)
    counts = assign.sum(dim=-1)  # (B, m)
    weights = assign / counts.clamp_min(1.0)[..., None]  # (B, m, N)
    means = torch.einsum("bmn,bhnd->bhmd", weights, x)  # (B, H, m, D)
    return means, counts > 0


def iterative_pinv(a: torch.Tensor, n_iters: int, *, global_init: bool = False) -> torch.Tensor:
    """Approximate Moore-Penrose inverse of square matrices a: (..., m, m) (Nyströmformer).

    Starts from Z = A^T / (max column sum * max row sum) per matrix, or with `global_init`
    (the LRA harness) from Z = A^T / (max column sum over all matrices of the batch).
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)  # (m, m)
    if global_init:
        z = a.transpose(-1, -2) / a.sum(dim=-2).amax()  # (..., m, m)
    else:
        max_col_sum = a.abs().sum(dim=-2).amax(dim=-1)[..., None, None]  # (..., 1, 1)
        max_row_sum = a.abs().sum(dim=-1).amax(dim=-1)[..., None, None]  # (..., 1, 1)
        z = a.transpose(-1, -2) / (max_col_sum * max_row_sum)  # (..., m, m)
    for _ in range(n_iters):
        az = a @ z  # (..., m, m)
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def _masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where `allowed` (broadcastable bool) is True."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


_COMPATS = ("clean", "harness")


@register_attention("nystrom")
class NystromAttention(AttentionBackend):
    """Nyströmformer attention F1 pinv(A) F3 v with segment-mean landmarks."""

    title = "Nyströmformer"
    published_names = ("Nyströmformer",)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None,
                 num_landmarks: int = 128, pinv_iters: int = 6, conv_kernel: int = 0,
                 compat: str = "clean") -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_len=max_len)
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
        if pinv_iters < 1:
            raise ValueError(f"pinv_iters must be >= 1, got {pinv_iters}")
        if conv_kernel < 0 or (conv_kernel and conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be 0 (off) or an odd size, got {conv_kernel}")
        if compat not in _COMPATS:
            raise ValueError(f"compat must be one of {', '.join(_COMPATS)}, got {compat!r}")
        self.compat = compat
        self.num_landmarks = num_landmarks
        self.pinv_iters = pinv_iters
        self.conv_kernel = conv_kernel
        self.conv = None
        if conv_kernel:
            self.conv = nn.Conv2d(num_heads, num_heads, kernel_size=(conv_kernel, 1),
                                  padding=(conv_kernel // 2, 0), groups=num_heads, bias=False)

    def forward(self, q, k, v, key_padding_mask=None):
        v = zero_padded(v, key_padding_mask)  # (B, H, N, Dv)
        if self.num_landmarks >= q.shape[-2]:
            out = self._exact(q, k, v, key_padding_mask)
        elif self.compat == "harness":
            out = self._harness(q, k, v, key_padding_mask)
        else:
            out = self._nystrom(q, k, v, key_padding_mask)
        if self.conv is not None:
            out = out + F.conv2d(  # depthwise over N, one filter per head
                v, self.conv.weight.to(v.dtype), padding=self.conv.padding, groups=self.num_heads)
        return out

    @staticmethod
    def _exact(q, k, v, key_padding_mask):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        if key_padding_mask is None:
            return torch.softmax(scores, dim=-1) @ v  # (B, H, N, Dv)
        return _masked_softmax(scores, key_padding_mask[:, None, None, :]) @ v

    def _nystrom(self, q, k, v, key_padding_mask):
        m = self.num_landmarks
        scale = q.shape[-1] ** -0.25
        q, k = q * scale, k * scale  # (B, H, N, D)
        q_land, land_valid = segment_means(q, key_padding_mask, m)  # (B, H, m, D), (B, m)
        k_land, _ = segment_means(k, key_padding_mask, m)  # (B, H, m, D)
        land_cols = land_valid[:, None, None, :]  # (B, 1, 1, m)
        land_rows = land_valid[:, None, :, None]  # (B, 1, m, 1)

        f1 = _masked_softmax(q @ k_land.transpose(-1, -2), land_cols)  # (B, H, N, m)
        a = _masked_softmax(q_land @ k_land.transpose(-1, -2), land_cols)  # (B, H, m, m)
        eye = torch.eye(m, dtype=a.dtype, device=a.device)  # (m, m)
        a = torch.where(land_rows, a, eye)  # disabled landmarks: identity rows
        if key_padding_mask is None:
            f3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)  # (B, H, m, N)
        else:
            f3 = _masked_softmax(q_land @ k.transpose(-1, -2), key_padding_mask[:, None, None, :])
        f3 = f3 * land_rows.to(f3.dtype)  # (B, H, m, N)
        a_pinv = iterative_pinv(a, self.pinv_iters)  # (B, H, m, m)
        return (f1 @ a_pinv) @ (f3 @ v)  # (B, H, N, Dv)

    def _harness(self, q, k, v, key_padding_mask):
        """The LRA harness's Nyström path: padded tokens averaged into the landmarks."""
        scale = q.shape[-1] ** -0.25
        q = zero_padded(q, key_padding_mask) * scale  # (B, H, N, D)
        k = zero_padded(k, key_padding_mask) * scale  # (B, H, N, D)
        q_land, _ = segment_means(q, None, self.num_landmarks)  # (B, H, m, D)
        k_land, _ = segment_means(k, None, self.num_landmarks)  # (B, H, m, D)
        f1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)  # (B, H, N, m)
        a = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)  # (B, H, m, m)
        f3 = q_land @ k.transpose(-1, -2)  # (B, H, m, N)
        if key_padding_mask is not None:
            f3 = f3.masked_fill(~key_padding_mask[:, None, None, :], torch.finfo(f3.dtype).min)
        f3 = torch.softmax(f3, dim=-1)
        a_pinv = iterative_pinv(a, self.pinv_iters, global_init=True)  # (B, H, m, m)
        return (f1 @ a_pinv) @ (f3 @ v)  # (B, H, N, Dv)

    @dense_map
    def attention_matrix(self, q, k, key_padding_mask=None):
        """F1 pinv(A) F3 (+ the convolution's banded map when conv_kernel > 0), in every mode:
        the factors applied to v = I by the forward pass."""
        return self.forward(q, k, identity_values(q), key_padding_mask)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_landmarks={self.num_landmarks}, "
                f"pinv_iters={self.pinv_iters}, conv_kernel={self.conv_kernel}, "
                f"compat={self.compat!r}")
