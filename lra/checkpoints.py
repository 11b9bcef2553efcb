"""Reading and writing checkpoints safely.

Reading: only tensors and plain Python values unless the user trusts the file
(`trust_checkpoint=true`). Writing: the checkpoint directory is checked up front, and every
save goes to a temporary file that replaces the target only once complete, so a full disk or
a permission problem ends the run with one paragraph and never leaves a truncated `.ckpt`.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lra.errors import CheckpointError


def _unsafe_globals(path: Path) -> list[str]:
    """Globals beyond torch's weights-only set that a torch.save file names (read, not run)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a torch.save zip file: nothing to name
        return []


def load_checkpoint(path: Path, *, trust: bool, purpose: str) -> dict:
    """Read a checkpoint on the CPU, allowing only tensors and plain Python values unless `trust`.

    purpose: how the error messages begin, e.g. "cannot resume".
    trust: load any object with weights_only=False, which runs whatever code the file holds.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        unsafe = [] if trust else _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(
                f"{purpose}: refused to load checkpoint {path}, because it holds {', '.join(unsafe)}: "
                "objects beyond the tensors and plain Python values this project's checkpoints "
                "contain, and loading them could run code from the file. Use a checkpoint written "
                "by this project, or, only if you trust whoever made this one, set "
                "trust_checkpoint=true to load it anyway (that runs any code it holds).") from None
        reason = "not a file written by torch.save" if isinstance(err, pickle.UnpicklingError) \
            else f"{type(err).__name__}: {err}"
        raise CheckpointError(
            f"{purpose}: checkpoint {path} is unreadable or corrupt ({reason}). Delete it and "
            "resume from an earlier checkpoint, or start a fresh run.") from None


def write_problem(folder: Path, err: OSError) -> str:
    """One sentence naming why files cannot be written in `folder`, and the fix."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk holding {folder} is full ({err.strerror}). Free space there, or write "
                "the run elsewhere with hydra.run.dir=<dir> (or paths.output_dir=<dir>)")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{folder} is not writable ({err.strerror}). Fix its permissions, or write the run "
                "elsewhere with hydra.run.dir=<dir> (or paths.output_dir=<dir>)")
    return (f"writing in {folder} failed ({type(err).__name__}: {err}). Check that folder, or "
            "write the run elsewhere with hydra.run.dir=<dir>")


def ensure_writable(folder: Path) -> None:
    """Create `folder` and write and delete a probe file there, before any training starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe."):
            pass
    except OSError as err:
        raise CheckpointError(f"cannot save checkpoints: {write_problem(folder, err)}.") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic and loud: the checkpoint is written to a
    temporary file in the same folder and renamed over the target once complete; any OSError
    (disk full, permissions) removes the partial file and raises a CheckpointError."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()  # serialised first: a write error is then a plain OSError
        torch.save(checkpoint, buffer)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would make it, not mkstemp's 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise CheckpointError(f"could not save checkpoint {path}: {write_problem(path.parent, err)}. "
                                  "No partial checkpoint was left behind.") from None
