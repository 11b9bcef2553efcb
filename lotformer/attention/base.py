"""The attention contract shared by every backend.

A backend receives projected heads and returns the mixed values:

    forward(q, k, v, key_padding_mask=None) -> out      # all (B, H, N, D)

`key_padding_mask` is (B, N) bool with True = real token. Outputs at valid positions must
not depend on anything at padded positions; padded keys receive no weight. Projections and
the head split/merge live once, in `MultiHeadAttention` (lotformer/attention/multihead.py).

What every backend gets from this base class without writing it (``forward`` is wrapped when
the subclass is defined, see :meth:`AttentionBackend.__init_subclass__`):

* one validation of its inputs, :func:`check_qkv` (shapes, floating dtypes, the mask);
* one numeric policy, :func:`in_compute_dtype`: the math runs on q, k, v in float32 (float64
  for float64 input) with autocast disabled, and the output is cast back to the input dtype.
  (The LRA setup keeps attention math in float32 under mixed precision; normalisations and
  iterative solves are unsafe in half precision anyway.)

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

from lotformer.sinkhorn import compute_dtype

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

    title: ClassVar[str] = ""  # display name, e.g. "Nyströmformer"
    published_names: ClassVar[tuple[str, ...]] = ()  # e.g. ("Transformer", "Self-attention")

    @classmethod
    def check_options(cls, options: Mapping[str, Any], *, max_len: int) -> None:
        """Raise ValueError (naming the option and the fix) when ``options`` cannot work for
        sequences of ``max_len`` tokens. The default accepts everything."""

    def bench_fields(self) -> dict[str, Any]:
        """Extra fields a benchmark records for this module (e.g. LOT's rank and iterations)."""
        return {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give the subclass's own ``forward`` the shared input check and float32 policy."""
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "_checked_float32", False):
            cls.forward = _checked_float32(forward)

    def __init__(self, *, num_heads: int, head_dim: int, max_len: int | None = None) -> None:
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(f"num_heads and head_dim must be >= 1, got {num_heads} and {head_dim}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_len = max_len

    def forward(  # subclasses implement it; it receives checked q, k, v in float32 / float64
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
            f"attention backend {type(self).__name__!r} does not provide a dense attention map "
            "(attention_matrix)")

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, max_len={self.max_len}"


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None,
              key_padding_mask: torch.Tensor | None = None) -> None:
    """The one check of attention inputs: q, k (B, H, N, D), v (B, H, N, Dv) or None, all
    floating point, and the (B, N) bool mask. Raises ValueError saying what is wrong."""
    tensors = {"q": q, "k": k} if v is None else {"q": q, "k": k, "v": v}
    bad = {name: t.dtype for name, t in tensors.items() if not t.is_floating_point()}
    if bad:
        raise ValueError(
            "attention needs floating-point q, k, v (float32, float64, bfloat16 or float16); got "
            + ", ".join(f"{name} {dtype}" for name, dtype in bad.items())
            + ". Convert them first, e.g. q.float(); token ids go through an embedding first.")
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both have shape (B, H, N, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if v is not None and (v.dim() != 4 or v.shape[:3] != q.shape[:3]):
        raise ValueError(f"v must have shape (B, H, N, Dv) with the (B, H, N) of q "
                         f"{tuple(q.shape[:3])}; got {tuple(v.shape)}")
    if key_padding_mask is not None:
        B, _, N, _ = q.shape
        if key_padding_mask.shape != (B, N) or key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, N) = ({B}, {N}) with "
                f"True = token; got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )


def option_at_most_max_len(options: Mapping[str, Any], key: str, default: int, max_len: int,
                           message: str) -> None:
    """For :meth:`AttentionBackend.check_options`: raise ValueError(``message`` formatted with
    ``value`` and ``max_len``) when option ``key`` (``default`` when unset) exceeds max_len."""
    value = options.get(key, default)
    if value > max_len:
        raise ValueError(message.format(value=value, max_len=max_len))


def require_max_len(max_len: int | None, backend: str, purpose: str) -> None:
    """For a constructor whose tables are sized by max_len: ValueError when it is missing."""
    if max_len is None or max_len < 1:
        raise ValueError(f"{backend} needs max_len >= 1 (the longest sequence) to size its "
                         f"{purpose}; got max_len={max_len}")


def zero_padded(x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of a (B, H, N, D) tensor."""
    if key_padding_mask is None:
        return x
    return x * key_padding_mask[:, None, :, None].to(x.dtype)


def in_compute_dtype(fn: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor | None, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The numeric policy of every attention: ``fn(q, k, v, *args, **kwargs)`` on q, k, v (v may
    be None) in :func:`lotformer.sinkhorn.compute_dtype` of q's dtype (float32, or float64 for
    float64 input) with autocast disabled. Returns what ``fn`` returns, not cast back."""
    dt = compute_dtype(q.dtype)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return fn(q.to(dt), k.to(dt), None if v is None else v.to(dt), *args, **kwargs)


Forward = Callable[..., torch.Tensor]


def _checked_float32(forward: Forward) -> Forward:
    """Wrap a backend's ``forward``: :func:`check_qkv`, then :func:`in_compute_dtype`, then the
    output cast back to the input dtype. Applied to every backend by the base class."""

    @functools.wraps(forward)
    def wrapped(self, q, k, v, key_padding_mask=None):
        check_qkv(q, k, v, key_padding_mask)
        out = in_compute_dtype(functools.partial(forward, self), q, k, v, key_padding_mask)
        return out.to(q.dtype)

    wrapped._checked_float32 = True
    return wrapped


MapMethod = Callable[..., torch.Tensor]


def dense_map(method: MapMethod) -> MapMethod:
    """Decorator for a backend's `attention_matrix(q, k, key_padding_mask)`.

    Checks the shapes and N <= DENSE_MAP_MAX_LEN (a ValueError naming the limit), runs the
    method under the same numeric policy as `forward` (:func:`in_compute_dtype`; the map is cast
    back to the input dtype) and zeroes the rows at padded query positions.
    """

    @functools.wraps(method)
    def wrapped(self, q, k, key_padding_mask=None):
        check_qkv(q, k, None, key_padding_mask)
        N = q.shape[-2]
        if N > DENSE_MAP_MAX_LEN:
            raise ValueError(
                f"attention_matrix forms the dense (N, N) map and is limited to N <= "
                f"DENSE_MAP_MAX_LEN = {DENSE_MAP_MAX_LEN}; got N = {N}. Use a shorter "
                "sequence (or a slice of it) for diagnostics.")
        attn = in_compute_dtype(lambda qq, kk, _v, mask: method(self, qq, kk, mask), q, k, None,
                                key_padding_mask).to(q.dtype)  # (B, H, N, N)
        if key_padding_mask is None:
            return attn
        return attn * key_padding_mask[:, None, :, None].to(attn.dtype)

    return wrapped


def identity_values(q: torch.Tensor) -> torch.Tensor:  # (B, H, N, N)
    """The identity as values, (B, H, N, N) in q's dtype: a computation that is linear in v,
    out = A v, returns A itself for these values (out = A I)."""
    B, H, N, _ = q.shape
    return torch.eye(N, dtype=q.dtype, device=q.device).expand(B, H, N, N)


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of `scores` where `allowed` (broadcastable bool) is True."""
    return torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)
