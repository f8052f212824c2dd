"""The scGPT backbone and its loader: parity with a plain-tensor reference written from the published weights.

Each test writes a small checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``) under the published
key names of scGPT's whole-human model, in any of the three attention layouts, with the heads HINGE does not use.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sthinge.io._scgpt import IGNORED_PREFIXES, load_scgpt
from sthinge.models.scgpt import SCGPT_PRESETS, WHOLE_HUMAN_VOCAB_SIZE, ScGPT, ScGPTConfig

D, H, D_HID, N_LAYERS = 64, 4, 48, 2  # d_hid != d_model, so that a swapped feed-forward shape cannot pass
N_GENES = 27
VOCAB = {**{f"G{i}": i for i in range(N_GENES)}, "<pad>": N_GENES, "<cls>": N_GENES + 1, "<eoc>": N_GENES + 2}
PAD, CLS = VOCAB["<pad>"], VOCAB["<cls>"]
ARGS = {  # the fields of a published args.json (tiny shapes)
    "embsize": D,
    "nheads": H,
    "d_hid": D_HID,
    "nlayers": N_LAYERS,
    "dropout": 0.2,
    "pad_token": "<pad>",
    "pad_value": -2,
    "mask_value": -1,
    "n_bins": 51,
    "input_style": "binned",
    "input_emb_style": "continuous",
    "fast_transformer": True,
    "n_layers_cls": 3,
}
LAYOUTS = ("flash", "compat", "torch")


def _linear(gen: torch.Generator, out_f: int, in_f: int, prefix: str) -> dict[str, Tensor]:
    w = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)
    return {f"{prefix}.weight": w, f"{prefix}.bias": 0.1 * torch.randn(out_f, generator=gen)}


def _norm(gen: torch.Generator, prefix: str) -> dict[str, Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.2 * torch.randn(D, generator=gen),
        f"{prefix}.bias": 0.2 * torch.randn(D, generator=gen),
    }


def published_state(layout: str = "flash", seed: int = 0, heads: bool = True) -> dict[str, Tensor]:
    """A random float32 state dict under the published names; attention in ``layout``:
    ``"flash"`` (``self_attn.Wqkv.*``, the published files), ``"compat"`` (``self_attn._impl.*``, scGPT's current
    flash wrapper) or ``"torch"`` (``self_attn.in_proj_*``)."""
    gen = torch.Generator().manual_seed(seed)
    s = {"encoder.embedding.weight": torch.randn(len(VOCAB), D, generator=gen)}
    s |= _norm(gen, "encoder.enc_norm")
    s |= _linear(gen, D, 1, "value_encoder.linear1")
    s["value_encoder.linear1.weight"] = s["value_encoder.linear1.weight"] / 8  # values reach ~50, and 512 when clamped
    s |= _linear(gen, D, D, "value_encoder.linear2")
    s |= _norm(gen, "value_encoder.norm")
    for i in range(N_LAYERS):
        p = f"transformer_encoder.layers.{i}"
        qkv = _linear(gen, 3 * D, D, "qkv")
        out = _linear(gen, D, D, "out")
        if layout == "flash":
            s[f"{p}.self_attn.Wqkv.weight"], s[f"{p}.self_attn.Wqkv.bias"] = qkv["qkv.weight"], qkv["qkv.bias"]
            s[f"{p}.self_attn.out_proj.weight"], s[f"{p}.self_attn.out_proj.bias"] = out.values()
        elif layout == "compat":
            s[f"{p}.self_attn._impl.Wqkv.weight"], s[f"{p}.self_attn._impl.Wqkv.bias"] = qkv.values()
            s[f"{p}.self_attn._impl.out_proj.weight"], s[f"{p}.self_attn._impl.out_proj.bias"] = out.values()
        else:
            s[f"{p}.self_attn.in_proj_weight"], s[f"{p}.self_attn.in_proj_bias"] = qkv.values()
            s[f"{p}.self_attn.out_proj.weight"], s[f"{p}.self_attn.out_proj.bias"] = out.values()
        s |= _linear(gen, D_HID, D, f"{p}.linear1")
        s |= _linear(gen, D, D_HID, f"{p}.linear2")
        s |= _norm(gen, f"{p}.norm1")
        s |= _norm(gen, f"{p}.norm2")
    s |= _linear(gen, D, D, "decoder.fc.0")
    s |= _linear(gen, D, D, "decoder.fc.2")
    s |= _linear(gen, 1, D, "decoder.fc.4")
    if heads:  # what the published whole-human file carries besides the expression path, and a classifier
        s["flag_encoder.weight"] = torch.randn(2, D, generator=gen)
        s |= _linear(gen, D, D, "mvc_decoder.gene2query")
        s["mvc_decoder.W.weight"] = torch.randn(D, D, generator=gen)
        s |= _linear(gen, D, D, "cls_decoder._decoder.0")
        s |= _norm(gen, "cls_decoder._decoder.2")
        s |= _linear(gen, 5, D, "cls_decoder.out_layer")
    return s


def write_folder(folder: Path, state: dict[str, Tensor], args: dict | None = None, vocab: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(ARGS if args is None else args))
    (folder / "vocab.json").write_text(json.dumps(VOCAB if vocab is None else vocab))
    torch.save(state, folder / "best_model.pt")
    return folder


@pytest.fixture(params=LAYOUTS)
def layout(request) -> str:
    return request.param


@pytest.fixture
def checkpoint(tmp_path, layout) -> tuple[Path, dict[str, Tensor]]:
    """A checkpoint folder in ``layout`` with unused heads, and its state dict."""
    state = published_state(layout)
    return write_folder(tmp_path / f"scgpt-{layout}", state), state


def make_batch(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Ids, values and padding (True on pads) for 3 cells of 9 tokens: <cls> first (value pad_value, as scGPT
    feeds it), no padding in row 0, 2 and 5 pads in rows 1 and 2, values above the clamp and scGPT's mask value."""
    gen = torch.Generator().manual_seed(seed)
    B, L = 3, 9
    ids = torch.randint(0, N_GENES, (B, L), generator=gen)
    values = torch.randint(0, 51, (B, L), generator=gen).double()
    values[0, 3], values[1, 2], values[2, 1] = 600.0, 1e4, 513.0  # above the clamp at 512
    values[0, 5] = -1.0  # scGPT's mask_value
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, -2:] = True
    pad[2, -5:] = True
    ids[pad] = PAD
    values[pad] = -2.0  # scGPT's pad_value
    ids[:, 0], values[:, 0] = CLS, -2.0
    return ids, values, pad


# ---------------------------------------------------------------------------------------------------------------------
# the reference: plain tensor operations on the published tensors


def _ln(x: Tensor, s: dict[str, Tensor], prefix: str, eps: float = 1e-5) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * s[f"{prefix}.weight"] + s[f"{prefix}.bias"]


def _affine(x: Tensor, s: dict[str, Tensor], prefix: str) -> Tensor:
    return x @ s[f"{prefix}.weight"].T + s[f"{prefix}.bias"]


def _relu(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.zeros_like(x))


def _leaky(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, 0.01 * x)


def _qkv(s: dict[str, Tensor], p: str) -> tuple[Tensor, Tensor]:
    for w, b in (
        ("Wqkv.weight", "Wqkv.bias"),
        ("_impl.Wqkv.weight", "_impl.Wqkv.bias"),
        ("in_proj_weight", "in_proj_bias"),
    ):
        if f"{p}.self_attn.{w}" in s:
            return s[f"{p}.self_attn.{w}"], s[f"{p}.self_attn.{b}"]
    raise KeyError(p)


def reference_forward(state: dict[str, Tensor], ids: Tensor, values: Tensor, pad: Tensor) -> Tensor:
    """scGPT's masked-value prediction in float64, straight from the file's tensors."""
    s = {k.replace("self_attn._impl.out_proj", "self_attn.out_proj"): v.double() for k, v in state.items()}
    B, L = ids.shape
    dh = D // H
    h = _ln(s["encoder.embedding.weight"][ids], s, "encoder.enc_norm")  # GeneEncoder
    x = torch.minimum(values.double(), torch.tensor(512.0)).unsqueeze(-1)  # clamp from above only
    v = _relu(x * s["value_encoder.linear1.weight"][:, 0] + s["value_encoder.linear1.bias"])
    h = h + _ln(_affine(v, s, "value_encoder.linear2"), s, "value_encoder.norm")
    for i in range(N_LAYERS):
        p = f"transformer_encoder.layers.{i}"
        w, b = _qkv(s, p)
        # rows of Wqkv: [q; k; v], each (heads, head_dim) -- flash-attn's "b s (three h d)" split
        q, k, vv = ((h @ w[j * D : (j + 1) * D].T + b[j * D : (j + 1) * D]).view(B, L, H, dh) for j in range(3))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        scores = scores - scores.amax(-1, keepdim=True)
        att = torch.exp(scores)
        att = att / att.sum(-1, keepdim=True)
        o = torch.einsum("bhqk,bkhd->bqhd", att, vv).reshape(B, L, D)
        h = _ln(h + _affine(o, s, f"{p}.self_attn.out_proj"), s, f"{p}.norm1")  # post-norm
        f = _affine(_relu(_affine(h, s, f"{p}.linear1")), s, f"{p}.linear2")
        h = _ln(h + f, s, f"{p}.norm2")
    y = _leaky(_affine(h, s, "decoder.fc.0"))
    y = _leaky(_affine(y, s, "decoder.fc.2"))
    return _affine(y, s, "decoder.fc.4").squeeze(-1)


# ---------------------------------------------------------------------------------------------------------------------
# parity


def test_parity_with_reference_float64(checkpoint):
    folder, state = checkpoint
    model, vocab = load_scgpt(folder)
    assert vocab == VOCAB
    model = model.double()
    ids, values, pad = make_batch()
    with torch.no_grad():
        out = model(ids, values, pad)
    ref = reference_forward(state, ids, values, pad)
    assert out.dtype == torch.float64 and out.shape == ids.shape
    assert torch.isfinite(out).all()
    assert (out - ref)[~pad].abs().max().item() <= 1e-8
    # the test has teeth: the padding mask and the clamp change the result
    assert (reference_forward(state, ids, values, torch.zeros_like(pad)) - ref)[~pad].abs().max() > 1e-3
    unclamped = values.clone()
    unclamped[0, 3] = 512.0
    with torch.no_grad():
        assert torch.equal(model(ids, unclamped, pad)[0], out[0])


def test_parity_with_gradients_on(tmp_path):
    """The same numbers outside ``no_grad`` (PyTorch's attention fast path is only taken without gradients)."""
    state = published_state("flash", seed=3)
    model, _ = load_scgpt(write_folder(tmp_path / "m", state), dtype=torch.float64)
    ids, values, pad = make_batch(seed=4)
    out = model(ids, values, pad)
    out[~pad].sum().backward()
    assert (out.detach() - reference_forward(state, ids, values, pad))[~pad].abs().max().item() <= 1e-8
    assert model.blocks[0].self_attn.in_proj_weight.grad is not None


def test_layers_match_pytorch_transformer_encoder_layer(checkpoint):
    """scGPT without flash-attn builds ``nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout,
    batch_first=True)`` (model.py L124-127): each block computes the same with the same weights."""
    folder, _ = checkpoint
    model = load_scgpt(folder, dtype=torch.float64)[0]
    ids, values, pad = make_batch()
    x = model.embed(ids, values)
    for block in model.blocks:
        torch_layer = nn.TransformerEncoderLayer(D, H, D_HID, 0.2, batch_first=True).double().eval()
        torch_layer.load_state_dict(block.state_dict())
        with torch.no_grad():
            y, y_ref = block(x, src_key_padding_mask=pad), torch_layer(x, src_key_padding_mask=pad)
        assert (y - y_ref)[~pad].abs().max().item() <= 1e-10
        x = y


def test_pieces_compose_to_forward(checkpoint):
    folder, _ = checkpoint
    model = load_scgpt(folder)[0].double()
    ids, values, pad = make_batch()
    with torch.no_grad():
        x = model.embed(ids, values)
        assert x.shape == (*ids.shape, D)
        assert torch.equal(x, model.embed_genes(ids) + model.encode_values(values))
        for block in model.blocks:
            x = block(x, src_key_padding_mask=pad)
        assert torch.equal(x, model.encode(ids, values, pad))
        assert torch.equal(model.decode(x), model(ids, values, pad))
        # a 0/1 mask means the same as a bool one
        assert torch.equal(model(ids, values, pad.long()), model(ids, values, pad))
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) == N_LAYERS


def test_value_encoder_clamps_only_from_above():
    enc = ScGPT.from_preset("tiny").eval().double().value_encoder
    e = enc(torch.tensor([511.0, 512.0, 600.0, 1e6, -1.0, -2.0], dtype=torch.float64))
    assert torch.equal(e[1], e[2]) and torch.equal(e[1], e[3])
    assert not torch.equal(e[0], e[1])
    assert not torch.equal(e[4], e[5])  # scGPT's mask (-1) and pad (-2) values stay apart


# ---------------------------------------------------------------------------------------------------------------------
# the loader


def test_loader_defaults(checkpoint):
    folder, state = checkpoint
    model, vocab = load_scgpt(folder, device="cpu")
    assert isinstance(model, ScGPT) and not model.training
    assert all(p.dtype == torch.float32 and p.requires_grad and not p.is_meta for p in model.parameters())
    c = model.config
    assert (c.vocab_size, c.d_model, c.n_heads, c.d_hid, c.n_layers) == (len(VOCAB), D, H, D_HID, N_LAYERS)
    assert (c.dropout, c.pad_token_id, c.max_value, c.norm_eps, c.name) == (0.2, PAD, 512.0, 1e-5, folder.name)
    assert model.encoder.embedding.padding_idx == PAD
    # the tensors are the file's
    assert torch.equal(model.state_dict()["decoder.fc.4.weight"], state["decoder.fc.4.weight"])
    wqkv, bqkv = _qkv(state, "transformer_encoder.layers.1")
    assert torch.equal(model.blocks[1].self_attn.in_proj_weight, wqkv)
    assert torch.equal(model.blocks[1].self_attn.in_proj_bias, bqkv)
    assert load_scgpt(folder, dtype=torch.float64)[0].decoder.fc[0].weight.dtype == torch.float64


def test_state_dict_keys_are_the_published_names(tmp_path):
    """A state dict in PyTorch's layout loads with plain ``load_state_dict``; ``state_dict()`` round-trips."""
    state = published_state("torch", heads=False)
    model = ScGPT(ScGPTConfig.from_args_json(ARGS, len(VOCAB), pad_token_id=PAD))
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    reloaded, _ = load_scgpt(write_folder(tmp_path / "m", model.state_dict()))
    ids, values, pad = make_batch()
    assert torch.equal(reloaded.eval()(ids, values, pad), model.eval()(ids, values, pad))


def test_ignored_heads_are_logged_by_name(checkpoint, sthinge_log):
    folder, _ = checkpoint
    sthinge_log.set_level(logging.INFO, logger="sthinge")
    load_scgpt(folder)
    messages = [r.getMessage() for r in sthinge_log.records if r.levelno == logging.INFO]
    [message] = [m for m in messages if "ignoring" in m]
    # 1 (flag_encoder) + 3 (mvc_decoder) + 6 (cls_decoder)
    assert "10 tensor(s)" in message
    assert "flag_encoder (1)" in message and "mvc_decoder (3)" in message and "cls_decoder (6)" in message
    assert {"cls_decoder.", "mvc_decoder.", "flag_encoder.", "grad_reverse_discriminator."} <= set(IGNORED_PREFIXES)


def test_other_heads_are_ignored_too(tmp_path, sthinge_log):
    state = published_state("flash")
    gen = torch.Generator().manual_seed(7)
    state |= _linear(gen, D, D, "grad_reverse_discriminator._decoder.0")
    state |= _linear(gen, D, D, "decoder.zero_logit.0")
    sthinge_log.set_level(logging.INFO, logger="sthinge")
    load_scgpt(write_folder(tmp_path / "m", state))
    message = next(r.getMessage() for r in sthinge_log.records if "ignoring" in r.getMessage())
    assert "grad_reverse_discriminator (2)" in message and "decoder.zero_logit (2)" in message


def _load_error(tmp_path: Path, state: dict[str, Tensor]) -> str:
    with pytest.raises(ValueError) as info:
        load_scgpt(write_folder(tmp_path / "bad", state))
    return str(info.value)


def test_unknown_key_is_an_error(tmp_path):
    state = published_state("flash")
    state["transformer_encoder.layers.0.self_attn.rotary.weight"] = torch.zeros(3)
    message = _load_error(tmp_path, state)
    assert "unexpected keys [transformer_encoder.layers.0.self_attn.rotary.weight]" in message


def test_missing_key_is_an_error(tmp_path):
    state = published_state("flash")
    del state["transformer_encoder.layers.1.norm2.bias"]
    assert "missing keys [transformer_encoder.layers.1.norm2.bias]" in _load_error(tmp_path, state)


def test_misshaped_key_is_an_error(tmp_path):
    state = published_state("flash")
    state["transformer_encoder.layers.0.self_attn.Wqkv.weight"] = torch.zeros(3 * D, D + 1)
    message = _load_error(tmp_path, state)
    assert "1 tensor(s) have the wrong shape" in message
    assert (
        f"transformer_encoder.layers.0.self_attn.Wqkv.weight (as transformer_encoder.layers.0.self_attn.in_proj_weight)"
        f" [{3 * D}, {D + 1}] (file) vs [{3 * D}, {D}] (model)"
    ) in message


def test_all_problems_in_one_error(tmp_path):
    state = published_state("torch")
    state["decoder.fc.6.weight"] = torch.zeros(1, D)
    del state["value_encoder.norm.weight"]
    state["encoder.embedding.weight"] = torch.zeros(len(VOCAB) + 1, D)  # vocab.json and the table disagree
    message = _load_error(tmp_path, state)
    assert "missing keys [value_encoder.norm.weight]" in message
    assert "unexpected keys [decoder.fc.6.weight]" in message
    assert f"encoder.embedding.weight [{len(VOCAB) + 1}, {D}] (file) vs [{len(VOCAB)}, {D}] (model)" in message


def test_wrong_args_shape_is_a_shape_error(tmp_path):
    with pytest.raises(ValueError, match=r"linear1.weight \[48, 64\] \(file\) vs \[64, 64\] \(model\)"):
        load_scgpt(write_folder(tmp_path / "m", published_state("flash"), args=ARGS | {"d_hid": D}))


@pytest.mark.parametrize("prefix", ["dsbn.bns.0.running_mean", "bn.weight", "pert_encoder.weight"])
def test_input_path_modules_are_refused(tmp_path, prefix):
    state = published_state("flash") | {prefix: torch.zeros(D)}
    assert f"{prefix.split('.')[0]} (1 tensors)" in _load_error(tmp_path, state)


def test_two_layouts_for_one_tensor_are_an_error(tmp_path):
    state = published_state("flash")
    state["transformer_encoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(3 * D, D)
    assert "same attention tensor in two layouts" in _load_error(tmp_path, state)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scgpt(tmp_path / "nowhere")
    for name in ("args.json", "vocab.json", "best_model.pt"):
        folder = write_folder(tmp_path / name.replace(".", "_"), published_state("flash"))
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"lacks {name}"):
            load_scgpt(folder)
    with pytest.raises(NotADirectoryError):
        load_scgpt(folder / "args.json")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({k: v for k, v in ARGS.items() if k != "nheads"}, "'nheads'"),
        (ARGS | {"embsize": "64"}, "'embsize'"),
        (ARGS | {"nlayers": 0}, "'nlayers'"),
        (ARGS | {"nheads": 5}, "'embsize'"),
        (ARGS | {"dropout": 1.5}, "'dropout'"),
        (ARGS | {"input_emb_style": "category"}, "'input_emb_style'"),
        (ARGS | {"pre_norm": True}, "'pre_norm'"),
        (ARGS | {"pad_token": "<nothing>"}, "'pad_token'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_args_json(tmp_path, args, field):
    folder = write_folder(tmp_path / "m", published_state("flash"), args=args)
    with pytest.raises(ValueError, match=field) as info:
        load_scgpt(folder)
    assert "args.json" in str(info.value)


def test_bad_json_and_vocab(tmp_path):
    folder = write_folder(tmp_path / "m", published_state("flash"))
    (folder / "args.json").write_text("{not json")
    with pytest.raises(ValueError, match="args.json.*not valid JSON"):
        load_scgpt(folder)
    folder = write_folder(tmp_path / "v", published_state("flash"), vocab=VOCAB | {"<eoc>": 99})
    with pytest.raises(ValueError, match="vocab.json.*must be 0..29"):
        load_scgpt(folder)
    folder = write_folder(tmp_path / "w", {"encoder": [1, 2]})
    with pytest.raises(ValueError, match="not a state dict"):
        load_scgpt(folder)


# ---------------------------------------------------------------------------------------------------------------------
# dropout and presets


def test_dropout_only_in_train_mode(checkpoint):
    folder, _ = checkpoint
    model = load_scgpt(folder, dtype=torch.float64)[0]
    ids, values, pad = make_batch()
    with torch.no_grad():
        assert torch.equal(model(ids, values, pad), model(ids, values, pad))
        model.train()
        torch.manual_seed(0)
        a = model(ids, values, pad)
        b = model(ids, values, pad)
    assert not torch.allclose(a, b)


def test_presets():
    with torch.device("meta"):
        big = ScGPT.from_preset("whole-human")
    c = big.config
    assert (c.vocab_size, c.d_model, c.n_heads, c.d_hid, c.n_layers) == (60_697, 512, 8, 512, 12)
    assert c.vocab_size == WHOLE_HUMAN_VOCAB_SIZE and c.head_dim == 64 and c.max_value == 512.0
    shapes = {k: list(v.shape) for k, v in big.state_dict().items()}
    assert shapes["encoder.embedding.weight"] == [60_697, 512]
    assert shapes["transformer_encoder.layers.11.self_attn.in_proj_weight"] == [1536, 512]
    assert shapes["transformer_encoder.layers.0.linear1.weight"] == [512, 512]
    assert shapes["value_encoder.linear1.weight"] == [512, 1] and shapes["decoder.fc.4.weight"] == [1, 512]
    assert "transformer_encoder.layers.12.norm1.weight" not in shapes
    tiny = SCGPT_PRESETS["tiny"]
    assert (tiny.d_model, tiny.n_layers, tiny.n_heads) == (64, 2, 4)
    assert ScGPTConfig.from_preset("tiny", n_layers=3).n_layers == 3
    with pytest.raises(ValueError, match="preset must be one of"):
        ScGPTConfig.from_preset("mouse")
    with pytest.raises(ValueError, match="not divisible"):
        ScGPTConfig(d_model=60, n_heads=8)


def test_from_args_json():
    c = ScGPTConfig.from_args_json(ARGS, 30, pad_token_id=PAD, name="x")
    assert (c.d_model, c.n_heads, c.d_hid, c.n_layers, c.dropout, c.vocab_size, c.name) == (
        D,
        H,
        D_HID,
        2,
        0.2,
        30,
        "x",
    )
    assert ScGPTConfig.from_args_json({k: v for k, v in ARGS.items() if k != "dropout"}, 30).dropout == 0.2
    assert ScGPTConfig.from_args_json(ARGS | {"embsize": 64.0}, 30).d_model == 64
