"""Fixtures of the bad-input suite: one small trained model for the whole session, fresh objects per test."""

from __future__ import annotations

import pytest
import torch
from bad_input_suite import FIT, Env, _fresh, _prepared

import sthinge as st
from sthinge import _constants as K


@pytest.fixture(scope="session")
def base():
    threads, verbosity = torch.get_num_threads(), st.settings.verbosity
    torch.set_num_threads(1)
    st.settings.verbosity = 0
    try:
        sdata = _prepared()
        model = st.tl.fit(sdata, **FIT, max_epochs=1)
    finally:
        st.settings.verbosity = verbosity
        torch.set_num_threads(threads)
    return sdata, model


@pytest.fixture
def env(base, tmp_path):
    sdata, model = base
    fresh = _fresh(sdata)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; the count comes back after the test
    yield Env(sdata=fresh, adata=fresh.tables[K.TABLE_KEY].copy(), model=model, tmp=tmp_path)
    torch.set_num_threads(threads)
