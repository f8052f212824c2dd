"""``sthinge fit CONFIG.toml``: a model trained from a config file, its history, resuming, and bad configs refused
before any work."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import sthinge as st
from sthinge._fit_config import read_config, run_fit_config

pytestmark = pytest.mark.usefixtures("one_thread", "quiet")

CONFIG = """
[data]
zarr = ["data.zarr"]

[panel]
n_top = 16
vocab = "cellfm-80m"

[embedding]
encoder = "he-stats"
batch_size = 64

[backbone]
name = "tiny"

[fit]
max_epochs = {epochs}
min_epochs = 0
batch_size = 16
curriculum_epochs = 1
val_metric = "loss"
train_sections = ["S1", "S2"]
calibration_samples = 2
calibration_steps = 2
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitcfg")
    sdata = st.datasets.synthetic(n_sections=3, n_spots=36, n_genes=20, seed=0)
    sdata.write(root / "data.zarr")
    return root


def _config(folder, name: str, epochs: int, extra: str = "") -> str:
    path = folder / name
    path.write_text(CONFIG.replace("{epochs}", str(epochs)) + extra)
    return path


def test_fit_from_config_then_resume(folder):
    cfg = _config(folder, "fit.toml", 2)
    out = folder / "model"
    model = run_fit_config(cfg, out, say=lambda *_: None)
    assert len(model.history) == 2 and model.train_sections == ["S1", "S2"]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2 and "train_loss" in history
    assert (out / "config.toml").read_text() == cfg.read_text()
    loaded = st.tl.HingeModel.load(out)
    assert loaded.genes == model.genes and loaded.embedding_recipe["encoder"] == "he-stats"
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_fit_config(cfg, out, say=lambda *_: None)
    # an interrupted run continues from its last checkpoint: 2 epochs done, one more to reach 3
    more = run_fit_config(_config(folder, "fit3.toml", 3), out, resume=True, say=lambda *_: None)
    assert len(more.history) == 3
    assert [h["train_loss"] for h in more.history[:2]] == [h["train_loss"] for h in model.history]
    assert len(pd.read_csv(out / "history.csv")) == 3


@pytest.mark.parametrize(
    ("text", "err", "match"),
    [
        ("[data]\nzarr = ['nope.zarr']\n", FileNotFoundError, "zarr store"),
        ("[fit]\nmax_epochs = 1\n", ValueError, "no \\[data\\] table"),
        ("[data]\nzarr = ['data.zarr']\n[model]\nx = 1\n", ValueError, "Unknown table"),
        ("[data]\nzarr = ['data.zarr']\n[fit]\nmax_epoch = 1\n", ValueError, "Unknown key.*max_epoch"),
        ("[data]\nzarr = ['data.zarr']\n[fit]\nbackbone = 'tiny'\n", ValueError, "Unknown key.*backbone"),
        ("[data]\nzarr = ['data.zarr']\nher2st = ['C2']\n", ValueError, "exactly one of"),
        ("[data\n", ValueError, "not valid TOML"),
    ],
)
def test_bad_configs_are_refused(folder, text, err, match):
    path = folder / "bad.toml"
    path.write_text(text)
    with pytest.raises(err, match=match):
        read_config(path)


def test_cli_fit_help_and_bad_config_exit_2(folder, tmp_path):
    from sthinge._cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["fit"]
    text = sub.format_help()
    for action in sub._actions:
        assert action.help and all(opt in text for opt in action.option_strings)
    bad = folder / "bad-cli.toml"
    bad.write_text("[data]\nzarr = ['missing.zarr']\n")
    res = subprocess.run(
        [sys.executable, "-m", "sthinge", "fit", str(bad), "--out", str(tmp_path / "m")], capture_output=True, text=True
    )
    assert res.returncode == 2 and "zarr store(s) not found" in res.stderr
    assert not (tmp_path / "m").exists()
