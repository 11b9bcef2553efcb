"""Read python pickles of plain data without running code from them.

`pickle.load` calls whatever function a file names (a crafted `__reduce__` can run a shell
command). `load` resolves only the few globals that containers of numpy arrays need and
refuses every other one before it is imported or called. Dicts, lists, tuples, strings, bytes
and numbers are pickle opcodes, not globals, so they always load.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from lra.errors import UserError

# (module, name) pairs a pickle of dicts/lists of numpy arrays and scalars refers to: array
# reconstruction as written by numpy 1.x (numpy.core) and 2.x (numpy._core), protocols 2-5,
# and `_codecs.encode`, which protocol 2 uses for bytes written by python 3.
ALLOWED_GLOBALS = frozenset({
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class UnsafePickleError(UserError):
    """A pickle names a global outside `ALLOWED_GLOBALS`: it could run code when loaded."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{module}.{name}")


def load(path: str | Path, *, clean_copy: str, encoding: str = "ASCII") -> Any:
    """Unpickle `path`, allowing only plain data and numpy arrays (see `ALLOWED_GLOBALS`).

    clean_copy: where to get an untampered copy of the file, quoted when a file is refused.
    encoding: as for `pickle.load` ("bytes" keeps python 2 strings as bytes).
    Raises UnsafePickleError, without loading further, when the file names any other global.
    """
    with open(path, "rb") as handle:
        try:
            return _RestrictedUnpickler(handle, encoding=encoding).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(
                f"{path}: refused to unpickle this file because it asks to load {err}, which "
                "plain data never needs and which could run code on this machine; the file is "
                f"not a clean copy. Delete it and get a clean copy from {clean_copy}.") from None
