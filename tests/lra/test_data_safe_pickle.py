"""The restricted unpickler: plain data and numpy arrays load, anything else is refused unrun."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from lra.data import safe_pickle
from tests.lra.data_fixtures import RunsCommand

CLEAN = "https://example.org/clean.tar.gz"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_and_numpy_arrays_load(tmp_path, protocol):
    value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3],
             b"floats": np.linspace(0, 1, 5), b"scalar": np.int64(7), b"name": b"batch", "text": ("a", 2.5)}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = safe_pickle.load(path, clean_copy=CLEAN, encoding="bytes")
    assert loaded.keys() == value.keys()
    for key in (b"data", b"floats"):
        np.testing.assert_array_equal(loaded[key], value[key])
        assert loaded[key].dtype == value[key].dtype
    assert loaded[b"labels"] == [1, 2, 3] and loaded[b"scalar"] == 7 and loaded["text"] == ("a", 2.5)


def test_numpy_1_pickles_load(tmp_path):
    """The CIFAR-10 release was written by numpy 1.x, whose arrays name numpy.core."""
    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in blob  # protocol 2 names globals as text lines
    path = tmp_path / "batch"
    path.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    loaded = safe_pickle.load(path, clean_copy=CLEAN, encoding="bytes")
    assert loaded[b"data"].tolist() == list(range(6))


@pytest.mark.parametrize("payload,global_name", [
    (lambda marker: RunsCommand(f"touch {marker}"), f"{os.system.__module__}.system"),
    (lambda marker: np.array([RunsCommand(f"touch {marker}")], dtype=object), f"{os.system.__module__}.system"),
    (lambda marker: OpensFile(marker), f"{open.__module__}.open"),
], ids=["os.system", "inside-object-array", "open"])
def test_code_in_a_pickle_is_refused_and_not_run(tmp_path, payload, global_name):
    marker = tmp_path / "marker"
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": payload(marker)}, protocol=2))
    with pytest.raises(safe_pickle.UnsafePickleError) as err:
        safe_pickle.load(path, clean_copy=CLEAN, encoding="bytes")
    message = str(err.value)
    assert str(path) in message and f"load {global_name}," in message and CLEAN in message
    assert "\n" not in message
    assert not marker.exists()
    with open(path, "rb") as handle:  # the control: plain pickle runs the payload
        pickle.load(handle, encoding="bytes")
    assert marker.exists()


class OpensFile:
    """Unpickling this object opens (creates) a file for writing."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")
