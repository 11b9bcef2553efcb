"""The attention contract shared by every backend.

A backend receives projected heads and returns the mixed values:

    forward(q, k, v, key_padding_mask=None) -> out      # all (B, H, N, D)

`key_padding_mask` is (B, N) bool with True = real token. Outputs at valid positions must
not depend on anything at padded positions; padded keys receive no weight. Projections and
the head split/merge live once, in `MultiHeadAttention` (lotformer/attention/multihead.py).

Optional dense view, for diagnostics on small N (N <= DENSE_MAP_MAX_LEN):

    attention_matrix(q, k, key_padding_mask=None) -> A      # (B, H, N, N)

the map the backend applies in eval mode, so that `A @ v == forward(q, k, v, mask)` at valid
query rows. Rows at padded query positions are zero. Columns at padded keys are zero, except
in modes whose output does depend on padded values (LOT's compat="reference"). A backend whose
output is not A v for a fixed A (a mode that redraws random state on every call) raises
NotImplementedError.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

DENSE_MAP_MAX_LEN = 4096  # largest N for which `attention_matrix` forms the (N, N) map


class AttentionBackend(nn.Module):
    """Base class of all backends: stores the common sizes, defines the contract.

    A backend also owns what the rest of the suite knows about it, so that tables, benchmarks
    and tests read it from the registry instead of keeping lists of their own:
    ``title`` (display name in tables and plots), ``published_names`` (the names of its rows in
    the published LRA tables), :meth:`check_options` (settings that cannot work for a task,
    checked before any data is read) and :meth:`bench_fields` (extra columns a benchmark
    records for it).
    """

    backend_name: ClassVar[str] = ""  # set by @register_attention
    title: ClassVar[str] = ""  # display name, e.g. "Nyströmformer"
    published_names: ClassVar[tuple[str, ...]] = ()  # e.g. ("Transformer", "Self-attention")

    @classmethod
    def check_options(cls, options: Mapping[str, Any], *, max_len: int) -> None:
        """Raise ValueError (naming the option and the fix) when ``options`` cannot work for
        sequences of ``max_len`` tokens. The default accepts everything."""

    def bench_fields(self) -> dict[str, Any]:
        """Extra fields a benchmark records for this module (e.g. LOT's rank and iterations)."""
        return {}

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None) -> None:
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(f"num_heads and head_dim must be >= 1, got {num_heads} and {head_dim}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_len = max_len

    def forward(
        self,
        q: torch.Tensor,  # (B, H, N, D)
        k: torch.Tensor,  # (B, H, N, D)
        v: torch.Tensor,  # (B, H, N, D)
        key_padding_mask: torch.Tensor | None = None,  # (B, N) bool, True = token
    ) -> torch.Tensor:  # (B, H, N, D)
        raise NotImplementedError

    def attention_matrix(
        self,
        q: torch.Tensor,  # (B, H, N, D)
        k: torch.Tensor,  # (B, H, N, D)
        key_padding_mask: torch.Tensor | None = None,  # (B, N) bool, True = token
    ) -> torch.Tensor:  # (B, H, N, N)
        """The dense map A this backend applies (see the module docstring); N must be at most
        DENSE_MAP_MAX_LEN. Backends implement it under the :func:`dense_map` decorator."""
        raise NotImplementedError(
            f"attention backend {self.backend_name or type(self).__name__!r} does not provide "
            "a dense attention map (attention_matrix)")

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, max_len={self.max_len}"


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              key_padding_mask: torch.Tensor | None) -> None:
    """Raise a clear error when q, k, v and the mask disagree in shape."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "attention expects q, k, v of shape (B, H, N, D) with equal B, H, N "
            f"(and equal D for q and k); got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        B, _, N, _ = q.shape
        if key_padding_mask.shape != (B, N) or key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, N) = ({B}, {N}) with "
                f"True = token; got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )


def zero_padded(x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of a (B, H, N, D) tensor."""
    if key_padding_mask is None:
        return x
    return x * key_padding_mask[:, None, :, None].to(x.dtype)


Forward = Callable[..., torch.Tensor]


def computes_in_float32(forward: Forward) -> Forward:
    """Decorator for a backend's `forward`: checks shapes, then runs it on q, k, v upcast to
    at least float32 with autocast off, and casts the output back to the input dtype.

    For backends whose math (normalisations, iterative solves) is unsafe in half precision.
    """

    @functools.wraps(forward)
    def wrapped(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        dtype = q.dtype
        compute = torch.promote_types(dtype, torch.float32)
        with torch.autocast(device_type=q.device.type, enabled=False):
            out = forward(self, q.to(compute), k.to(compute), v.to(compute), key_padding_mask)
        return out.to(dtype)

    return wrapped


MapMethod = Callable[..., torch.Tensor]


def dense_map(*, float32: bool) -> Callable[[MapMethod], MapMethod]:
    """Decorator for a backend's `attention_matrix(q, k, key_padding_mask)`.

    Checks the shapes and N <= DENSE_MAP_MAX_LEN (a ValueError naming the limit), runs the
    method (with `float32`, as :func:`computes_in_float32` does for `forward`: inputs upcast to
    at least float32, autocast off, the map cast back to the input dtype) and zeroes the rows
    at padded query positions.
    """

    def decorate(method: MapMethod) -> MapMethod:
        @functools.wraps(method)
        def wrapped(self, q, k, key_padding_mask=None):
            check_qkv(q, k, k, key_padding_mask)
            N = q.shape[-2]
            if N > DENSE_MAP_MAX_LEN:
                raise ValueError(
                    f"attention_matrix forms the dense (N, N) map and is limited to N <= "
                    f"DENSE_MAP_MAX_LEN = {DENSE_MAP_MAX_LEN}; got N = {N}. Use a shorter "
                    "sequence (or a slice of it) for diagnostics.")
            if float32:
                dtype = q.dtype
                compute = torch.promote_types(dtype, torch.float32)
                with torch.autocast(device_type=q.device.type, enabled=False):
                    attn = method(self, q.to(compute), k.to(compute), key_padding_mask).to(dtype)
            else:
                attn = method(self, q, k, key_padding_mask)  # (B, H, N, N)
            if key_padding_mask is None:
                return attn
            return attn * key_padding_mask[:, None, :, None].to(attn.dtype)

        return wrapped

    return decorate


def identity_values(q: torch.Tensor) -> torch.Tensor:  # (B, H, N, N)
    """The identity as values, (B, H, N, N) in q's dtype: a computation that is linear in v,
    out = A v, returns A itself for these values (out = A I)."""
    B, H, N, _ = q.shape
    return torch.eye(N, dtype=q.dtype, device=q.device).expand(B, H, N, N)


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of `scores` where `allowed` (broadcastable bool) is True."""
    return torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)
