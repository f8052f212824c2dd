"""``tl.predict_cohort`` and ``sthinge predict``: five small slides written here (one corrupt), one process and two
(gloo, as under torchrun), a run killed in the middle and resumed, the summary, and bad input refused before any
work."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sthinge as st
from sthinge import _constants as K

tifffile = pytest.importorskip("tifffile")

ROOT = Path(__file__).resolve().parents[2]
N_SLIDES = 5
CORRUPT = "slide_c"  # the third slide: a truncated TIFF
RUN_KW = dict(n_steps=2, n_samples=2, spacing_um=100.0)
CLI_KW = ["--steps", "2", "--samples", "2", "--spacing-um", "100", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_slide(path: Path, size: int, seed: int) -> None:
    """A pink disc of tissue on white glass, two pyramid levels, 1 µm per pixel in the OME metadata."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    tissue = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    stain = np.array([200, 110, 170]) + rng.integers(-25, 25, (size, size, 3)) * (1 + (xx[..., None] > size / 2))
    img = np.where(tissue[..., None], stain, np.array([244, 242, 246])).clip(0, 255).astype(np.uint8)
    meta = {"axes": "YXS", "PhysicalSizeX": 1.0, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 1.0}
    meta["PhysicalSizeYUnit"] = "µm"
    options = {"tile": (128, 128), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(img, subifds=1, metadata=meta, **options)
        tif.write(np.ascontiguousarray(img[::2, ::2]), subfiletype=1, **options)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, quiet, tiny_fit_kw):
    root = tmp_path_factory.mktemp("cohort")
    slides = root / "slides"
    slides.mkdir()
    names = [f"slide_{c}" for c in "abcde"[:N_SLIDES]]
    for i, name in enumerate(names):
        _write_slide(slides / f"{name}.ome.tif", 420 + 40 * i, seed=i)
    data = (slides / f"{CORRUPT}.ome.tif").read_bytes()
    (slides / f"{CORRUPT}.ome.tif").write_bytes(data[: len(data) // 3])  # truncated
    manifest = root / "manifest.csv"
    pd.DataFrame({"path": [f"slides/{n}.ome.tif" for n in names]}).to_csv(manifest, index=False)
    # a tiny model trained on he-stats embeddings (its recipe: he-stats, 112 µm tiles)
    sdata = st.datasets.synthetic(n_sections=2, n_spots=36, n_genes=16, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=16, vocab="cellfm-80m")
    st.pp.embed_histology(sdata)
    model = st.tl.fit(sdata, **tiny_fit_kw)
    model_dir = model.save(root / "model")
    single = root / "single"
    summary = st.tl.predict_cohort(manifest, model_dir, single, **RUN_KW)
    return {
        "root": root,
        "manifest": manifest,
        "model": model_dir,
        "names": names,
        "single": single,
        "summary": summary,
    }


def _hashes(out: Path, names) -> dict:
    import spatialdata as sd

    from sthinge.tl._cohort import prediction_hash

    return {
        n: prediction_hash(sd.read_zarr(out / f"{n}.zarr").tables[K.PRED_KEY])
        for n in names
        if (out / f"{n}.zarr").is_dir()
    }


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.update({"OMP_NUM_THREADS": "1", "STHINGE_CACHE_DIR": os.environ.get("STHINGE_CACHE_DIR", "")})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sthinge", *map(str, args)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------------
# one process


def test_one_process_writes_a_result_per_slide_and_records_the_failure(cohort):
    summary, single, names = cohort["summary"], cohort["single"], cohort["names"]
    assert list(summary["sample_id"]) == names
    by = summary.set_index("sample_id")
    assert by.loc[CORRUPT, "status"] == "failed" and by.loc[CORRUPT, "error"]
    assert "slide_c" not in _hashes(single, names)
    ok = [n for n in names if n != CORRUPT]
    assert (by.loc[ok, "status"] == "done").all() and (by.loc[ok, "n_spots"] > 5).all()
    from sthinge.tl._cohort import read_summary

    assert read_summary(single / "summary.csv").equals(summary)
    import spatialdata as sd

    result = sd.read_zarr(single / "slide_a.zarr")
    assert set(result.tables) == {"grid_table", K.PRED_KEY} and set(result.shapes) == {"grid"}
    assert not result.images  # the slide stays where it is
    grid, pred = result.tables["grid_table"], result.tables[K.PRED_KEY]
    assert grid.obsm["X_he-stats"].shape == (grid.n_obs, 104)
    assert grid.uns["X_he-stats"]["tile_size_um"] == 112.0  # the model's recipe
    assert pred.n_obs == grid.n_obs and "sthinge_q95" in pred.layers
    assert (pred.obs["section"] == "slide_a").all()
    marker = json.loads((single / "sthinge_cohort.json").read_text())
    assert marker["settings"]["encoder"] == "he-stats"


def test_rerun_skips_finished_slides_and_retries_failed_ones(cohort, sthinge_log):
    single, names = cohort["single"], cohort["names"]
    st.settings.verbosity = 2  # info: the per-slide log lines (put back after the test)
    before = {n: (single / ".status" / f"{n}.json").read_text() for n in names}
    summary = st.tl.predict_cohort(cohort["manifest"], cohort["model"], single, **RUN_KW)
    after = {n: (single / ".status" / f"{n}.json").read_text() for n in names}
    assert {n for n in names if before[n] == after[n]} == set(names) - {CORRUPT}  # the failed one was retried
    assert sthinge_log.text.count("finished earlier, skipped") == len(names) - 1
    assert list(summary["status"]) == list(cohort["summary"]["status"])
    assert summary.drop(columns="seconds").equals(cohort["summary"].drop(columns="seconds"))
    # other settings are a different cohort result: redone, not skipped (in a copy: `single` is the reference)
    import shutil

    copy = cohort["root"] / "settings-changed"
    shutil.copytree(single, copy)
    st.tl.predict_cohort(cohort["manifest"], cohort["model"], copy, n_steps=2, n_samples=1, spacing_um=100.0)
    changed = json.loads((copy / ".status" / "slide_a.json").read_text())["settings"]
    assert changed != json.loads(before["slide_a"])["settings"]
    assert _hashes(copy, names) != _hashes(single, names)


# ---------------------------------------------------------------------------------------------------------------------
# two processes, and a killed run


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(cohort):
    out = cohort["root"] / "two"
    port = _free_port()
    procs = [
        subprocess.Popen(
            _cli("predict", cohort["model"], cohort["manifest"], "--out", out, *CLI_KW),
            env=_env(
                RANK=r,
                LOCAL_RANK=r,
                WORLD_SIZE=2,
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                STHINGE_COHORT_BACKEND="gloo",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [3, 3], results  # 3: a slide failed (the corrupt one)
    from sthinge.tl._cohort import read_summary

    summary = read_summary(out / "summary.csv")
    assert set(summary["rank"]) == {0, 1}
    assert summary.set_index("sample_id").loc[CORRUPT, "status"] == "failed"
    single = _hashes(cohort["single"], cohort["names"])
    assert _hashes(out, cohort["names"]) == single and len(single) == N_SLIDES - 1


@pytest.mark.slow
def test_a_killed_run_resumes_with_only_the_missing_slides(cohort):
    out = cohort["root"] / "killed"
    proc = subprocess.Popen(
        _cli("predict", cohort["model"], cohort["manifest"], "--out", out, *CLI_KW),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = out / ".status"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if status.is_dir() and len(list(status.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.stem: p.read_text() for p in status.glob("*.json")}
    assert 2 <= len(done_before) < N_SLIDES, "the run was not killed in the middle"
    summary = st.tl.predict_cohort(cohort["manifest"], cohort["model"], out, **RUN_KW)
    for name, text in done_before.items():
        if json.loads(text)["status"] == "done":
            assert (status / f"{name}.json").read_text() == text  # not redone
    assert list(summary["status"]) == list(cohort["summary"]["status"])
    assert _hashes(out, cohort["names"]) == _hashes(cohort["single"], cohort["names"])
    assert not list(out.glob(".*.tmp"))  # no half-written result left


# ---------------------------------------------------------------------------------------------------------------------
# bad input, refused before any work


def _manifest(root: Path, name: str, frame: pd.DataFrame) -> Path:
    path = root / name
    frame.to_csv(path, index=False)
    return path


def test_bad_manifests_are_refused_before_any_work(cohort, tmp_path):
    root, model = cohort["root"], cohort["model"]
    slide = str(root / "slides" / "slide_a.ome.tif")
    cases = [
        (pd.DataFrame({"file": [slide]}), ValueError, "no 'path' column"),
        (pd.DataFrame({"path": [slide], "micron": [0.5]}), ValueError, "unknown column"),
        (pd.DataFrame({"path": [slide, str(root / "nope.tif")]}), FileNotFoundError, "do not exist"),
        (pd.DataFrame({"path": [slide, slide]}), ValueError, "repeats sample id"),
        (pd.DataFrame({"path": [slide, slide], "sample_id": ["x", "x"]}), ValueError, "repeats sample id"),
        (pd.DataFrame({"path": [slide], "mpp": [-1.0]}), ValueError, "'mpp' must be empty or a positive"),
        (pd.DataFrame({"path": [slide], "sample_id": ["../up"]}), ValueError, "Sample ids name the output"),
    ]
    for i, (frame, err, match) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(err, match=match):
            st.tl.predict_cohort(_manifest(tmp_path, f"m{i}.csv", frame), model, out)
        assert not out.exists()
    with pytest.raises(FileNotFoundError, match="`manifest`"):
        st.tl.predict_cohort(tmp_path / "none.csv", model, tmp_path / "o")


def test_output_folders_of_another_model_or_with_other_files_are_refused(cohort, tmp_path):
    other = tmp_path / "other-model"
    model = st.tl.HingeModel.load(cohort["model"])
    model.cond_mean = model.cond_mean + 1.0  # another model
    model.save(other)
    one = _manifest(tmp_path, "one.csv", pd.DataFrame({"path": [str(cohort["root"] / "slides" / "slide_a.ome.tif")]}))
    with pytest.raises(FileExistsError, match="results of another model.*overwrite"):
        st.tl.predict_cohort(one, other, cohort["single"], **RUN_KW)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty and holds no cohort results"):
        st.tl.predict_cohort(one, other, mine, **RUN_KW)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(cohort["single"], copy)
    summary = st.tl.predict_cohort(one, other, copy, overwrite=True, **RUN_KW)
    assert summary["status"].tolist() == ["done"]
    assert (
        json.loads((copy / "sthinge_cohort.json").read_text())["model_sha256"]
        != json.loads((cohort["single"] / "sthinge_cohort.json").read_text())["model_sha256"]
    )


def test_the_recorded_encoder_is_enforced(cohort, tmp_path):
    one = _manifest(tmp_path, "one.csv", pd.DataFrame({"path": [str(cohort["root"] / "slides" / "slide_b.ome.tif")]}))
    with pytest.raises(ValueError, match="differs from the encoder the model was trained on"):
        st.tl.predict_cohort(one, cohort["model"], tmp_path / "o", encoder="vit_tiny_patch16_224")
    assert not (tmp_path / "o").exists()
    model = st.tl.HingeModel.load(cohort["model"])
    model.embedding = None  # a model that does not know how its embeddings were made
    with pytest.raises(ValueError, match="pass `encoder=`"):
        st.tl.predict_cohort(one, model, tmp_path / "o")


def test_cli_help_documents_every_option_and_bad_input_exits_2(cohort, tmp_path):
    from sthinge._cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    text = sub.format_help()
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in text
        assert action.help, action.dest
    bad = _manifest(tmp_path, "bad.csv", pd.DataFrame({"file": ["x"]}))
    res = subprocess.run(
        _cli("predict", cohort["model"], bad, "--out", tmp_path / "o"), env=_env(), capture_output=True, text=True
    )
    assert res.returncode == 2 and "no 'path' column" in res.stderr
    assert not (tmp_path / "o").exists()


def test_the_model_records_its_embedding_recipe(cohort, tmp_path):
    import torch

    model = st.tl.HingeModel.load(cohort["model"])
    recipe = model.embedding_recipe
    assert recipe["encoder"] == "he-stats" and recipe["tile_size_um"] == 112.0 and recipe["dim"] == model.cond_dim
    model.save(tmp_path / "again")
    assert st.tl.HingeModel.load(tmp_path / "again").embedding_recipe == recipe
    # a file whose recipe contradicts the model is refused by name
    payload = torch.load(tmp_path / "again" / "model.pt", weights_only=True)
    payload["embedding"]["dim"] = model.cond_dim + 1
    torch.save(payload, tmp_path / "again" / "model.pt")
    with pytest.raises(ValueError, match="field 'embedding'"):
        st.tl.HingeModel.load(tmp_path / "again")
