"""Fixtures of the bad-input suite: one small trained model for the whole session, fresh objects per test."""

from __future__ import annotations

import pytest
import torch
from bad_input_suite import FIT, Env, _fresh, _prepared

import sthinge as st
from sthinge import _constants as K


@pytest.fixture(scope="session")
def base():
    torch.set_num_threads(1)
    verbosity = st.settings.verbosity
    st.settings.verbosity = 0
    try:
        sdata = _prepared()
        model = st.tl.fit(sdata, **FIT, max_epochs=1)
    finally:
        st.settings.verbosity = verbosity
    return sdata, model


@pytest.fixture
def env(base, tmp_path):
    sdata, model = base
    fresh = _fresh(sdata)
    torch.set_num_threads(1)
    return Env(sdata=fresh, adata=fresh.tables[K.TABLE_KEY].copy(), model=model, tmp=tmp_path)
