"""The on-disk cache: hits, invalidation, atomic writes, and two processes racing for one entry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lra.data import listops, load_task
from lra.data.base import MalformedDataError
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
    with pytest.raises(MalformedDataError, match=f"{labels}: not a cache array this project wrote"):
        load_task("listops", data_dir=listops_copy, cache_dir=tmp_path / "cache", max_len=300)
    assert not marker.exists()


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
