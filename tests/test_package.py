import subprocess
import sys

import pytest

import sthinge as st


def test_import_is_light():
    code = (
        "import sys, sthinge; heavy = [m for m in ('torch', 'scanpy', 'squidpy', 'spatialdata', 'timm', 'anndata') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_lazy_submodules():
    assert st.datasets.synthetic is not None
    with pytest.raises(AttributeError):
        st.not_a_module  # noqa: B018


def test_settings_validation(monkeypatch, tmp_path):
    s = st.settings
    with pytest.raises(ValueError, match="verbosity"):
        s.verbosity = 7
    with pytest.raises(ValueError, match="device"):
        s.device = "tpu"
    with pytest.raises(ValueError, match="seed"):
        s.seed = -3
    monkeypatch.setenv("STHINGE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(s, "_datadir", None)
    assert s.datadir == tmp_path
    assert str(s.resolve_device("cpu")) == "cpu"
    assert s.resolve_device("auto").type in {"cpu", "cuda", "mps"}


def test_vocab_lists():
    from sthinge._vocab import cellfm_gene_ids, cellfm_vocab

    v80, v800 = cellfm_vocab(27855), cellfm_vocab("cellfm-800m")
    assert (len(v80), len(v800)) == (27855, 24078)
    # ids differ between the two lists (docs/method.md, "The backbone: CellFM")
    assert cellfm_gene_ids(["A1BG", "A1CF", "GAPDH", "ACTB"], 27855) == [1, 3, 7125, 227]
    assert cellfm_gene_ids(["A1BG", "A1CF", "GAPDH", "ACTB"], 24078) == [1, 2, 6235, 207]
    with pytest.raises(KeyError, match="NOT-A-GENE"):
        cellfm_gene_ids(["NOT-A-GENE"])
    with pytest.raises(ValueError, match="vocabulary"):
        cellfm_vocab(12345)


def test_cli_version():
    from sthinge._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert main([]) == 1  # no command: help and a non-zero exit


@pytest.mark.slow
def test_cli_demo_synthetic_report(tmp_path):
    import pandas as pd

    from sthinge._cli import main

    out = tmp_path / "report"
    assert main(["demo", "--synthetic", "--quiet", "--epochs", "1", "--samples", "1", "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "PCC-50" in summary and "HINGE" in summary and "ridge" in summary
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["method"]) == {"HINGE", "ridge"}
    assert metrics["pcc50"].notna().all()
    for name in ("spatial.png", "coexpression.png", "history.png", "metrics.md"):
        assert (out / name).is_file()
    assert (out / "predictions.zarr").is_dir()


def test_cli_demo_bad_section(tmp_path, capsys):
    from sthinge._cli import main

    assert main(["demo", "--synthetic", "--held-out", "S99", "--out", str(tmp_path / "r")]) == 2
    assert "--held-out" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    from sthinge._utils import _atomic_path

    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with _atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with _atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
