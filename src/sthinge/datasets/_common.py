"""Assembling sthinge's SpatialData layout (shared by the Her2ST loader and the synthetic generator)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sthinge import _constants as K


@dataclass
class SectionData:
    """Everything known about one section before it becomes SpatialData elements."""

    name: str
    patient: str
    counts: object  # scipy.sparse.csr_matrix (spots x genes), integer
    genes: list[str]
    barcodes: list[str]
    array_xy: np.ndarray  # (n, 2) int
    pixel_xy: np.ndarray  # (n, 2) float, x then y
    mpp: float
    spot_diameter_um: float
    image: np.ndarray | None = None  # (y, x, 3) uint8
    obs_extra: dict[str, np.ndarray] = field(default_factory=dict)
    obsm_extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: an already-built image element (e.g. the lazy multiscale image of ``io.read_slide``, transformed to the
    #: coordinate system ``name``), used as is instead of ``image``
    image_element: object | None = None


def build_spatialdata(sections: list[SectionData], *, scale_factors=(2, 2, 2)):
    """Build one SpatialData holding images, spot circles and a joint count table for ``sections``."""
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    # union of genes in order of first appearance
    union: dict[str, int] = {}
    for s in sections:
        for g in s.genes:
            union.setdefault(g, len(union))
    n_genes = len(union)
    presence = np.zeros((len(sections), n_genes), dtype=bool)

    images, shapes, blocks, obs_frames, obsm_blocks, meta = {}, {}, [], [], {}, {}
    for i, s in enumerate(sections):
        cols = np.fromiter((union[g] for g in s.genes), dtype=np.int64, count=len(s.genes))
        presence[i, cols] = True
        counts = sp.csr_matrix(s.counts)
        remap = sp.csr_matrix(
            (np.ones(len(cols), dtype=counts.dtype), (np.arange(len(cols)), cols)), shape=(len(cols), n_genes)
        )
        blocks.append((counts @ remap).tocsr())

        cs = s.name
        shapes_key = f"{s.name}{K.SHAPES_SUFFIX}"
        radius_px = s.spot_diameter_um / 2.0 / s.mpp
        n = len(s.barcodes)
        shapes[shapes_key] = ShapesModel.parse(
            np.asarray(s.pixel_xy, dtype=float),
            geometry=0,
            radius=np.full(n, radius_px),
            index=pd.Index(np.arange(n), name=K.INSTANCE_KEY),
            transformations={cs: Identity()},
        )
        image_key = None
        if s.image_element is not None:
            image_key = f"{s.name}{K.IMAGE_SUFFIX}"
            images[image_key] = s.image_element
        elif s.image is not None:
            image_key = f"{s.name}{K.IMAGE_SUFFIX}"
            img = np.ascontiguousarray(np.moveaxis(s.image, -1, 0))  # (c, y, x)
            sf, size = [], min(img.shape[1:])
            for f in scale_factors:  # keep pyramid levels of at least 256 px
                if size // f < 256:
                    break
                size //= f
                sf.append(f)
            images[image_key] = Image2DModel.parse(
                img,
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                scale_factors=list(sf) if sf else None,
                transformations={cs: Identity()},
                chunks=(3, 2048, 2048),
            )
        obs = pd.DataFrame(
            {
                K.SECTION_KEY: s.name,
                K.PATIENT_KEY: s.patient,
                K.ARRAY_X: np.asarray(s.array_xy[:, 0], dtype=int),
                K.ARRAY_Y: np.asarray(s.array_xy[:, 1], dtype=int),
                K.REGION_KEY: shapes_key,
                K.INSTANCE_KEY: np.arange(n),
            },
            index=[f"{s.name}_{b}" for b in s.barcodes],
        )
        for key, values in s.obs_extra.items():
            obs[key] = values
        obs_frames.append(obs)
        for key, values in s.obsm_extra.items():
            obsm_blocks.setdefault(key, []).append(values)
        obsm_blocks.setdefault(K.SPATIAL_KEY, []).append(np.asarray(s.pixel_xy, dtype=float))
        meta[s.name] = {
            "mpp": float(s.mpp),
            "spot_diameter_um": float(s.spot_diameter_um),
            "image": image_key,
            "shapes": shapes_key,
        }

    obs = pd.concat(obs_frames)
    for col in (K.SECTION_KEY, K.PATIENT_KEY, K.REGION_KEY):
        obs[col] = pd.Categorical(obs[col], categories=list(dict.fromkeys(obs[col])))
    if K.LABEL_KEY in obs:
        obs[K.LABEL_KEY] = pd.Categorical(obs[K.LABEL_KEY].astype("object"))
    genes = list(union)
    names = [s.name for s in sections]
    var = pd.DataFrame(
        {
            K.VAR_N_SECTIONS: presence.sum(axis=0).astype(int),
            K.VAR_SECTIONS: [",".join(n for n, p in zip(names, col) if p) for col in presence.T],
        },
        index=pd.Index(genes, name=None),
    )
    X = sp.vstack(blocks, format="csr")
    X.sort_indices()
    adata = ad.AnnData(X=X, obs=obs, var=var)
    for key, values in obsm_blocks.items():
        adata.obsm[key] = np.concatenate(values, axis=0)
    adata.uns[K.UNS_SECTIONS] = meta
    table = TableModel.parse(
        adata,
        region=[meta[n]["shapes"] for n in names],
        region_key=K.REGION_KEY,
        instance_key=K.INSTANCE_KEY,
    )
    return SpatialData(images=images, shapes=shapes, tables={K.TABLE_KEY: table})
