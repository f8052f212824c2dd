"""Tiny models and stubs shared by the model tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from sthinge.models import CellFM, Hinge, HingeConfig


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine torch's default pool is ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_hinge(n_genes: int = 12, cond_dim: int = 6, n_layers: int = 2, d_model: int = 32, **config) -> Hinge:
    """A small random HINGE model (vocabulary shrunk to keep it fast)."""
    backbone = CellFM.from_preset("tiny", n_layers=n_layers, d_model=d_model, vocab_size=100, n_bins=16)
    gene_ids = torch.randperm(100)[:n_genes] + 1
    return Hinge(backbone, gene_ids, HingeConfig(n_genes=n_genes, cond_dim=cond_dim, **config))


@pytest.fixture(name="make_hinge")
def _make_hinge_fixture():
    """The factory :func:`make_hinge` (tests/ is not a package, so helpers travel as fixtures)."""
    return make_hinge


@pytest.fixture
def tiny_hinge() -> Hinge:
    torch.manual_seed(0)
    return make_hinge()


@dataclass(frozen=True)
class _StubConfig:
    mask_fill: str = "gauss"
    n_steps: int = 50
    n_genes: int = 10
    schedule: str = "poly_auto"
    zeta: float | None = None
    k_tail: int = 1
    masking: str = "exact"
    likelihood: str = "point"
    likelihood_loss: str = "crps"


class RecordingModel(nn.Module):
    """Stands in for Hinge in sampler/loss tests: records every call, returns distinct random predictions."""

    def __init__(self, n_genes: int = 10, **config) -> None:
        super().__init__()
        self.config = _StubConfig(n_genes=n_genes, **config)
        self.n_genes = n_genes
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[dict] = []

    def forward(self, x_t, t, next_visible, visible, cond):
        out = torch.randn(x_t.shape) + 100.0 * t.unsqueeze(1)
        self.calls.append(
            {"x_t": x_t.clone(), "t": t.clone(), "mp": next_visible.clone(), "mt": visible.clone(), "out": out}
        )
        return out


@pytest.fixture(name="recording_model")
def _recording_model_fixture():
    """The class :class:`RecordingModel`."""
    return RecordingModel


class GaussRecordingModel(RecordingModel):
    """A likelihood="gaussian" stand-in: records every call, returns μ ≈ 10 + t and σ = 0.5 + (gene index)/G."""

    def __init__(self, n_genes: int = 10, **config) -> None:
        super().__init__(n_genes, **{"likelihood": "gaussian", **config})

    def forward(self, x_t, t, next_visible, visible, cond, *, return_std=False):
        assert return_std
        mu = 10.0 + t.unsqueeze(1) + 0.1 * torch.randn(x_t.shape)
        sd = (0.5 + torch.arange(self.n_genes) / self.n_genes).expand(x_t.shape[0], -1).clone()
        self.calls.append(
            {"x_t": x_t.clone(), "t": t.clone(), "mt": visible.clone(), "mp": next_visible.clone(), "mu": mu, "sd": sd}
        )
        return mu, sd


@pytest.fixture(name="gauss_recording_model")
def _gauss_recording_model_fixture():
    """The class :class:`GaussRecordingModel`."""
    return GaussRecordingModel
