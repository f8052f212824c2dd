"""Bad command lines: ``sthinge demo`` checks every option before any work, and never loses the user's files.

Each refused command must exit with code 2, print ``sthinge: error: ...`` naming the option (``--samples``,
``--out``, ...) and nothing else, and start no work: loading data, downloading and training are replaced by
functions that fail the test if called. The files the command points at (``--out``, ``--data``) are snapshotted
before the call and compared byte for byte afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_suite import assert_unchanged, snapshot

import sthinge.datasets
import sthinge.datasets._her2st
import sthinge.tl
import sthinge.tl._backbone
import sthinge.tl._pretrain
from sthinge._cli import _demo_options, build_parser, main
from sthinge._demo import CLI_NAMES, REPORT_FILES, check_demo_args, run_demo


def _work_started(*args, **kwargs):
    raise AssertionError("work started")


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Every step of the demo that reads data, downloads or trains fails the test; the cwd is a fresh folder."""
    for module, name in (
        (sthinge.datasets, "synthetic"),
        (sthinge.datasets, "her2st"),
        (sthinge.tl, "fit"),
        (sthinge.datasets._her2st, "_download"),
        (sthinge.tl._backbone, "default_backbone"),
        (sthinge.tl._pretrain, "pretrain_backbone"),
    ):
        monkeypatch.setattr(module, name, _work_started)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def _file(tmp: Path, name: str = "notes.txt", text: str = "the user's notes\n") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _folder(tmp: Path, name: str = "results", files: tuple[str, ...] = ("a.csv", "sub/b.txt")) -> Path:
    folder = tmp / name
    for f in files:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_text(f"contents of {f}\n")
    return folder


def _report(tmp: Path) -> str:
    return str(tmp / "report")


# each case: tmp -> (argv after "demo", the user's path to compare afterwards, the option the error names)
CASES = {
    "samples_negative": lambda t: (["--synthetic", "--samples", "-1", "--out", _report(t)], None, "--samples"),
    "samples_zero": lambda t: (["--synthetic", "--samples", "0", "--out", _report(t)], None, "--samples"),
    "steps_above_T": lambda t: (["--synthetic", "--steps", "99", "--out", _report(t)], None, "--steps"),
    "steps_zero": lambda t: (["--synthetic", "--steps", "0", "--out", _report(t)], None, "--steps"),
    "epochs_zero": lambda t: (["--synthetic", "--epochs", "0", "--out", _report(t)], None, "--epochs"),
    "seed_negative": lambda t: (["--synthetic", "--seed", "-1", "--out", _report(t)], None, "--seed"),
    "seed_above_uint32": lambda t: (["--synthetic", "--seed", str(2**32), "--out", _report(t)], None, "--seed"),
    "held_out_unknown": lambda t: (["--synthetic", "--held-out", "Z9", "--out", _report(t)], None, "--held-out"),
    "held_out_real_section_with_synthetic": lambda t: (
        ["--synthetic", "--held-out", "C2", "--out", _report(t)],
        None,
        "--held-out",
    ),
    "held_out_synthetic_section_on_her2st": lambda t: (["--held-out", "S1", "--out", _report(t)], None, "--held-out"),
    "data_missing_folder": lambda t: (["--data", str(t / "missing"), "--out", _report(t)], None, "--data"),
    "data_is_a_file": lambda t: (["--data", str(_file(t)), "--out", _report(t)], t / "notes.txt", "--data"),
    "data_without_her2st_files": lambda t: (["--data", str(_folder(t)), "--out", _report(t)], t / "results", "--data"),
    "data_with_synthetic": lambda t: (
        ["--synthetic", "--data", str(_folder(t)), "--out", _report(t)],
        t / "results",
        "--data",
    ),
    "out_existing_file": lambda t: (["--synthetic", "--out", str(_file(t))], t / "notes.txt", "--out"),
    "out_existing_file_overwrite": lambda t: (
        ["--synthetic", "--out", str(_file(t)), "--overwrite"],
        t / "notes.txt",
        "--out",
    ),
    "out_non_empty_folder": lambda t: (["--synthetic", "--out", str(_folder(t))], t / "results", "--out"),
    "out_non_empty_folder_names_overwrite": lambda t: (
        ["--synthetic", "--out", str(_folder(t))],
        t / "results",
        "--overwrite",
    ),
    "out_overwrite_folder_with_other_files": lambda t: (
        ["--synthetic", "--out", str(_folder(t, files=("summary.md", "thesis.tex"))), "--overwrite"],
        t / "results",
        "--out",
    ),
    "out_under_a_file": lambda t: (["--synthetic", "--out", str(_file(t) / "report")], t / "notes.txt", "--out"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused_before_any_work(name, no_work, capsys):
    tmp = no_work
    argv, user_path, option = CASES[name](tmp)
    before = snapshot(user_path) if user_path is not None else None
    listing = sorted(p.relative_to(tmp) for p in tmp.rglob("*"))
    rc = main(["demo", *argv])
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert captured.err.startswith("sthinge: error: "), captured.err
    assert option in captured.err, captured.err
    assert "`n_" not in captured.err and "path=" not in captured.err  # Python names are not CLI options
    assert captured.out == ""  # refused before printing anything else
    if user_path is not None:
        assert_unchanged(before, user_path)
    assert sorted(p.relative_to(tmp) for p in tmp.rglob("*")) == listing  # nothing created, nothing removed


def test_no_data_names_the_options(no_work, monkeypatch, capsys):
    """No --data, nothing in STHINGE_DATA_DIR or the cache, and no network: the error says what to pass."""
    from sthinge import settings

    tmp = no_work
    empty = tmp / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("STHINGE_DATA_DIR", str(empty))
    monkeypatch.setattr(settings, "_datadir", None)
    calls = []

    def offline(sections, cache):
        calls.append(list(sections))
        try:
            raise ConnectionError("network is unreachable")
        except ConnectionError as err:
            raise FileNotFoundError("Could not download ...; pass it as `path=`") from err

    monkeypatch.setattr(sthinge.datasets._her2st, "_download", offline)
    rc = main(["demo", "--out", _report(tmp)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("sthinge: error: ")
    for name in ("--data", "--synthetic", "STHINGE_DATA_DIR", "network is unreachable"):
        assert name in err, err
    assert "path=" not in err
    assert calls == [["C2", "C3", "C4", "C5", "C6"]]  # the download was tried; loading and training were not
    assert not (tmp / "report").exists()
    assert list(empty.iterdir()) == []


def test_out_is_the_current_folder(no_work, capsys):
    """``--out . --overwrite`` inside an earlier report folder would replace the folder the user stands in."""
    cwd = Path.cwd()
    (cwd / "summary.md").write_text("an earlier report\n")
    before = snapshot(cwd)
    assert main(["demo", "--synthetic", "--out", ".", "--overwrite"]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err and "current folder" in captured.err, captured.err
    assert_unchanged(before, cwd)


def test_out_is_the_data_dir(no_work, monkeypatch, capsys):
    """``--overwrite`` never replaces the folder the data come from, even when it looks like a report."""
    from sthinge import settings

    data = _folder(no_work, "data", files=("summary.md",))
    monkeypatch.setenv("STHINGE_DATA_DIR", str(data))
    monkeypatch.setattr(settings, "_datadir", None)
    before = snapshot(data)
    assert main(["demo", "--synthetic", "--out", str(data), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "STHINGE_DATA_DIR" in err, err
    assert_unchanged(before, data)


def test_python_entry_point_checks_first(no_work):
    """``run_demo`` has the same guarantees, with the Python argument names."""
    tmp = no_work
    with pytest.raises(ValueError, match=r"`n_samples` must be >= 1"):
        run_demo(synthetic=True, n_samples=0, out=tmp / "report")
    with pytest.raises(ValueError, match=r"`n_steps` must be <= 50"):
        run_demo(synthetic=True, n_steps=51, out=tmp / "report")
    with pytest.raises(TypeError, match=r"`max_epochs` must be an integer"):
        run_demo(synthetic=True, max_epochs=2.5, out=tmp / "report")
    folder = _folder(tmp)
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match=r"`out` .* not empty; pass `overwrite=True`"):
        run_demo(synthetic=True, out=folder)
    with pytest.raises(TypeError, match=r"`say` must be a callable"):
        run_demo(synthetic=True, out=tmp / "report", say="loud")
    assert_unchanged(before, folder)
    assert not (tmp / "report").exists()


def test_defaults_are_accepted(tmp_path, monkeypatch):
    """The checker accepts run_demo's and the command line's defaults (in a folder without a report yet)."""
    from sthinge.models import HingeConfig

    monkeypatch.chdir(tmp_path)
    checked = check_demo_args()
    assert checked["held_out"] == "C2" and checked["out"] == Path("sthinge-report") and checked["n_steps"] is None
    args = build_parser().parse_args(["demo"])
    checked = check_demo_args(names=CLI_NAMES, **_demo_options(args))
    assert checked["n_steps"] == 10 <= HingeConfig.n_steps
    assert check_demo_args(synthetic=True, n_steps=HingeConfig.n_steps)["held_out"] == "S1"
    assert list(tmp_path.iterdir()) == []  # checking writes nothing


def test_accepted_out_folders(tmp_path):
    """A new folder, an empty one, and an earlier report with ``--overwrite`` pass the check unchanged."""
    (tmp_path / "empty").mkdir()
    report = _folder(tmp_path, "old-report", files=REPORT_FILES[:3] + ("predictions.zarr/.zgroup",))
    before = snapshot(report)
    for out, overwrite in ((tmp_path / "new" / "report", False), (tmp_path / "empty", False), (report, True)):
        assert check_demo_args(synthetic=True, out=out, overwrite=overwrite)["out"] == out
    assert_unchanged(before, report)
    assert not (tmp_path / "new").exists()


def test_help_states_the_rules(capsys):
    from sthinge.models import HingeConfig

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "new or empty" in text
    assert f"T={HingeConfig.n_steps}" in text  # the help's T is the sampler's
