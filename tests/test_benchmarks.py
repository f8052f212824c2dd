"""The benchmark scripts stay runnable: tiny CPU runs of ``bench_gpu.py`` and ``bench_sampling.py``, and
``bench_her2st_loso.py --report`` and ``bench_steer.py --report`` on small runs files made here, and the oracle of
``bench_steer.py`` (the real runs take hours and are not part of the test suite)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_bench_gpu_runs_on_cpu(tmp_path):
    out = tmp_path / "bench.md"
    res = _run(
        str(BENCH / "bench_gpu.py"),
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--genes",
        "20",
        "--spots",
        "8",
        "--ks",
        "2",
        "--cond-dim",
        "16",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "<!-- bench_gpu:cpu-tiny:start -->" in text and "<!-- bench_gpu:cpu-tiny:end -->" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    spots_per_s = float(row.split("|")[3])
    assert spots_per_s > 0


def test_bench_sampling_reference_and_peak_run(tmp_path):
    out = tmp_path / "bench.md"
    res = _run(
        str(BENCH / "bench_sampling.py"),
        "--quick",
        "--only",
        "reference",
        "peak",
        "--cond-dim",
        "16",
        "--threads",
        "1",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "<!-- bench_sampling:tiny-quick:start -->" in text
    ref_row = next(line for line in text.splitlines() if line.startswith("| 32 | 5 |"))
    assert float(ref_row.split("|")[-2]) <= 1e-4  # sample and sample_reference agree
    peak_row = next(line for line in text.splitlines() if line.startswith("| eager |"))
    fraction = float(peak_row.split("|")[9])
    assert 0 < fraction < 10


def test_bench_her2st_loso_report(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(40)]
    runs = tmp_path / "runs.jsonl"
    lines = []
    for fold in ("C2", "C3"):
        base = rng.uniform(0.0, 0.6, len(genes))
        for method, shift in (("ridge", 0.0), ("hinge", 0.05)):
            pcc = base + shift + rng.normal(0, 0.01, len(genes))
            lines.append(
                json.dumps(
                    {
                        "kind": "loso",
                        "method": method,
                        "fold": fold,
                        "seed": 0,
                        "max_epochs": 3,
                        "n_steps": 2,
                        "n_samples": 1,
                        "metrics": {
                            "pcc50": float(pcc.mean()),
                            "pcc200": float(pcc.mean()),
                            "mse": 0.5,
                            "mae": 0.5,
                            "ssim": 0.6,
                        },
                        "n_panel": len(genes),
                        "fit_seconds": 1.0,
                        "predict_seconds": 1.0,
                        "wall_seconds": 2.0,
                        "per_gene_pcc": dict(zip(genes, map(float, pcc))),
                    }
                )
            )
    lines.append(
        json.dumps(
            {
                "kind": "tradeoff",
                "method": "hinge",
                "fold": "C2",
                "seed": 0,
                "max_epochs": 3,
                "grid": [{"k": 5, "n_samples": 1, "pcc50": 0.3, "mse": 0.7, "seconds": 2.0, "spots": 10}],
            }
        )
    )
    runs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bench.md"
    res = _run(
        str(BENCH / "bench_her2st_loso.py"),
        "--report",
        "--runs",
        str(runs),
        str(tmp_path / "absent.jsonl"),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    hinge = next(line for line in text.splitlines() if line.startswith("| hinge | frozen"))
    ratio = float(hinge.split("|")[9])
    assert ratio == pytest.approx(
        1.0 + 0.05 / np.mean([json.loads(x)["metrics"]["pcc50"] for x in lines[:4:2]]), abs=0.02
    )
    wil = next(line for line in text.splitlines() if line.startswith("| hinge | 80 |"))
    assert float(wil.split("|")[5]) < 1e-6  # HINGE better on every gene: tiny p-value
    assert "| 5 | 1 | 0.300 |" in text
    # several references: one group of paired-test columns each
    res = _run(
        str(BENCH / "bench_her2st_loso.py"),
        "--report",
        "--runs",
        str(runs),
        "--reference",
        "hinge",
        "ridge",
        "--section",
        "two",
        "Two references",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    section = out.read_text().split("<!-- bench_her2st_loso_two:start -->")[1]
    head = next(line for line in section.splitlines() if line.startswith("| method | pairs vs ridge"))
    assert head.count("pairs vs") == 3 and "pairs vs hinge" in head
    wil = next(line for line in section.splitlines() if line.startswith("| hinge | 80 |"))
    assert len(wil.split("|")) == len(head.split("|"))


def _steer_record(method, condition, pcc50, backbone="bb.pt"):
    hinge = method != "ridge"
    return {
        "kind": "steer",
        "method": method,
        "base": method,
        "condition": condition,
        "fold": "C2",
        "backbone": backbone if hinge else None,
        "backbone_kind": "cellfm" if hinge else None,
        "arch": "4 x 128" if hinge else None,
        "seed": 0,
        "max_epochs": 1 if hinge else None,
        "min_epochs": 1 if hinge else None,
        "n_steps": 2 if hinge else None,
        "n_samples": 1 if hinge else None,
        "lr": 1e-3 if hinge else None,
        "metrics": {"pcc50": pcc50, "pcc": pcc50, "mse": 0.5, "mae": 0.5, "ssim": 0.6},
        "n_panel": 40,
        "fit_seconds": 2.0,
        "predict_seconds": 1.0,
        "wall_seconds": 3.0,
        "per_gene_pcc": {},
        "machine": "x86_64 (Linux), 2 CPU cores",
        "date": "2026-12-04",
    }


def test_bench_steer_report(tmp_path):
    runs = tmp_path / "runs.jsonl"
    pccs = {"ridge": 0.6, "scratch": 0.4, "hinge": 0.2, "scratch-hidden": 0.5, "hidden": 0.45}
    records = [
        _steer_record(m, c, p + (0.1 if c == "oracle20" else 0.0))
        for m, p in pccs.items()
        for c in ("he-stats", "oracle20", "oracle5")
    ]
    runs.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "bench.md"
    res = _run(str(BENCH / "bench_steer.py"), "--report", "--runs", str(runs), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "<!-- bench_steer:start -->" in text and "<!-- bench_steer:end -->" in text
    head = next(line for line in text.splitlines() if line.startswith("| backbone |"))
    assert head.split("|")[4:8] == [" lr ", " PCC-50 oracle5 ", " PCC-50 oracle20 ", " PCC-50 he-stats "]
    hinge = next(line for line in text.splitlines() if line.startswith("| bb.pt | 4 x 128 | hinge |"))
    assert float(hinge.split("|")[4]) == pytest.approx(1e-3)
    assert float(hinge.split("|")[6]) == pytest.approx(0.3)
    assert float(hinge.split("|")[8]) == pytest.approx(0.3 / 0.5, abs=0.01)  # oracle20 over Scratch's
    # `hidden` is compared with the Scratch of its own modulation
    hidden = next(line for line in text.splitlines() if line.startswith("| bb.pt | 4 x 128 | hidden |"))
    assert float(hidden.split("|")[8]) == pytest.approx(0.55 / 0.6, abs=0.01)
    ridge = next(line for line in text.splitlines() if line.startswith("| – | – | ridge |"))
    assert ridge.split("|")[8].strip() == "–"


def test_bench_steer_oracle_uses_training_spots_only():
    import anndata as ad

    sys.path.insert(0, str(BENCH))
    from bench_steer import _oracle

    from sthinge import _constants as K

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 30)).astype(np.float32)
    train = np.arange(60) < 40
    moved = x.copy()
    moved[~train] += rng.normal(size=(20, 30)).astype(np.float32) * 5  # the held-out spots change
    scores = [_oracle(ad.AnnData(X=v, layers={K.NORM_LAYER: v}), 3, train) for v in (x, moved)]
    assert scores[0].shape == (60, 3)
    np.testing.assert_allclose(scores[0][train], scores[1][train], atol=1e-5)  # fitted on the training rows only
    assert not np.allclose(scores[0][~train], scores[1][~train])


def test_loso_rows_pin_the_design_they_measure():
    """Rows measured before 2026-12-04 keep the paper's modulation and lr 1e-4; the new rows use tl.fit's defaults."""
    sys.path.insert(0, str(BENCH))
    from bench_her2st_loso import _fit_kwargs

    class Args:
        max_epochs, seed = 30, 0

    old = _fit_kwargs("gaussian", Args, "bb.pt")
    assert old["lr"] == 1e-4 and old["config"]["modulation"] == "paper"
    assert _fit_kwargs("hinge", Args, "bb.pt")["config"] == {"modulation": "paper"}
    new = _fit_kwargs("hidden", Args, "bb.pt")
    assert new["lr"] is None and new["config"]["modulation"] == "hidden"  # tl.fit's width-scaled default
    assert _fit_kwargs("scratch-hidden", Args, "bb.pt")["config"]["variant"] == "scratch"


def test_bench_default_cost_report():
    sys.path.insert(0, str(BENCH))
    from argparse import Namespace

    from bench_default_cost import DESIGNS, report

    old, new = list(DESIGNS)
    times = {
        old: {"epoch": [10.0, 12.0], "predict": [4.0, 4.0]},
        new: {"epoch": [11.0, 13.0], "predict": [5.0, 5.0]},
        "_meta": {"n_genes": 100, "n_train": 700, "n_held": 180, "trainable": {old: 500_000, new: 580_000}},
    }
    args = Namespace(threads=1, epochs=3, n_steps=10, n_samples=4, repeats=2)
    text = report(times, args, Path("bb.pt"))
    assert f"| {new} | 580,000 | 12.00 | 5.00 |" in text
    assert "fit 1.09x per epoch, predict 1.25x" in text  # medians 12 / 11 and 5 / 4
