"""UNI / CONCH loaders with random weights saved exactly as the published files (key names, file type)."""

import numpy as np
import pytest
import torch
from pp_helpers import _snapshot, make_sdata, pattern

import sthinge as st
from sthinge.pp import _encoders as E


def _random_like(module_builder, prefix: str = "") -> dict:
    with torch.device("meta"):
        ref = module_builder()
    gen = torch.Generator().manual_seed(0)
    return {prefix + k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in ref.state_dict().items()}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    # UNI: timm state dict of vit_large_patch16_224 (init_values=1e-5 -> layer-scale gammas), pytorch_model.bin
    uni = _random_like(E.build_uni)
    assert "blocks.0.ls1.gamma" in uni and "head.weight" not in uni
    (root / "uni").mkdir()
    torch.save(uni, root / "uni" / "pytorch_model.bin")
    # CONCH: the whole CoCa state dict; the image tower under visual.*, plus caption pooler and text tower
    conch = _random_like(E.build_conch_vision, prefix="visual.")
    pooler_cls = E._conch_classes()[0]
    conch.update(_random_like(lambda: pooler_cls(768, 768, n_head=8, n_queries=256), "visual.attn_pool_caption."))
    conch.update(
        {
            "visual.ln_caption.weight": torch.ones(768),
            "visual.ln_caption.bias": torch.zeros(768),
            "text.token_embedding.weight": torch.randn(16, 768),
            "text.positional_embedding": torch.randn(8, 768),
            "text.text_projection": torch.randn(768, 512),
            "logit_scale": torch.tensor(4.6),
        }
    )
    (root / "conch").mkdir()
    torch.save(conch, root / "conch" / "pytorch_model.bin")
    return {"uni": root / "uni" / "pytorch_model.bin", "conch": root / "conch" / "pytorch_model.bin", "root": root}


@pytest.fixture(scope="module")
def two_spots():
    return make_sdata(pattern(400, 400, 1.0), np.array([[150.0, 150.0], [250.0, 220.0]]), 1.0)


@pytest.fixture(scope="module")
def one_spot():
    return make_sdata(pattern(300, 300, 1.0), np.array([[150.0, 140.0]]), 1.0)


def test_conch_key_names(weight_files):
    sd = torch.load(weight_files["conch"], weights_only=True)
    for key in (
        "visual.trunk.pos_embed",
        "visual.trunk.blocks.11.attn.qkv.weight",
        "visual.attn_pool_contrast.query",
        "visual.attn_pool_contrast.attn.k_proj_weight",
        "visual.ln_contrast.weight",
        "visual.proj_contrast",
    ):
        assert key in sd, key
    assert tuple(sd["visual.trunk.pos_embed"].shape) == (1, 785, 768)  # 448 px / 16 = 28 x 28 + CLS
    assert tuple(sd["visual.attn_pool_contrast.query"].shape) == (1, 512)


def test_uni_conch_and_concatenation(weight_files, one_spot):
    """One ViT-L and one ViT-B forward on one tile: UNI 1024 + CONCH 512 = 1536, in this order."""
    table = one_spot.tables["table"]
    st.pp.embed_histology(
        one_spot,
        encoder="uni+conch",
        device="cpu",
        weights={"uni": weight_files["uni"], "conch": weight_files["conch"]},
    )
    both = table.obsm["X_uni+conch"]
    assert both.shape == (1, 1536)  # embed_histology checks each encoder's output width against its dim
    assert np.isfinite(both).all() and both[:, :1024].std() > 0 and both[:, 1024:].std() > 0
    info = table.uns["X_uni+conch"]
    assert info["dims"] == [1024, 512]
    assert info["input_size"] == [224, 448]
    np.testing.assert_allclose(info["mean"][1], E.OPENAI_CLIP_MEAN)
    np.testing.assert_allclose(info["mean"][0], E.IMAGENET_MEAN)


def test_loaded_weights_are_the_file_weights(weight_files):
    enc = E.uni_encoder(weight_files["uni"])
    sd = torch.load(weight_files["uni"], weights_only=True)
    assert torch.equal(enc.module.state_dict()["blocks.3.mlp.fc1.weight"], sd["blocks.3.mlp.fc1.weight"])


def test_mismatched_weight_files(weight_files, two_spots):
    root = weight_files["root"]
    sd = torch.load(weight_files["uni"], weights_only=True, mmap=True)
    bad = {k: sd[k] for k in list(sd)[:4]}  # the published keys minus most, plus a foreign one
    bad["blocks.0.extra.weight"] = torch.zeros(3)
    torch.save(bad, root / "uni_bad.bin")
    before = _snapshot(two_spots)
    mismatch = r"missing keys \[blocks\.0\.attn\.proj\.bias, .*\] \(338 in all\); unexpected keys \[blocks\.0\.extra"
    with pytest.raises(ValueError, match=mismatch):
        st.pp.embed_histology(two_spots, encoder="uni", weights=root / "uni_bad.bin")
    with pytest.raises(ValueError, match="no 'visual"):
        st.pp.embed_histology(two_spots, encoder="conch", weights=root / "uni_bad.bin")
    wrong = {k: v for k, v in sd.items()}
    wrong["pos_embed"] = torch.zeros(1, 5, 1024)
    with pytest.raises(ValueError, match=r"wrong shape.*pos_embed"):
        E.check_keys({k: v for k, v in sd.items()}, wrong, what="UNI", path="p")
    with pytest.raises(ValueError, match="missing key"):
        st.pp.embed_histology(two_spots, encoder="uni", weights=weight_files["conch"])
    (root / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="state dict"):
        st.pp.embed_histology(two_spots, encoder="uni", weights=root / "junk.bin")
    with pytest.raises(FileNotFoundError, match="weights"):
        st.pp.embed_histology(two_spots, encoder="conch", weights=root / "missing.bin")
    assert _snapshot(two_spots) == before
