"""Errors a user can act on. `train.py` prints them as one paragraph, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Base class: the message says what is wrong and what to do next."""


class ConfigError(UserError, ValueError):
    """Settings that cannot work together (e.g. LOT rank larger than the sequence)."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointError(UserError):
    """A checkpoint to resume from is missing, unreadable or corrupt."""
