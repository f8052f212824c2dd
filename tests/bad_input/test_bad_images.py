"""Bad images: pixel values that would be misread (too bright, too dark, NaN, negative) by ``pp.embed_histology``
and ``pp.make_grid``.

One rule (``sthinge.pp._tiles.pixel_range``, documented on the "Your data" page) decides how an image's values are
read, from its dtype and its value range on the coarsest pyramid level, before any work: what it cannot read
without guessing is refused with an error naming the image, and the user's object is left as it was. The tiles
actually read are checked again, so a NaN only on the finest level raises the same error instead of turning black.
Where a reading is accepted (floats holding 0..255, uint16 holding 8-bit or 16-bit values, other integer types
holding 0..255), the result must equal that of the same image as uint8, and the assumption must be logged.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from bad_input_suite import Registry, run_case

import sthinge as st

REGISTRY = Registry()
case = REGISTRY.case
EMBEDDING = "X_he-stats"


def _image(seed: int = 0) -> np.ndarray:
    """A (64, 64, 3) uint8 image whose values reach 254, for the Visium-layout AnnData of the suite."""
    return (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)


def _pixels(sdata, key: str) -> np.ndarray:
    """Level 0 of a SpatialData image as a (c, y, x) numpy array."""
    element = sdata.images[key]
    if hasattr(element, "children"):
        element = element["scale0"]["image"]
    return np.asarray(element.data)


def _set_image(sdata, key: str, array: np.ndarray, *, scale_factors=None, level0=None) -> None:
    """Replace image ``key`` by ``array`` (c, y, x), keeping its transformations; ``level0`` (same shape) then
    replaces the values of the finest pyramid level only, so the coarser levels do not see them."""
    import dask.array as da
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    transformations = get_transformation(sdata.images[key], get_all=True)
    element = Image2DModel.parse(
        array,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=scale_factors,
        transformations=dict(transformations),
    )
    if level0 is not None:
        element["scale0"]["image"].data = da.from_array(level0, chunks=(3, 256, 256))
    sdata.images[key] = element


def _spot_pixel(sdata, section: str = "S1") -> tuple[int, int]:
    """(y, x) of the first spot centre of ``section`` in image pixels (the synthetic data's shapes are pixels)."""
    point = sdata.shapes[f"{section}_spots"].geometry.iloc[0]
    return int(point.y), int(point.x)


# ---------------------------------------------------------------------------------------------------------------
# refused: the value range decided on the (coarsest level of the) image
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"image_key.*'lib/hires' \(float32\) holds values 0\.\.508: floats are read as \[0, 1\] or 0\.\.255"
    r".*`image / 65535`",
)
def embed_float_image_over_255(env):
    a = env.visium(image=_image().astype(np.float32) * 2)
    return a, lambda: st.pp.embed_histology(a)


@case(ValueError, r"image_key.*'lib/hires' holds 2 NaN pixel value\(s\); .*does not guess.*np\.nan_to_num")
def embed_nan_pixels(env):
    img = _image().astype(np.float32) / 255
    img[5, 7, :2] = np.nan
    a = env.visium(image=img)
    return a, lambda: st.pp.embed_histology(a)


@case(ValueError, r"image_key.*'lib/hires' holds 1 NaN and 3 infinite pixel value\(s\)")
def embed_inf_pixels(env):
    img = _image().astype(np.float64)
    img[0, 0, 0] = np.nan
    img[10, 10, :] = [np.inf, -np.inf, np.inf]
    a = env.visium(image=img)
    return a, lambda: st.pp.embed_histology(a)


@case(ValueError, r"image_key.*'lib/hires' \(float32\) holds negative values \(min -0\.2\).*never clipped silently")
def embed_negative_float_pixels(env):
    img = _image().astype(np.float32) / 255
    img[3, 3, 1] = -0.2
    a = env.visium(image=img)
    return a, lambda: st.pp.embed_histology(a)


@case(ValueError, r"image_key.*'lib/hires' \(int16\) holds negative values \(min -3\)")
def embed_negative_int16_pixels(env):
    img = _image().astype(np.int16)
    img[30, 30, 2] = -3
    a = env.visium(image=img)
    return a, lambda: st.pp.embed_histology(a)


@case(
    ValueError,
    r"image_key.*'lib/hires' \(int32\) holds values 0\.\.1000: integer images other than uint16 must "
    r"hold 8-bit values",
)
def embed_int32_beyond_8_bit(env):
    img = _image().astype(np.int32)
    img[1, 2, 0] = 1000
    a = env.visium(image=img)
    return a, lambda: st.pp.embed_histology(a)


@case(
    ValueError,
    r"image_key.*'S2_image' \(float32\) holds values .*\.\.300 on its coarsest pyramid level "
    r"\(\d+ x \d+ px\)",
)
def embed_float_pyramid_over_255(env):
    img = _pixels(env.sdata, "S2_image").astype(np.float32)
    img[:, :20, :20] = 300.0
    _set_image(env.sdata, "S2_image", img, scale_factors=[2])
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


# ---------------------------------------------------------------------------------------------------------------
# refused: values the coarsest level does not show, found in the tiles actually read
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"image_key.*'S1_image' holds 3 NaN pixel value\(s\) in a tile of section 'S1' \(pyramid level 0\)")
def embed_nan_only_in_level0_tile(env):
    img = _pixels(env.sdata, "S1_image").astype(np.float32) / 255
    level0 = img.copy()
    y, x = _spot_pixel(env.sdata)
    level0[:, y, x] = np.nan
    _set_image(env.sdata, "S1_image", img, scale_factors=[2], level0=level0)
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


@case(
    ValueError,
    r"image_key.*'S1_image' \(uint16\) holds values up to 4000 in a tile of section 'S1' \(pyramid "
    r"level 0\), beyond the range '0-255 \(uint16, 8-bit values\)' decided on its coarsest",
)
def embed_uint16_level0_beyond_coarse_range(env):
    img = _pixels(env.sdata, "S1_image").astype(np.uint16)
    level0 = img.copy()
    y, x = _spot_pixel(env.sdata)
    level0[0, y, x] = 4000
    _set_image(env.sdata, "S1_image", img, scale_factors=[2], level0=level0)
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


# ---------------------------------------------------------------------------------------------------------------
# pp.make_grid: the same rule for tissue detection
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"image_key.*'S1_image' \(float64\) holds values \d+\.\.510: floats are read as \[0, 1\] or 0\.\.255")
def grid_float_image_over_255(env):
    img = _pixels(env.sdata, "S1_image").astype(np.float64)
    img[0, 0, 0] = 510.0
    _set_image(env.sdata, "S1_image", img)
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=150.0)


@case(ValueError, r"image_key.*'S1_image' holds 1 NaN pixel value\(s\) on pyramid level 0")
def grid_nan_only_in_tissue_level(env):
    img = _pixels(env.sdata, "S1_image").astype(np.float32)
    level0 = img.copy()
    level0[1, 40, 50] = np.nan
    _set_image(env.sdata, "S1_image", img, scale_factors=[2], level0=level0)
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=150.0)


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 10


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_image(env, make, exc, match):
    run_case(env, make, exc, match)


def test_value_range_refused_before_any_work(env, monkeypatch):
    """A refused value range is decided before the encoder is built or a tile is read."""
    from sthinge.pp import _embed, _tiles

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the image's value range was decided")

    monkeypatch.setattr(_embed, "_build_encoders", no_work)
    monkeypatch.setattr(_tiles, "iter_crops", no_work)
    for make in (
        embed_float_image_over_255,
        embed_nan_pixels,
        embed_negative_int16_pixels,
        embed_float_pyramid_over_255,
    ):
        obj, call = make(env)
        with pytest.raises(ValueError, match="image_key"):
            call()


# ---------------------------------------------------------------------------------------------------------------
# accepted, with the same result as the canonical uint8 image, and the assumption logged
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def sthinge_log(caplog, monkeypatch):
    """The records of the "sthinge" logger (it does not propagate, so caplog's handler is attached to it)."""
    logger = logging.getLogger("sthinge")
    monkeypatch.setattr(st.settings, "verbosity", 2)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def _image_messages(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"image {name!r}:")]


FORMS = {  # form: (uint8 image -> this form, value_range label, what the INFO message says; None: no message)
    "float32 0-255": (lambda u: u.astype(np.float32), "0-255 (float)", "read as 0..255 grey levels, not as [0, 1]"),
    "float64 0-255": (lambda u: u.astype(np.float64), "0-255 (float)", "read as 0..255 grey levels, not as [0, 1]"),
    "uint16 8-bit": (
        lambda u: u.astype(np.uint16),
        "0-255 (uint16, 8-bit values)",
        "uint16 with values 0..254 (max <= 255), read as 8-bit grey levels",
    ),
    "uint16 16-bit": (
        lambda u: u.astype(np.uint16) * 257,
        "0-65535 (uint16)",
        "read as 16-bit: 0..65535 scaled to 0..255",
    ),
    "int64 8-bit": (lambda u: u.astype(np.int64), "0-255 (int64)", "read as 8-bit grey levels"),
    "float32 0-1": (lambda u: u.astype(np.float32) / 255, "0-1 (float)", None),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_embed_reads_image_forms_as_uint8(env, sthinge_log, form):
    convert, label, message = FORMS[form]
    img = _image()
    reference = env.visium(image=img)
    st.pp.embed_histology(reference)
    a = env.visium(image=convert(img))
    sthinge_log.clear()
    st.pp.embed_histology(a)
    np.testing.assert_array_equal(a.obsm[EMBEDDING], reference.obsm[EMBEDDING])
    assert reference.uns[EMBEDDING]["value_range"] == {"all": "0-255 (uint8)"}
    assert a.uns[EMBEDDING]["value_range"] == {"all": label}
    logged = _image_messages(sthinge_log, "lib/hires")
    if message is None:
        assert logged == []
    else:
        assert len(logged) == 1 and message in logged[0], logged


def test_embed_reads_float_pyramid_as_uint8(env, sthinge_log):
    """The SpatialData path: a multiscale float image holding 0..255 embeds as the uint8 image does."""
    want = st.pp.embed_histology(env.sdata, copy=True).tables["table"]
    for key in ("S1_image", "S2_image"):
        _set_image(env.sdata, key, _pixels(env.sdata, key).astype(np.float32), scale_factors=[2])
    sthinge_log.clear()
    got = st.pp.embed_histology(env.sdata, copy=True).tables["table"]
    np.testing.assert_array_equal(got.obsm[EMBEDDING], want.obsm[EMBEDDING])
    assert got.uns[EMBEDDING]["value_range"] == {"S1": "0-255 (float)", "S2": "0-255 (float)"}
    assert len(_image_messages(sthinge_log, "S1_image")) == 1


def test_make_grid_reads_float_0_255_as_uint8(env, sthinge_log):
    reference = st.pp.make_grid(env.sdata, "S1_image", spacing_um=60.0, inplace=False)
    img = _pixels(env.sdata, "S1_image")
    _set_image(env.sdata, "S1_image", img.astype(np.float32))
    sthinge_log.clear()
    out = st.pp.make_grid(env.sdata, "S1_image", spacing_um=60.0, inplace=False)
    want, got = reference.tables["S1_grid_table"], out.tables["S1_grid_table"]
    assert 0 < got.n_obs < (300 / (60.0 / 4.0)) ** 2  # tissue only: some grid points, not all
    np.testing.assert_array_equal(got.obsm["spatial"], want.obsm["spatial"])
    assert list(got.obs_names) == list(want.obs_names)
    logged = _image_messages(sthinge_log, "S1_image")
    assert len(logged) == 1 and "read as 0..255 grey levels" in logged[0], logged
