"""The attention benchmark (lra/bench, CLI scripts/bench_attention.py): end to end on tiny
sizes, gaps, summary math, errors, presets read from configs/."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lra.bench import measure, presets, probes, results
from lra.bench.presets import BenchError, backend_names, parse_option, resolve_options
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "bench_attention.py"
TINY = ["--lengths", "32,64", "--batch", "1", "--heads", "1", "--head-dim", "8",
        "--repeats", "1", "--warmup", "0", "--threads", "1", "--tag", "test"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != measure.INJECT_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_png(path: Path) -> None:
    from PIL import Image

    assert path.is_file(), f"missing {path}"
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


# ------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = run_cli(["--backends", "softmax,linear", *TINY, "--lengths", "16,32", "--out", str(out)])
    return proc, out


def test_end_to_end_writes_csv_rows_and_columns(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    csv_path = out / "bench_paper-latency_test.csv"
    df = pd.read_csv(csv_path)
    assert list(df.columns) == results.COLUMNS  # neither backend reports bench fields
    assert len(df) == 2 * 2 * 2  # backends x lengths x modes
    assert set(zip(df["backend"], df["n"], df["mode"])) == {
        (b, n, m) for b in ("softmax", "linear") for n in (16, 32) for m in ("fwd", "fwd+bwd")}
    assert (df["status"] == "ok").all(), df[["backend", "n", "mode", "status", "error"]]
    assert (df["median_ms"] > 0).all() and (df["min_ms"] > 0).all()
    assert (df["min_ms"] <= df["median_ms"]).all()
    assert (df["peak_mb"] >= 0).all() and df["peak_mb"].notna().all()
    assert (df["baseline_mb"] > 0).all()
    assert set(df["mem_method"]) <= {"vmhwm", "ru_maxrss"}
    assert (df[["batch", "heads", "head_dim", "threads", "repeats", "warmup"]].to_numpy()
            == [1, 1, 8, 1, 1, 0]).all()
    assert (df["preset"] == "paper-latency").all() and (df["dtype"] == "float32").all()
    assert (df["torch"] == torch.__version__).all()
    assert df["device"].str.len().gt(0).all() and (df["device_tag"] == "test").all()
    assert df["timestamp"].notna().all()
    assert json.loads(df.loc[df["backend"] == "softmax", "options"].iloc[0]) == {"dropout": 0.0}
    assert not list(out.glob("*.tmp")), "temporary CSV left behind"


def test_end_to_end_writes_valid_plots(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr
    assert_png(out / "bench_paper-latency_test_time.png")
    assert_png(out / "bench_paper-latency_test_memory.png")


def test_gaps_become_rows_and_the_run_still_exits_zero(tmp_path):
    inject = "softmax:32:fwd:oom,linear:32:fwd+bwd:hang,sinkhorn:32:fwd+bwd:kill"
    proc = run_cli(["--backends", "softmax,linear,sinkhorn", *TINY, "--lengths", "32",
                    "--timeout", "1", "--out", str(tmp_path)], {measure.INJECT_ENV: inject})
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(tmp_path / "bench_paper-latency_test.csv")
    status = {(b, m): s for b, m, s in zip(df["backend"], df["mode"], df["status"])}
    assert status == {
        ("softmax", "fwd"): "oom",
        ("softmax", "fwd+bwd"): "skipped",  # fwd ran out of memory at this n already
        ("linear", "fwd"): "ok",
        ("linear", "fwd+bwd"): "timeout",
        ("sinkhorn", "fwd"): "ok",
        ("sinkhorn", "fwd+bwd"): "oom-killed",
    }
    gaps = df[df["status"] != "ok"]
    assert gaps["median_ms"].isna().all() and gaps["error"].str.len().gt(0).all()
    assert "injected out-of-memory" in df.loc[df["status"] == "oom", "error"].iloc[0]
    assert_png(tmp_path / "bench_paper-latency_test_time.png")
    assert_png(tmp_path / "bench_paper-latency_test_memory.png")


def test_a_backend_error_is_a_row_and_exit_code_one(tmp_path):
    proc = run_cli(["--backends", "linear", *TINY, "--lengths", "16", "--modes", "fwd",
                    "--out", str(tmp_path)], {measure.INJECT_ENV: "*:*:*:error"})
    assert proc.returncode == 1
    df = pd.read_csv(tmp_path / "bench_paper-latency_test.csv")
    assert list(df["status"]) == ["error"] and "injected error" in df["error"].iloc[0]
    assert (tmp_path / "bench_paper-latency_test_time.png").is_file()


# ------------------------------------------------------------------------------------------
# Summary math


def synthetic() -> pd.DataFrame:
    """lot: time 2n, memory n; softmax: time n^2 / 100, memory n^2 / 1000; linear: a gap."""
    rows = []
    for n in (1000, 2000, 4000):
        for mode, scale in (("fwd", 1.0), ("fwd+bwd", 3.0)):
            rows.append(dict(backend="lot", mode=mode, n=n, status="ok",
                             median_ms=scale * 2 * n, peak_mb=scale * n))
            rows.append(dict(backend="softmax", mode=mode, n=n, status="ok" if n < 4000 else "oom",
                             median_ms=scale * n * n / 100 if n < 4000 else float("nan"),
                             peak_mb=scale * n * n / 1000 if n < 4000 else float("nan")))
    return pd.DataFrame(rows)


def test_loglog_slope_exact():
    assert results.loglog_slope(1000, 5.0, 4000, 80.0) == pytest.approx(2.0, abs=1e-12)
    assert results.loglog_slope(512, 3.0, 8192, 48.0) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(results.loglog_slope(512, 0.0, 1024, 1.0))
    assert math.isnan(results.loglog_slope(512, 1.0, 512, 2.0))


def test_ratio_table_exact_values_and_gaps():
    table = results.ratio_table(synthetic(), "lot", ["softmax", "linear"], "median_ms")
    assert list(table.columns) == ["mode", "n", "lot", "lot/softmax", "lot/linear"]
    assert list(zip(table["mode"], table["n"])) == [
        ("fwd", 1000), ("fwd", 2000), ("fwd", 4000),
        ("fwd+bwd", 1000), ("fwd+bwd", 2000), ("fwd+bwd", 4000)]
    # lot/softmax = 2n / (n^2 / 100) = 200 / n, the same for both modes
    assert table["lot/softmax"].iloc[:2].tolist() == pytest.approx([0.2, 0.1])
    assert table["lot/softmax"].iloc[3:5].tolist() == pytest.approx([0.2, 0.1])
    assert math.isnan(table["lot/softmax"].iloc[2])  # softmax ran out of memory at 4000
    assert table["lot/linear"].isna().all()  # no linear rows at all
    assert table["lot"].tolist() == pytest.approx([2000, 4000, 8000, 6000, 12000, 24000])
    memory = results.ratio_table(synthetic(), "lot", ["softmax"], "peak_mb")
    assert memory["lot/softmax"].iloc[:2].tolist() == pytest.approx([1.0, 0.5])


def test_slope_table_exact_values():
    table = results.slope_table(synthetic()).set_index(["backend", "mode"])
    lot = table.loc[("lot", "fwd+bwd")]
    assert (lot["n1"], lot["n2"]) == (1000, 4000)
    assert lot["time_slope"] == pytest.approx(1.0) and lot["memory_slope"] == pytest.approx(1.0)
    soft = table.loc[("softmax", "fwd")]
    assert (soft["n1"], soft["n2"]) == (1000, 2000)  # the largest ok n
    assert soft["time_slope"] == pytest.approx(2.0) and soft["memory_slope"] == pytest.approx(2.0)
    fixed = results.slope_table(synthetic(), 1000, 4000).set_index(["backend", "mode"])
    assert math.isnan(fixed.loc[("softmax", "fwd"), "time_slope"])  # 4000 is a gap


def test_markdown_table_and_summary(tmp_path, capsys):
    text = results.markdown_table(pd.DataFrame({"a": ["x"], "b": [0.123456], "c": [float("nan")]}))
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| x | 0.123 | — |"]
    rows = [{**r, "preset": "scaling", "device": "cpu", "threads": 1, "torch": "t",
             "batch": 1, "heads": 1, "head_dim": 32, "dtype": "float32", "repeats": 5}
            for r in synthetic().to_dict("records")]
    path = tmp_path / "bench.csv"
    results.write_csv_atomic(rows, path)
    out = results.summarize(path, "lot", ["softmax"])
    assert "| mode | n | lot time (ms) | lot/softmax |" in out
    assert "| fwd | 1000 | 2e+03 | 0.2 |" in out
    assert "| lot | fwd | 1000 | 4000 | 1.00 | 1.00 |" in out
    assert "| softmax | fwd | 1000 | 2000 | 2.00 | 2.00 |" in out


# ------------------------------------------------------------------------------------------
# Errors, options, presets


def test_cli_usage_errors_exit_two_with_the_valid_names():
    proc = run_cli(["--backends", "softmax,nosuch"])
    assert proc.returncode == 2
    assert "unknown attention backend(s) nosuch" in proc.stderr
    assert "valid names:" in proc.stderr and "softmax" in proc.stderr and "lot" in proc.stderr
    summary = run_cli(["--summary", str(REPO_ROOT / "results" / "bench_scaling_cpu-intel-xeon.csv")])
    assert summary.returncode == 0 and "| mode | n | lot time (ms) |" in summary.stdout


@pytest.mark.parametrize("bad", ["lot.n_iters", "n_iters=5", "lot.=5", "lot.n_iters="])
def test_bad_option_syntax(bad):
    with pytest.raises(BenchError, match="expected BACKEND.KEY=VALUE"):
        resolve_options(["softmax"], presets()["paper-latency"], [bad], backend_names())


def test_option_parsing_and_validation():
    assert parse_option("lot.n_iters=50") == ("lot", "n_iters", 50)
    assert parse_option("lot.eps=0.5") == ("lot", "eps", 0.5)
    assert parse_option("lot.grad_mode=unrolled") == ("lot", "grad_mode", "unrolled")
    assert parse_option("lot.learn_masses=false") == ("lot", "learn_masses", False)
    valid = backend_names()
    preset = presets()["paper-latency"]
    with pytest.raises(BenchError, match="has no option.*valid options: dropout"):
        resolve_options(["softmax"], preset, ["softmax.foo=1"], valid)
    with pytest.raises(BenchError, match="max_len is set by the benchmark"):
        resolve_options(["linformer"], preset, ["linformer.max_len=9"], valid)
    with pytest.raises(BenchError, match="unknown attention backend 'nosuch'"):
        resolve_options(["softmax"], preset, ["nosuch.x=1"], valid)
    opts = resolve_options(["linformer"], preset, ["linformer.proj_dim=16"], valid)
    assert opts["linformer"]["proj_dim"] == 16


def test_lot_preset_options_and_overrides():
    valid = backend_names()
    opts = resolve_options(["lot"], presets()["lra-image"], ["lot.n_iters=50"], valid)
    assert (opts["lot"]["rank"], opts["lot"]["eps"], opts["lot"]["n_iters"]) == (8, 25.0, 50)
    latency = resolve_options(["lot"], presets()["paper-latency"], [], valid)["lot"]
    assert (latency["rank"], latency["n_iters"]) == (32, 5)


def test_lra_presets_match_the_training_configs():
    """Batch, length, heads x head dim and LOT's r / eps / iterations = configs/ values."""
    cfg = REPO_ROOT / "configs"
    model = yaml.safe_load((cfg / "model" / "lra_small.yaml").read_text())
    for task in ("listops", "text", "retrieval", "image", "pathfinder"):
        preset = presets()[f"lra-{task}"]
        spec = yaml.safe_load((cfg / "task" / f"{task}.yaml").read_text())
        lot = yaml.safe_load((cfg / "task_attn" / f"{task}_lot.yaml").read_text())["attn"]
        batch = spec["batch_size"] * (2 if spec.get("dual") else 1)  # both documents at once
        assert (preset.batch, preset.lengths) == (batch, [spec["max_len"]]), task
        assert (preset.heads, preset.head_dim) == (model["num_heads"],
                                                  model["dim"] // model["num_heads"]), task
        assert preset.options["lot"] == {k: lot[k] for k in ("rank", "eps", "n_iters")}, task


def test_device_tag():
    assert probes.device_tag("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "cpu") == "cpu-intel-xeon-gold-6338"
    assert probes.device_tag("NVIDIA H100 80GB HBM3", "cuda") == "cuda-h100-80gb-hbm3"
    assert probes.device_tag("", "cpu") == "cpu"
