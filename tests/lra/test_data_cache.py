"""The on-disk cache: hits, invalidation, atomic writes, two processes racing for one entry,
damaged entries rebuilt, a full disk, empty splits refused."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lra.data import listops, load_task
from lra.data import cache
from lra.data.base import CacheError, MalformedDataError, SplitArrays, TaskData
from lra.data.cache import cached
from tests.lra.data_fixtures import RunsCommand

SAMPLE = "lra_release/listops-1000"


@pytest.fixture
def listops_copy(samples_dir, tmp_path):
    target = tmp_path / "data" / "listops-1000"
    shutil.copytree(samples_dir / SAMPLE, target)
    return tmp_path / "data"


def count_reads(monkeypatch) -> list[int]:
    calls: list[int] = []
    real_read = listops.read

    def counting_read(located, *, max_len):
        calls.append(max_len)
        return real_read(located, max_len=max_len)

    monkeypatch.setattr(listops, "read", counting_read)
    return calls


def test_second_load_is_a_cache_hit_with_memory_mapped_arrays(listops_copy, tmp_path, monkeypatch):
    calls = count_reads(monkeypatch)
    first = load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    second = load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    assert calls == [300]
    assert isinstance(second.splits["train"].ids, np.memmap)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(first.splits[split].ids, second.splits[split].ids)
        np.testing.assert_array_equal(first.splits[split].labels, second.splits[split].labels)
    assert (second.source, second.location) == (first.source, first.location)
    load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=200)
    assert calls == [300, 200]  # another max_len is another entry


def test_an_object_array_in_the_cache_is_refused_and_not_run(listops_copy, tmp_path):
    load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    (labels,) = (tmp_path / "cache").glob("listops-*/train.labels.npy")
    marker = tmp_path / "marker"
    np.save(labels, np.array([RunsCommand(f"touch {marker}")], dtype=object), allow_pickle=True)
    # never unpickled: the entry fails its check (and np.load has allow_pickle=False) and is
    # rebuilt from the source files
    data = load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    assert not marker.exists()
    assert data.splits["train"].labels.dtype == np.int64


def test_changed_input_invalidates_the_entry(listops_copy, tmp_path, monkeypatch):
    calls = count_reads(monkeypatch)
    load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    test_file = listops_copy / "listops-1000" / "basic_test.tsv"
    test_file.write_text(test_file.read_text() + "[MAX 1 2 ]\t2\n")
    data = load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    assert len(calls) == 2 and data.sizes()["test"] == 21


def test_atomic_write_leaves_only_complete_entries(listops_copy, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert len(entries) == 2 and entries[0].startswith("listops-") and entries[1].endswith(".lock")
    entry = cache_dir / entries[0]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["sizes"] == {"train": 60, "val": 20, "test": 20}
    # A build that fails leaves neither an entry nor a temporary folder behind.

    def failing_build():
        raise RuntimeError("reader crashed")

    with pytest.raises(RuntimeError):
        cached(cache_dir, "listops", {"other": 1}, failing_build)
    assert sorted(p.name for p in cache_dir.iterdir() if p.is_dir()) == [entries[0]]
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lra.data import listops, load_task
    data_dir, cache_dir, log = sys.argv[1:4]
    with open(log, "a") as handle:
        handle.write("ready\\n")
    real_read = listops.read
    def slow_read(located, *, max_len):
        with open(log, "a") as handle:
            handle.write("build\\n")
        deadline = time.time() + 60  # hold the lock until the other process runs too
        while Path(log).read_text().count("ready") < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        return real_read(located, max_len=max_len)
    listops.read = slow_read
    data = load_task("listops", data_dir=data_dir, cache_dir=cache_dir, max_len=300)
    print(data.sizes(), int(data.splits["train"].ids.sum()))
""")


def test_two_processes_build_one_entry(listops_copy, tmp_path):
    cache_dir, log = tmp_path / "cache", tmp_path / "builds.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(listops_copy), str(cache_dir), str(log)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
              for _ in range(2)]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert log.read_text().count("ready") == 2
    assert log.read_text().count("build") == 1  # the second process waited and hit the cache
    assert outputs[0][0] == outputs[1][0] and "'train': 60" in outputs[0][0]
    entries = [p for p in cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- integrity
def _truncate(entry):
    path = entry / "train.ids.npy"
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(entry):  # same size, bytes rewritten in the middle of the ids
    path = entry / "train.ids.npy"
    raw = bytearray(path.read_bytes())
    raw[4000:4512] = os.urandom(512)
    path.write_bytes(bytes(raw))


def _garbage_header(entry):
    path = entry / "val.ids.npy"
    path.write_bytes(b"\x00" * path.stat().st_size)


def _change_labels(entry):  # still valid labels in 0..9, same file size: only the checksum tells
    labels = np.load(entry / "train.labels.npy")
    np.save(entry / "train.labels.npy", (labels + 1) % 10)


def _truncate_meta(entry):
    meta = entry / "meta.json"
    meta.write_text(meta.read_text()[:40])


def _unreadable_meta(entry):
    (entry / "meta.json").write_bytes(b"\xff\xfe garbage")


def _delete_ids(entry):
    (entry / "test.ids.npy").unlink()


def _delete_meta(entry):
    (entry / "meta.json").unlink()


@pytest.mark.parametrize("damage", [_truncate, _garbage, _garbage_header, _change_labels,
                                    _truncate_meta, _unreadable_meta, _delete_ids, _delete_meta])
def test_damaged_entry_is_rebuilt_with_a_warning(listops_copy, tmp_path, monkeypatch, caplog, damage):
    calls = count_reads(monkeypatch)
    cache_dir = tmp_path / "cache"
    first = load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    first = {s: (np.array(a.ids), np.array(a.labels)) for s, a in first.splits.items()}
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="lra.data.cache"):
        again = load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    assert calls == [300, 300]  # read again, not trusted
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "rebuilding" in warnings[0]
    for split, (ids, labels) in first.items():
        np.testing.assert_array_equal(again.splits[split].ids, ids)
        np.testing.assert_array_equal(again.splits[split].labels, labels)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # the damaged copy is gone
    load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    assert calls == [300, 300]  # the rebuilt entry is a hit


def test_large_files_are_checksummed_over_samples_labels_in_full(listops_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "FULL_CHECKSUM_BYTES", 4096)
    monkeypatch.setattr(cache, "SAMPLE_BLOCKS", 4)
    monkeypatch.setattr(cache, "SAMPLE_BLOCK_BYTES", 512)
    cache_dir = tmp_path / "cache"
    load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    arrays = json.loads((entry / "meta.json").read_text())["arrays"]
    assert arrays["train.ids.npy"]["checksum_of"] == "4 blocks of 512 bytes"  # 36 KB > 4096
    assert arrays["train.ids.npy"]["bytes"] == (entry / "train.ids.npy").stat().st_size
    assert arrays["train.ids.npy"]["shape"] == [60, 300] and arrays["train.ids.npy"]["dtype"] == "int16"
    assert arrays["train.labels.npy"]["checksum_of"] == "all"
    calls = count_reads(monkeypatch)
    _change_labels(entry)
    load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    assert calls == [300]


def _fill_disk_after(monkeypatch, exc: OSError) -> None:
    """np.save writes part of the file, then the disk is full."""
    def full_disk_save(path, array, allow_pickle=True):
        with open(path, "wb") as handle:
            handle.write(b"\x93NUMPY partial")
        raise exc

    monkeypatch.setattr(cache.np, "save", full_disk_save)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError("8192 requested and 6080 written")])  # numpy's short write
def test_full_disk_is_one_paragraph_and_leaves_nothing(listops_copy, tmp_path, monkeypatch, exc):
    cache_dir = tmp_path / "cache"
    _fill_disk_after(monkeypatch, exc)
    with pytest.raises(CacheError) as err:
        load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    message = str(err.value)
    assert "\n" not in message and message.startswith("no space left on device while writing cache entry")
    assert str(cache_dir / "listops-") in message and f"Free space under {cache_dir}" in message
    assert "LRA_DATA_DIR" in message and "cache_dir" in message
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")] == []  # no half entry
    monkeypatch.undo()
    data = load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    assert data.sizes() == {"train": 60, "val": 20, "test": 20}


def test_damaged_entry_that_cannot_be_removed_names_it(listops_copy, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    _truncate(entry)

    def denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache.os, "replace", denied)
    with pytest.raises(CacheError) as err:
        load_task("listops", data_dir=listops_copy, cache_dir=cache_dir, max_len=300)
    message = str(err.value)
    assert f"cache entry {entry} is damaged" in message and "train.ids.npy has 1000 bytes" in message
    assert f"rm -r {entry}" in message and "\n" not in message


def test_an_empty_split_is_never_cached(tmp_path):
    full = SplitArrays(ids=np.ones((3, 4), np.int16), labels=np.zeros(3, np.int64))
    empty = SplitArrays(ids=np.ones((0, 4), np.int16), labels=np.zeros(0, np.int64))
    data = TaskData(splits={"train": full, "val": empty, "test": full}, source="sample",
                    location="/data/somewhere", notes=["skipped 5 unreadable images"])
    with pytest.raises(MalformedDataError) as err:
        cached(tmp_path / "cache", "pathfinder", {"x": 1}, lambda: data)
    message = str(err.value)
    assert "split val is empty" in message and "/data/somewhere" in message
    assert "nothing was cached" in message and "skipped 5 unreadable images" in message
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
