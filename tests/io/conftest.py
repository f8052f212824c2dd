"""Fixtures shared by the I/O tests."""

import logging

import pytest


@pytest.fixture
def sthinge_log(caplog):
    """The records of the "sthinge" logger (it does not propagate: caplog's handler is attached to it)."""
    logger = logging.getLogger("sthinge")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
