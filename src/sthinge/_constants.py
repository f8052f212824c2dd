"""Default keys used across sthinge.

Every key that a function writes by default is defined here, so that ``pp``, ``tl`` and ``pl`` agree on
where to find each other's results.
"""

from __future__ import annotations

# --- SpatialData elements -------------------------------------------------------------------------
TABLE_KEY = "table"  #: default table name in a SpatialData object
IMAGE_SUFFIX = "_image"  #: image element of section S is f"{S}{IMAGE_SUFFIX}"
SHAPES_SUFFIX = "_spots"  #: shapes element of section S is f"{S}{SHAPES_SUFFIX}"
GRID_SUFFIX = "_grid"  #: pseudo-spot shapes written by ``pp.make_grid``

# --- table columns ----------------------------------------------------------------------------------
REGION_KEY = "region"  #: obs column naming the shapes element a row annotates
INSTANCE_KEY = "spot_id"  #: obs column holding the shape's index
SECTION_KEY = "section"  #: obs column with the section (slide) name
PATIENT_KEY = "patient"  #: obs column with the patient / donor
ARRAY_X, ARRAY_Y = "array_x", "array_y"  #: obs columns with array (grid) coordinates
LABEL_KEY = "label"  #: obs column with pathologist labels, where they exist
SPATIAL_KEY = "spatial"  #: obsm key with spot centres in image pixels (x, y)

# var columns written by the dataset loaders
VAR_N_SECTIONS = "n_sections"
VAR_SECTIONS = "sections"

# --- uns --------------------------------------------------------------------------------------------
UNS_SECTIONS = "sthinge_sections"  #: per-section metadata: {"mpp", "spot_diameter_um", "image", "shapes"}

# --- pp -----------------------------------------------------------------------------------------------
GENES_KEY = "sthinge_genes"  #: var column (bool) and uns entry (ordered panel) written by ``pp.select_genes``
NORM_LAYER = "sthinge_log1p"  #: layer written by ``pp.normalize``
UNS_NORMALIZE = "sthinge_normalize"  #: uns entry describing the transform written by ``pp.normalize``
DEFAULT_ENCODER = "he-stats"


def embedding_key(encoder: str) -> str:
    """Return the obsm key that ``pp.embed_histology`` writes for ``encoder``."""
    return f"X_{encoder}"


# --- tl -----------------------------------------------------------------------------------------------
PRED_KEY = "sthinge"  #: layer / table key of the predicted mean
STD_SUFFIX = "_std"  #: f"{PRED_KEY}{STD_SUFFIX}": predicted standard deviation
SAMPLES_SUFFIX = "_samples"  #: f"{PRED_KEY}{SAMPLES_SUFFIX}": individual samples (obsm)

# --- physical constants of the assays -------------------------------------------------------------------
HER2ST_SPOT_DIAMETER_UM = 100.0
HER2ST_SPOT_SPACING_UM = 200.0

#: ``precision`` values accepted by ``tl.fit`` and ``tl.pretrain_backbone`` (None: bf16-mixed on a GPU that has it)
PRECISIONS = (None, "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "bf16-true")
