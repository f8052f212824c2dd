"""Bad model and backbone files: what ``HingeModel.save``/``load`` and ``io.save_cellfm``/``load_cellfm`` refuse.

Writers never replace an existing file or a non-empty folder unless ``overwrite=True`` (and a file is never replaced
by a folder); the loader validates every field of a model file before building anything, with one clear error that
names the file and the field. Each refusal leaves the files and folders involved byte-identical (``run_case``
snapshots a path byte by byte). The tests at the end check what must still work: an exact round trip, and
``overwrite=True`` replacing only ``model.pt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_suite import FIT, Registry, _fresh, run_case

import sthinge as st

REGISTRY = Registry()
case = REGISTRY.case


@pytest.fixture(scope="module")
def backed(base, tmp_path_factory):
    """A model whose frozen backbone came from a file (saved as a reference: path + sha256), and that file."""
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    sdata, _ = base
    folder = tmp_path_factory.mktemp("backed")
    torch.manual_seed(0)
    path = save_cellfm(CellFM.from_preset("tiny"), folder / "backbone.pt")
    verbosity = st.settings.verbosity
    st.settings.verbosity = 0
    try:
        model = st.tl.fit(_fresh(sdata), **{**FIT, "backbone": path}, max_epochs=1)
    finally:
        st.settings.verbosity = verbosity
    assert model.backbone_source["kind"] == "file"
    return model, path


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _payload(env) -> dict:
    from sthinge.io import safe_torch_load

    return safe_torch_load(env.model_dir / "model.pt")


def _write_payload(env, payload) -> Path:
    folder = env.tmp / "edited"
    folder.mkdir()
    torch.save(payload, folder / "model.pt")
    return folder


def _edited(env, **fields) -> Path:
    """The saved model with some fields of its payload replaced, in a folder of its own."""
    payload = _payload(env)
    payload.update(fields)
    return _write_payload(env, payload)


def _backed_dir(env) -> tuple[Path, Path]:
    """The file-backed model saved in this test's folder, referring to its own copy of the backbone file."""
    from sthinge.io import safe_torch_load

    model, source = env.backed
    bfile = env.tmp / "backbone.pt"
    shutil.copyfile(source, bfile)
    folder = model.save(env.tmp / "backed")
    payload = safe_torch_load(folder / "model.pt")
    payload["backbone"]["path"] = str(bfile)
    torch.save(payload, folder / "model.pt")
    return folder, bfile


def _backbone_file(env, name="backbone.pt") -> Path:
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    torch.manual_seed(0)
    return save_cellfm(CellFM.from_preset("tiny"), env.tmp / name)


def _load(folder, **kwargs):
    return lambda: st.tl.HingeModel.load(folder, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.save: never replaces what is there unless asked
# ---------------------------------------------------------------------------------------------------------------
@case(FileExistsError, r"`path` '.*model' is a folder that is not empty; pass `overwrite=True`")
def save_without_overwrite(env):
    return env.model_dir, lambda: env.model.save(env.model_dir)


@case(FileExistsError, r"`path` '.*results\.csv' is an existing file, not a folder; it is never replaced by a folder")
def save_over_existing_file(env):
    file = env.tmp / "results.csv"
    file.write_text("gene,pcc\nA,0.5\n")
    return file, lambda: env.model.save(file, overwrite=True)


@case(FileExistsError, r"`path` '.*project' is a folder that is not empty; pass `overwrite=True`")
def save_into_non_empty_folder(env):
    folder = env.tmp / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("do not lose me")
    return folder, lambda: env.model.save(folder)


@case(FileExistsError, r"`path` '.*project': '.*model\.pt' is a folder, not a model file; it is never replaced")
def save_where_model_pt_is_a_folder(env):
    folder = env.tmp / "project"
    (folder / "model.pt").mkdir(parents=True)
    (folder / "model.pt" / "keep.txt").write_text("mine")
    return folder, lambda: env.model.save(folder, overwrite=True)


@case(TypeError, r"`overwrite` must be True or False, got 'yes'")
def save_overwrite_not_bool(env):
    return env.model_dir, lambda: env.model.save(env.model_dir, overwrite="yes")


@case(TypeError, r"`path` must be a path, got int")
def save_path_wrong_type(env):
    return env.tmp, lambda: env.model.save(3)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.load: the file itself
# ---------------------------------------------------------------------------------------------------------------
@case(FileNotFoundError, r"`path` '.*gone': no sthinge model")
def load_missing_folder(env):
    return env.tmp, _load(env.tmp / "gone")


@case(ValueError, r"model\.pt' is truncated or not a valid PyTorch file")
def load_truncated_model(env):
    file = env.model_dir / "model.pt"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 3])
    return env.model_dir, _load(env.model_dir)


@case(ValueError, r"model\.pt' is empty")
def load_empty_model_file(env):
    (env.model_dir / "model.pt").write_bytes(b"")
    return env.model_dir, _load(env.model_dir)


@case(ValueError, r"is not a sthinge model file \(missing \['state_dict'\]\)")
def load_wrong_key_names(env):
    payload = _payload(env)
    payload["weights"] = payload.pop("state_dict")
    folder = _write_payload(env, payload)
    return folder, _load(folder)


@case(ValueError, r"weight 'cond_embed\.\S+' has shape \[7, \d+\], the model expects \[\d+, \d+\]")
def load_shape_mismatch(env):
    payload = _payload(env)
    name = next(k for k, v in payload["state_dict"].items() if k.startswith("cond_embed") and v.ndim == 2)
    payload["state_dict"][name] = torch.zeros(7, payload["state_dict"][name].shape[1])
    folder = _write_payload(env, payload)
    return folder, _load(folder)


@case(ValueError, r"holds unexpected weights: \['not_a_layer\.weight'\]")
def load_unexpected_weight(env):
    payload = _payload(env)
    payload["state_dict"]["not_a_layer.weight"] = torch.zeros(2)
    folder = _write_payload(env, payload)
    return folder, _load(folder)


@case(ValueError, r"`device` must be one of .*got 0.5")
def load_device_wrong_type(env):
    return env.model_dir, _load(env.model_dir, device=0.5)


@case(ValueError, r"weight 'cond_embed\.\S+' of 'state_dict' holds 1 NaN or infinite value")
def load_nan_weight(env):
    payload = _payload(env)
    name = next(k for k, v in payload["state_dict"].items() if k.startswith("cond_embed") and v.ndim == 2)
    payload["state_dict"][name][0, 0] = float("nan")
    folder = _write_payload(env, payload)
    return folder, _load(folder)


@case(ValueError, r"weight '\S+' of 'state_dict' holds 1 NaN or infinite value")
def load_inf_in_first_weight(env):
    payload = _payload(env)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name].view(-1)[0] = float("inf")
    folder = _write_payload(env, payload)
    return folder, _load(folder)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.load: version and format
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"model\.pt' was written by sthinge 9\.0\.0 \(model format 2\), a newer format than this sthinge "
    r"\S+ reads \(format 1\); upgrade sthinge",
)
def load_future_format(env):
    folder = _edited(env, format=2, version="9.0.0")
    return folder, _load(folder)


@case(ValueError, r"model\.pt' is not a sthinge model file \(missing \['format'\]")
def load_without_format(env):
    payload = _payload(env)
    del payload["format"]
    folder = _write_payload(env, payload)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'format' must be a positive integer .*got '1'")
def load_format_not_int(env):
    folder = _edited(env, format="1")
    return folder, _load(folder)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.load: genes
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"model\.pt': field 'var_names' holds duplicated names \['[^']+'\] \(1 in all\)")
def load_duplicated_var_names(env):
    names = list(env.model.genes)
    names[3] = names[0]
    folder = _edited(env, var_names=names)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'var_names' has 11 names, but the model has 12 gene ids 'gg'")
def load_var_names_shorter_than_gene_ids(env):
    folder = _edited(env, var_names=list(env.model.genes)[:-1])
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'var_names' holds 1 empty name\(s\) \(first at position 2\)")
def load_empty_var_name(env):
    names = list(env.model.genes)
    names[2] = ""
    folder = _edited(env, var_names=names)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'var_names' must be a list of strings, got str")
def load_var_names_not_a_list(env):
    folder = _edited(env, var_names="ABC")
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'symbols' has 13 names, but the model has 12 gene ids 'gg'")
def load_symbols_longer_than_gene_ids(env):
    folder = _edited(env, symbols=[*env.model.symbols, "EXTRA"])
    return folder, _load(folder)


@case(
    ValueError,
    r"model\.pt': field 'symbols' does not match the gene ids 'gg': 2 gene\(s\) differ, e\.g\. gene "
    r"'[^']+' \(symbol '[^']+'\) has id \d+ in the backbone's vocabulary but id \d+ in the file",
)
def load_symbols_swapped(env):
    symbols = list(env.model.symbols)
    symbols[0], symbols[1] = symbols[1], symbols[0]
    folder = _edited(env, symbols=symbols)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': gene ids 'gg' must lie in 1\.\.27855 \(the backbone's vocabulary\), got 1\.\.\d+")
def load_gene_id_outside_vocabulary(env):
    payload = _payload(env)
    payload["state_dict"]["gg"] = payload["state_dict"]["gg"].clone()
    payload["state_dict"]["gg"][0] = 1
    payload["state_dict"]["gg"][1] = 30_000
    folder = _write_payload(env, payload)
    return folder, _load(folder)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.load: the embedding standardisation and the other fields
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"model\.pt': field 'cond_mean' holds 1 NaN or infinite value\(s\) \(first at index 1\)")
def load_nan_cond_mean(env):
    mean = torch.as_tensor(env.model.cond_mean).clone()
    mean[1] = float("nan")
    folder = _edited(env, cond_mean=mean)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'cond_std' must be > 0 everywhere .*got 0\.0 at index 2")
def load_zero_cond_std(env):
    std = torch.as_tensor(env.model.cond_std).clone()
    std[2] = 0.0
    folder = _edited(env, cond_std=std)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'cond_std' must be > 0 everywhere .*got -1\.0 at index 0")
def load_negative_cond_std(env):
    std = torch.as_tensor(env.model.cond_std).clone()
    std[0] = -1.0
    folder = _edited(env, cond_std=std)
    return folder, _load(folder)


@case(
    ValueError,
    r"model\.pt': field 'cond_std' has shape \[4\], but the model's embedding width "
    r"\(config\.cond_dim\) is 5",
)
def load_cond_std_wrong_length(env):
    folder = _edited(env, cond_std=torch.ones(4))
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'cond_mean' has shape \[1, 5\]")
def load_cond_mean_two_dimensional(env):
    folder = _edited(env, cond_mean=torch.zeros(1, 5))
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'embedding_key' must be a non-empty string, got ''")
def load_empty_embedding_key(env):
    folder = _edited(env, embedding_key="")
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'layer' must be a string or None, got int")
def load_layer_wrong_type(env):
    folder = _edited(env, layer=3)
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'train_sections' must be a list of strings")
def load_train_sections_wrong_type(env):
    folder = _edited(env, train_sections=[1, 2])
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'history' must be a list of dicts of numbers")
def load_history_wrong_type(env):
    folder = _edited(env, history=[{"epoch": 0, "loss": "low"}])
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'transform' must be a dict, got list")
def load_transform_wrong_type(env):
    folder = _edited(env, transform=["log1p"])
    return folder, _load(folder)


@case(ValueError, r"model\.pt': field 'backbone' must be a dict with 'kind' 'file' or 'weights'")
def load_unknown_backbone_kind(env):
    folder = _edited(env, backbone={"kind": "url", "path": "https://example.org/w.pt"})
    return folder, _load(folder)


@case(ValueError, r"model\.pt': 'state_dict' holds 12 gene ids 'gg', but field 'config' says n_genes=13")
def load_config_gene_count_mismatch(env):
    payload = _payload(env)
    payload["config"]["n_genes"] = 13
    folder = _write_payload(env, payload)
    return folder, _load(folder)


# ---------------------------------------------------------------------------------------------------------------
# HingeModel.load: the `backbone` argument
# ---------------------------------------------------------------------------------------------------------------
@case(FileNotFoundError, r"`backbone` '.*moved\.pt' does not exist")
def load_missing_backbone_for_file_backed_model(env):
    folder, _ = _backed_dir(env)
    return env.tmp, _load(folder, backbone=env.tmp / "moved.pt")


@case(FileNotFoundError, r"`backbone` '.*moved\.pt' does not exist")
def load_missing_backbone_for_weights_model(env):
    return env.model_dir, _load(env.model_dir, backbone=env.tmp / "moved.pt")


@case(
    ValueError,
    r"`backbone` does not apply: '.*model\.pt' stores its own backbone weights, so the argument is "
    r"not used",
)
def load_backbone_for_weights_model(env):
    bfile = _backbone_file(env)
    return env.tmp, _load(env.model_dir, backbone=bfile)


@case(
    IsADirectoryError,
    r"`backbone` '.*weights' is a folder but not an scGPT checkpoint folder \(no args\.json\); pass the "
    r"backbone file inside it",
)
def load_backbone_is_a_folder(env):
    folder, _ = _backed_dir(env)
    (env.tmp / "weights").mkdir()
    return env.tmp, _load(folder, backbone=env.tmp / "weights")


@case(TypeError, r"`backbone` must be the path of a backbone file, got int")
def load_backbone_wrong_type(env):
    return env.model_dir, _load(env.model_dir, backbone=5)


@case(FileNotFoundError, r"frozen backbone '.*backbone\.pt' is missing; pass `backbone=` with its new location")
def load_file_backed_model_whose_backbone_was_moved(env):
    folder, bfile = _backed_dir(env)
    bfile.rename(env.tmp / "elsewhere.pt")
    return env.tmp, _load(folder)


@case(
    ValueError,
    r"Backbone file '.*other\.pt' has sha256 \w+\.\.\., but the model was trained on \w+\.\.\.; it is "
    r"not the same backbone",
)
def load_file_backed_model_with_another_backbone(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    folder, _ = _backed_dir(env)
    torch.manual_seed(1)
    other = save_cellfm(CellFM.from_preset("tiny"), env.tmp / "other.pt")
    return env.tmp, _load(folder, backbone=other)


@case(ValueError, r"model\.pt': field 'backbone' of a file-backed model needs a 'path' and a 'sha256' string")
def load_file_backed_model_without_path(env):
    from sthinge.io import safe_torch_load

    folder, _ = _backed_dir(env)
    payload = safe_torch_load(folder / "model.pt")
    del payload["backbone"]["path"]
    torch.save(payload, folder / "model.pt")
    return env.tmp, _load(folder)


# ---------------------------------------------------------------------------------------------------------------
# io: CellFM backbones
# ---------------------------------------------------------------------------------------------------------------
@case(FileNotFoundError, r"CellFM checkpoint '.*absent\.ckpt' does not exist")
def cellfm_missing_file(env):
    from sthinge.io import load_cellfm

    return env.tmp, lambda: load_cellfm(env.tmp / "absent.ckpt")


@case(ValueError, r"backbone\.pt' is truncated or not a valid PyTorch file")
def cellfm_truncated_file(env):
    from sthinge.io import load_cellfm

    path = _backbone_file(env)
    path.write_bytes(path.read_bytes()[:-4000])
    return path, lambda: load_cellfm(path)


@case(ValueError, r"no 'gene_emb' tensor, so this is not a CellFM checkpoint")
def cellfm_wrong_key_names(env):
    from sthinge.io import load_cellfm

    path = env.tmp / "renamed.pt"
    torch.save({"embedding.weight": torch.zeros(8, 4), "encoder.0.w": torch.zeros(2)}, path)
    return path, lambda: load_cellfm(path)


@case(ValueError, r"Unknown preset 'cellfm-1b'")
def cellfm_unknown_preset(env):
    from sthinge.io import load_cellfm

    path = _backbone_file(env)
    return path, lambda: load_cellfm(path, preset="cellfm-1b")


@case(ValueError, r"does not match preset 'cellfm-80m': width 64 \(file\) vs 1536 \(preset\)")
def cellfm_preset_mismatch(env):
    from sthinge.io import load_cellfm

    path = _backbone_file(env)
    return path, lambda: load_cellfm(path, preset="cellfm-80m")


@case(ValueError, r"1 tensor\(s\) have the wrong shape: gene_emb \[\d+, 32\] \(file\) vs \[\d+, 64\] \(model\)")
def cellfm_shape_mismatch(env):
    from sthinge.io import load_cellfm, safe_torch_load

    path = _backbone_file(env)
    payload = safe_torch_load(path)
    payload["state_dict"]["gene_emb"] = payload["state_dict"]["gene_emb"][:, :32].clone()
    torch.save(payload, path)
    return path, lambda: load_cellfm(path)


@case(ValueError, r"`format` must be 'pt', 'ckpt' or 'safetensors', got 'onnx'")
def save_cellfm_unknown_format(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    net = CellFM.from_preset("tiny")
    return net, lambda: save_cellfm(net, env.tmp / "b.onnx", format="onnx")


@case(FileExistsError, r"`path` '.*backbone\.pt' already exists; pass `overwrite=True` to replace it")
def save_cellfm_over_existing_file(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    path = _backbone_file(env)
    torch.manual_seed(1)
    other = CellFM.from_preset("tiny")
    return env.tmp, lambda: save_cellfm(other, path)


@case(FileExistsError, r"`path` '.*CellFM_80M_weight\.ckpt' already exists; pass `overwrite=True` to replace it")
def save_cellfm_ckpt_over_existing_file(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    path = env.tmp / "CellFM_80M_weight.ckpt"
    path.write_bytes(b"the published weights")
    net = CellFM.from_preset("tiny")
    return env.tmp, lambda: save_cellfm(net, path)


@case(FileExistsError, r"`path` '.*weights' is an existing folder; give a file name")
def save_cellfm_onto_a_folder(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    folder = env.tmp / "weights"
    folder.mkdir()
    (folder / "CellFM_80M_weight.ckpt").write_bytes(b"the real weights")
    net = CellFM.from_preset("tiny")
    return env.tmp, lambda: save_cellfm(net, folder, overwrite=True)


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 40


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_model_file(env, backed, make, exc, match):
    env.backed = backed
    run_case(env, make, exc, match)


# ---------------------------------------------------------------------------------------------------------------
# what must still work
# ---------------------------------------------------------------------------------------------------------------
def _assert_same_model(a, b) -> None:
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    assert a.genes == b.genes and a.symbols == b.symbols and a.embedding_key == b.embedding_key
    np.testing.assert_array_equal(a.cond_mean, b.cond_mean)
    np.testing.assert_array_equal(a.cond_std, b.cond_std)
    assert a.layer == b.layer and a.history == b.history and a.train_sections == b.train_sections
    assert a.config == b.config


def test_save_load_round_trip_is_exact(env):
    loaded = st.tl.HingeModel.load(env.model_dir)
    _assert_same_model(loaded, env.model)
    assert loaded.backbone_source == env.model.backbone_source
    _assert_same_model(st.tl.HingeModel.load(loaded.save(env.tmp / "again")), env.model)
    # the same model saved twice gives the same bytes (no temporary name inside the file)
    twice = env.model.save(env.tmp / "twice")
    assert (twice / "model.pt").read_bytes() == (env.model_dir / "model.pt").read_bytes()


def test_file_backed_round_trip_and_moved_backbone(env, backed):
    model, _ = backed
    env.backed = backed
    folder, bfile = _backed_dir(env)
    loaded = st.tl.HingeModel.load(folder)
    _assert_same_model(loaded, model)
    moved = bfile.rename(env.tmp / "moved.pt")
    relocated = st.tl.HingeModel.load(folder, backbone=moved)
    _assert_same_model(relocated, model)
    assert relocated.backbone_source["path"] == str(moved)


def test_save_with_overwrite_replaces_only_model_pt(env):
    folder = env.tmp / "project"
    (folder / "figures").mkdir(parents=True)
    notes = folder / "notes.txt"
    notes.write_bytes(b"my notes\x00\xff")
    (folder / "figures" / "a.png").write_bytes(b"\x89PNG fake")
    (folder / "model.pt").write_bytes(b"an older model")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert env.model.save(folder, overwrite=True) == folder
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert sorted(after) == sorted(before)  # nothing added (no temporary file left), nothing removed
    for name, data in before.items():
        if name != Path("model.pt"):
            assert after[name] == data, name
    assert after[Path("model.pt")] == (env.model_dir / "model.pt").read_bytes()
    _assert_same_model(st.tl.HingeModel.load(folder), env.model)


def test_save_into_empty_or_new_folder(env):
    empty = env.tmp / "empty"
    empty.mkdir()
    env.model.save(empty)  # an empty folder is not "something to lose"
    nested = env.model.save(env.tmp / "a" / "b" / "model")
    assert sorted(p.name for p in empty.iterdir()) == sorted(p.name for p in nested.iterdir()) == ["model.pt"]


def test_failed_save_leaves_no_new_folder(env, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="No space"):
        env.model.save(env.tmp / "new" / "model")
    assert list(env.tmp.iterdir()) == []


def test_save_cellfm_overwrite(env):
    from sthinge.io import load_cellfm, save_cellfm
    from sthinge.models import CellFM

    path = _backbone_file(env)
    torch.manual_seed(1)
    other = CellFM.from_preset("tiny")
    assert save_cellfm(other, path, overwrite=True) == path
    assert [p.name for p in env.tmp.iterdir()] == ["backbone.pt"]
    loaded = load_cellfm(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), other.state_dict().values()))


def test_load_accepts_str_and_path(env):
    from sthinge.io import load_cellfm

    path = _backbone_file(env)
    a, b = load_cellfm(path), load_cellfm(str(path))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    m1, m2 = st.tl.HingeModel.load(env.model_dir), st.tl.HingeModel.load(str(env.model_dir / "model.pt"))
    assert m1.genes == m2.genes == env.model.genes
