"""Loading CellFM weights from port state dicts, MindSpore .ckpt files and sthinge backbone files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cellfm = pytest.importorskip("sthinge.models.cellfm")

from sthinge.io import (  # noqa: E402
    inspect_mindspore_ckpt,
    load_cellfm,
    read_mindspore_ckpt,
    save_cellfm,
    write_mindspore_ckpt,
)

CellFM = cellfm.CellFM


def _randomise(model, seed: int = 0):
    """Give every tensor distinct random values (LayerNorm weights are 1/0 after init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return _randomise(CellFM.from_preset("tiny"))


def _ms_names(state):
    """PyTorch port names -> MindSpore tags (LayerNorm weight/bias -> gamma/beta)."""
    out = {}
    for k, v in state.items():
        if ".post_norm" in k and k.endswith(".weight"):
            k = k[: -len("weight")] + "gamma"
        elif ".post_norm" in k and k.endswith(".bias"):
            k = k[: -len("bias")] + "beta"
        out[k] = v.numpy()
    return out


def _inputs(model, seed=1, B=2, L=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size + 1, (B, L), generator=g)
    values = torch.rand(B, L, generator=g) * 3
    pad = torch.zeros(B, L)
    pad[1, 8:] = 1
    ids = ids * (1 - pad.long())
    visible = (torch.rand(B, L, generator=g) > 0.3).float()
    return ids, values, visible, pad


def _assert_same_module(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _mindspore_file(tmp_path, model, name="w.ckpt"):
    """The model as an original-style MindSpore checkpoint: gamma/beta, optimizer entries, chunked gene_emb."""
    tensors = _ms_names(model.state_dict())
    extra = {
        "global_step": np.int32(1000),
        "learning_rate": np.float32(1e-4),
        "beta1_power": np.float32(0.9),
        "beta2_power": np.float32(0.95),
    }
    for tag in ("gene_emb", "encoder.0.post_norm1.gamma", "value_dec.w2.weight"):
        extra[f"moment1.{tag}"] = np.zeros_like(tensors[tag])
        extra[f"moment2.{tag}"] = np.ones_like(tensors[tag])
    extra.update(
        {
            "current_iterator_step": np.int32(5),
            "last_overflow_iterator_step": np.int32(0),
            "adam_m.cls_token": np.zeros(3, np.float32),
            "accu_grads.gene_emb": np.zeros(2, np.float32),
        }
    )
    path = tmp_path / name
    write_mindspore_ckpt(path, {**tensors, **extra}, chunk_bytes=1 << 20)  # gene_emb (7.1 MB) -> 7 chunks
    return path


# ---------------------------------------------------------------------------------------------------------------------
# the two original formats load to identical modules


def test_port_state_dict_and_mindspore_ckpt_load_identically(tmp_path, tiny):
    torch.save(tiny.state_dict(), tmp_path / "port.pt")
    ms_path = _mindspore_file(tmp_path, tiny)
    tags = inspect_mindspore_ckpt(ms_path)
    assert "encoder.1.post_norm2.beta" in tags and "moment1.gene_emb" in tags

    a = load_cellfm(tmp_path / "port.pt", n_heads=4)
    b = load_cellfm(ms_path, n_heads=4)
    for m in (a, b):
        assert not m.training
        assert m.config.n_layers == 2 and m.config.d_model == 64 and m.config.n_heads == 4
        assert m.config.vocab_size == 27_855 and not m.config.st_tokens
        assert (m.config.leaky_relu_slope, m.config.ln_eps) == (0.2, 1e-7)  # "cellfm" numerics
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in m.parameters())
    _assert_same_module(a, b)
    _assert_same_module(a, tiny)
    x = _inputs(a)
    with torch.no_grad():
        ya, ca = a(*x)
        yb, cb = b(*x)
        yt, ct = tiny(*x)
    assert torch.equal(ya, yb) and torch.equal(ca, cb)
    torch.testing.assert_close(ya, yt)
    assert torch.isfinite(ya).all()


def test_large_files_use_the_meta_device(tmp_path, tiny, monkeypatch):
    from sthinge.io import _cellfm

    torch.save(tiny.state_dict(), tmp_path / "port.pt")
    monkeypatch.setattr(_cellfm, "_META_MIN_NUMEL", 0)
    built_on = []
    real_init = CellFM.__init__

    def spy(self, config):
        built_on.append(torch.empty(0).device.type)
        real_init(self, config)

    monkeypatch.setattr(CellFM, "__init__", spy)
    m = load_cellfm(tmp_path / "port.pt", preset="tiny")
    assert built_on == ["meta"]
    assert not any(p.is_meta for p in m.parameters()) and not any(b.is_meta for b in m.buffers())
    _assert_same_module(m, tiny)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_and_prefixed_state_dicts(tmp_path, tiny, wrapper):
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    torch.save({wrapper: state, "epoch": 3}, tmp_path / "w.pth")
    _assert_same_module(load_cellfm(tmp_path / "w.pth", preset="tiny"), tiny)


def test_preset_supplies_heads_and_dtype_casting(tmp_path, tiny):
    torch.save({k: v.half() for k, v in tiny.state_dict().items()}, tmp_path / "half.pt")
    m = load_cellfm(tmp_path / "half.pt", preset="tiny")
    assert m.config.n_heads == 4 and m.config.name == "tiny"
    assert all(p.dtype == torch.float32 for p in m.parameters())
    torch.testing.assert_close(m.gene_emb, tiny.gene_emb.half().float(), rtol=0, atol=0)
    m64 = load_cellfm(tmp_path / "half.pt", preset="tiny", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m64.parameters())


def test_bfloat16_ckpt_is_widened(tmp_path, tiny):
    tensors = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in _ms_names(tiny.state_dict()).items()}
    write_mindspore_ckpt(tmp_path / "bf.ckpt", tensors)
    m = load_cellfm(tmp_path / "bf.ckpt", n_heads=4)
    torch.testing.assert_close(m.value_dec.w1.weight, tiny.value_dec.w1.weight.bfloat16().float(), rtol=0, atol=0)


def test_hinge_official_numerics(tmp_path, tiny):
    torch.save(tiny.state_dict(), tmp_path / "port.pt")
    m = load_cellfm(tmp_path / "port.pt", n_heads=4, numerics="hinge-official")
    assert (m.config.leaky_relu_slope, m.config.ln_eps) == (0.01, 1e-6)
    assert m.encoder[0].post_norm1.eps == 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# inference of the configuration


def _minimal_state(rows: int, d: int = 8, n_layers: int = 1, st_tokens: bool = False, n_bins: int = 4):
    """A CellFM state dict with arbitrary values, for shape-inference tests."""
    g = np.random.default_rng(0)

    def r(*shape):
        return g.standard_normal(shape).astype(np.float32)

    state = {
        "gene_emb": r(rows, d),
        "cls_token": r(1, 1, d),
        "zero_emb": r(1, 1, d),
        "value_enc.mask_emb": r(1, 1, d),
        "value_enc.value_enc.w1.weight": r(n_bins, 1),
        "value_enc.value_enc.w3.weight": r(n_bins, n_bins),
        "value_enc.value_enc.table.weight": r(d, n_bins),
        "value_enc.value_enc.a": r(1, 1),
    }
    if st_tokens:
        state.update(
            {
                "ST_emb": r(1, 2, d),
                "ST_enc.w1.weight": r(n_bins, 1),
                "ST_enc.w3.weight": r(n_bins, n_bins),
                "ST_enc.table.weight": r(d, n_bins),
                "ST_enc.a": r(1, 1),
            }
        )
    for i in range(n_layers):
        for p in "qkvuo":
            state[f"encoder.{i}.attn.{p}_proj.weight"] = r(d, d)
        for f in "uvo":
            state[f"encoder.{i}.ffn.{f}_proj.weight"] = r(d, d)
        for n in (1, 2):
            state[f"encoder.{i}.post_norm{n}.gamma"] = r(d)
            state[f"encoder.{i}.post_norm{n}.beta"] = r(d)
    state.update({"value_dec.w1.weight": r(d, d), "value_dec.w2.weight": r(1, d), "cellwise_dec.map.weight": r(d, d)})
    return state


@pytest.mark.parametrize(("rows", "vocab", "st_tokens"), [(24_080, 24_078, False), (27_856, 27_855, True)])
def test_vocabulary_layers_bins_and_st_tokens_are_inferred(tmp_path, rows, vocab, st_tokens):
    write_mindspore_ckpt(tmp_path / "v.ckpt", _minimal_state(rows, n_layers=3, st_tokens=st_tokens))
    m = load_cellfm(tmp_path / "v.ckpt", n_heads=2)
    assert m.config.vocab_size == vocab and m.config.n_emb_rows == rows
    assert m.config.n_layers == 3 and m.config.d_model == 8 and m.config.n_bins == 4
    assert m.config.st_tokens is st_tokens and hasattr(m, "ST_emb") is st_tokens
    np.testing.assert_array_equal(m.gene_emb.detach().numpy(), read_mindspore_ckpt(tmp_path / "v.ckpt")["gene_emb"])


def test_default_head_count_is_48(tmp_path):
    write_mindspore_ckpt(tmp_path / "h.ckpt", _minimal_state(24_080, d=96))
    assert load_cellfm(tmp_path / "h.ckpt").config.n_heads == 48
    write_mindspore_ckpt(tmp_path / "h8.ckpt", _minimal_state(24_080, d=8))
    with pytest.raises(ValueError, match=r"width 8 is not divisible by 48 heads.*n_heads="):
        load_cellfm(tmp_path / "h8.ckpt")


def test_unknown_vocabulary_is_refused(tmp_path):
    write_mindspore_ckpt(tmp_path / "v.ckpt", _minimal_state(1000))
    with pytest.raises(ValueError, match=r"v\.ckpt.*'gene_emb' has 1,000 rows.*24,080.*27,856"):
        load_cellfm(tmp_path / "v.ckpt", n_heads=2)


def test_preset_mismatch_names_what_differs(tmp_path, tiny):
    torch.save(tiny.state_dict(), tmp_path / "port.pt")
    with pytest.raises(ValueError, match=r"does not match preset 'cellfm-800m'") as info:
        load_cellfm(tmp_path / "port.pt", preset="cellfm-800m")
    msg = str(info.value)
    assert "layers 2 (file) vs 40 (preset)" in msg
    assert "width 64 (file) vs 1536 (preset)" in msg
    assert "vocabulary 27855 (file) vs 24078 (preset)" in msg
    with pytest.raises(ValueError, match=r"S-T tokens False \(file\) vs True"):
        load_cellfm(tmp_path / "port.pt", preset="cellfm-80m")
    with pytest.raises(ValueError, match="Unknown preset"):
        load_cellfm(tmp_path / "port.pt", preset="huge")


# ---------------------------------------------------------------------------------------------------------------------
# clear errors


def test_wrong_key_names(tmp_path, tiny):
    state = dict(tiny.state_dict())
    state["encoder.0.attn.query.weight"] = state.pop("encoder.0.attn.q_proj.weight")
    state["extra_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt.? does not fit") as info:
        load_cellfm(tmp_path / "bad.pt", preset="tiny")
    msg = str(info.value)
    assert "missing keys [encoder.0.attn.q_proj.weight] (1 in all)" in msg
    assert "unexpected keys [encoder.0.attn.query.weight, extra_head.weight] (2 in all)" in msg


def test_many_missing_keys_are_abbreviated(tmp_path, tiny):
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("encoder.1.")}
    state["encoder.1.attn.q_proj.weight"] = tiny.state_dict()["encoder.1.attn.q_proj.weight"]
    torch.save(state, tmp_path / "few.pt")
    with pytest.raises(ValueError, match=r"missing keys \[encoder\.1\.attn\.k_proj\.weight, .*\] \(11 in all\)"):
        load_cellfm(tmp_path / "few.pt", preset="tiny")


def test_strict_false_warns_and_keeps_init(tmp_path, tiny, caplog):
    state = dict(tiny.state_dict())
    del state["cellwise_dec.map.weight"]
    state["lora.A.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "partial.pt")
    logger = logging.getLogger("sthinge")
    logger.addHandler(caplog.handler)
    try:
        m = load_cellfm(tmp_path / "partial.pt", preset="tiny", strict=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert "cellwise_dec.map.weight" in caplog.text and "lora.A.weight" in caplog.text
    assert m.cellwise_dec.map.weight.device.type == "cpu" and torch.isfinite(m.cellwise_dec.map.weight).all()
    assert torch.equal(m.gene_emb, tiny.gene_emb)


def test_wrong_shapes(tmp_path, tiny):
    state = dict(tiny.state_dict())
    state["encoder.0.attn.q_proj.weight"] = torch.zeros(64, 32)
    state["value_dec.w2.weight"] = torch.zeros(64)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"2 tensor\(s\) have the wrong shape") as info:
        load_cellfm(tmp_path / "shape.pt", preset="tiny", strict=False)
    assert "encoder.0.attn.q_proj.weight [64, 32] (file) vs [64, 64] (model)" in str(info.value)
    assert "value_dec.w2.weight [64] (file) vs [1, 64] (model)" in str(info.value)


def test_not_a_cellfm_checkpoint(tmp_path):
    torch.save({"retentionblocks.0.attn.q_proj.weight": torch.zeros(2, 2)}, tmp_path / "hinge.pt")
    with pytest.raises(ValueError, match=r"no 'gene_emb'.*official HINGE checkpoint"):
        load_cellfm(tmp_path / "hinge.pt")
    state = _minimal_state(24_080, n_layers=3)
    state = {k: v for k, v in state.items() if not k.startswith("encoder.1.")}
    write_mindspore_ckpt(tmp_path / "gap.ckpt", state)
    with pytest.raises(ValueError, match=r"encoder layers \[1\] are missing"):
        load_cellfm(tmp_path / "gap.ckpt", n_heads=2)
    torch.save({"epoch": 1, "optimizer": 2}, tmp_path / "nostate.pt")
    with pytest.raises(ValueError, match="no state dict found"):
        load_cellfm(tmp_path / "nostate.pt")
    (tmp_path / "text.dat").write_bytes(b"hello, world")
    with pytest.raises(ValueError, match="neither a PyTorch file"):
        load_cellfm(tmp_path / "text.dat")
    with pytest.raises(FileNotFoundError):
        load_cellfm(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("kind", ["pt", "ckpt"])
def test_truncated_files(tmp_path, tiny, kind):
    if kind == "pt":
        torch.save(tiny.state_dict(), tmp_path / "full")
    else:
        write_mindspore_ckpt(tmp_path / "full", _ms_names(tiny.state_dict()))
    data = (tmp_path / "full").read_bytes()
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: len(data) // 2 + 3])
    with pytest.raises(ValueError, match=r"cut\.(pt|ckpt).*(truncated|corrupt)"):
        load_cellfm(path, preset="tiny")


# ---------------------------------------------------------------------------------------------------------------------
# sthinge's own backbone format


@pytest.mark.parametrize("fmt", ["pt", "ckpt", "safetensors"])
def test_save_and_reload_without_arguments(tmp_path, tiny, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    path = save_cellfm(tiny, tmp_path / f"backbone.{fmt}")
    assert [p.name for p in tmp_path.iterdir()] == [f"backbone.{fmt}"]
    m = load_cellfm(path)
    assert m.config == tiny.config  # heads (4), numerics and name come from the file
    _assert_same_module(m, tiny)
    assert not m.training
    if fmt == "ckpt":  # MindSpore names, config in a str entry
        tags = inspect_mindspore_ckpt(path)
        assert "encoder.0.post_norm1.gamma" in tags and "encoder.0.post_norm1.weight" not in tags
        assert tags["sthinge_config"] == ((), "str")
    assert load_cellfm(path, preset="tiny").config.n_heads == 4
    with pytest.raises(ValueError, match="does not match preset 'cellfm-800m'"):
        load_cellfm(path, preset="cellfm-800m")


def test_own_format_records_any_vocabulary_and_numerics(tmp_path):
    config = cellfm.CellFMConfig(
        n_layers=1, d_model=16, n_heads=2, vocab_size=10, n_bins=8, name="custom", leaky_relu_slope=0.01, ln_eps=1e-6
    )
    model = CellFM(config)
    _randomise(model)
    for fmt in ("pt", "ckpt"):
        path = save_cellfm(model, tmp_path / "own.bin", format=fmt, overwrite=True)
        m = load_cellfm(path)
        assert m.config == config and m.config.n_emb_rows == 16
        _assert_same_module(m, model)
    # a plain CellFM file of the same shapes is refused: its vocabulary is not one of CellFM's
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="16 rows"):
        load_cellfm(tmp_path / "plain.pt", n_heads=2)


def test_save_format_argument(tmp_path, tiny):
    with pytest.raises(ValueError, match="format"):
        save_cellfm(tiny, tmp_path / "x.pt", format="onnx")
    path = save_cellfm(tiny, tmp_path / "x.ckpt")
    assert "sthinge_config" in inspect_mindspore_ckpt(path)


def test_saved_config_with_unknown_field_is_refused(tmp_path, tiny):
    import dataclasses

    torch.save(
        {
            "format": "sthinge-cellfm",
            "format_version": 1,
            "config": {**dataclasses.asdict(tiny.config), "rotary": True},
            "state_dict": tiny.state_dict(),
        },
        tmp_path / "future.pt",
    )
    with pytest.raises(ValueError, match=r"fields this sthinge does not know: \['rotary'\]"):
        load_cellfm(tmp_path / "future.pt")
    torch.save(
        {"format": "sthinge-cellfm", "format_version": 99, "config": {}, "state_dict": tiny.state_dict()},
        tmp_path / "newer.pt",
    )
    with pytest.raises(ValueError, match="version 99 is newer"):
        load_cellfm(tmp_path / "newer.pt")


def test_800m_preset_mismatch_is_cheap(tmp_path):
    # the 800M preset check happens on shapes only: a mismatching file is refused before any allocation
    write_mindspore_ckpt(tmp_path / "small.ckpt", _minimal_state(24_080))
    with pytest.raises(ValueError, match=r"layers 1 \(file\) vs 40 \(preset\); width 8 \(file\) vs 1536"):
        load_cellfm(tmp_path / "small.ckpt", preset="cellfm-800m")
