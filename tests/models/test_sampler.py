"""Ancestral sampler: reveal order, fixed visible values, budgets, determinism, and the reference sampler."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sthinge.models import MaskSchedule, auto_batch_size, sample, sample_reference
from sthinge.models.sampler import _draws, sampling_steps


def test_sampling_steps():
    assert sampling_steps(50) == list(range(50, 0, -1))
    assert sampling_steps(50, 5) == [50, 38, 26, 13, 1]
    assert sampling_steps(50, 1) == [50]
    assert sampling_steps(7, 2) == [7, 1]
    for T in range(1, 40):
        for K in range(1, T + 1):
            steps = sampling_steps(T, K)
            assert len(steps) == K and steps[0] == T and steps[-1] == (1 if K > 1 else T)
            assert all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match="budget"):
        sampling_steps(50, 51)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_genes=st.integers(2, 40),
    n_steps=st.integers(1, 30),
    budget_frac=st.floats(0.01, 1.0),
    masking=st.sampled_from(["exact", "bernoulli"]),
    n_samples=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_reverse_process_properties(recording_model, n_genes, n_steps, budget_frac, masking, n_samples, seed):
    model = recording_model(n_genes=n_genes, n_steps=n_steps, masking=masking)
    K = max(1, round(budget_frac * n_steps))
    torch.manual_seed(seed)
    cond = torch.randn(3, 2)
    mean, std, samples = sample(
        model, cond, n_steps=K, n_samples=n_samples, generator=torch.Generator().manual_seed(seed), return_samples=True
    )
    assert samples.shape == (3, n_samples, n_genes) and mean.shape == std.shape == (3, n_genes)
    torch.testing.assert_close(mean, samples.mean(1))
    steps = sampling_steps(n_steps, K)
    # every gene ends with a model prediction: outputs are ~100·t, fill values are N(0, 1)
    assert torch.all(samples.abs() > 50)
    final = samples.reshape(-1, n_genes)  # rows = spot-major (spot, sample)
    schedule = MaskSchedule(n_genes, n_steps, masking=masking)
    tau, noise = _draws(schedule, "gauss", final.shape[0], torch.Generator().manual_seed(seed))
    tau = tau.long()
    seen_t = []
    history: dict[int, list] = {}
    for call in model.calls:
        t = int(call["t"][0])
        assert torch.all(call["t"] == t) and t in steps
        t_next = ([*steps, 0])[steps.index(t) + 1]
        seen_t.append(t)
        mt, mp, x_t = call["mt"].bool(), call["mp"].bool(), call["x_t"]
        assert torch.all(mp >= mt)  # masks only grow in the reverse process
        assert torch.all((mp & ~mt).any(1))  # skipped: rows that reveal nothing at this step
        for row in range(x_t.shape[0]):
            # the row is identified by its still-masked entries, which hold its own fill draw
            hits = (noise[:, ~mt[row]] == x_t[row, ~mt[row]]).all(1).nonzero().squeeze(1)
            assert hits.numel() == 1
            r = int(hits[0])
            assert torch.equal(mt[row], tau[r] > t) and torch.equal(mp[row], tau[r] > t_next)
            history.setdefault(r, []).append((mt[row], mp[row]))
            assert torch.equal(x_t[row][mt[row]], final[r][mt[row]])  # visible values never change afterwards
            newly = mp[row] & ~mt[row]
            assert torch.equal(final[r][newly], call["out"][row][newly])
    assert seen_t == sorted(seen_t, reverse=True)
    assert sorted(history) == list(range(final.shape[0]))
    for calls in history.values():
        for (_, mp_prev), (mt_next, _) in zip(calls, calls[1:]):
            assert torch.equal(mp_prev, mt_next)  # each call starts from the previous call's visibility
        assert calls[-1][1].all()  # fully revealed at the end
        assert not calls[0][0].any()  # the first call sees nothing


def test_exact_masking_skips_steps_without_reveals(recording_model):
    G, T = 10, 50
    model = recording_model(n_genes=G, n_steps=T)
    sample(model, torch.randn(4, 2), generator=torch.Generator().manual_seed(0))
    s = MaskSchedule(G, T).n_masked_table
    needed = [t for t in range(T, 0, -1) if s[t] > s[t - 1]]
    assert [int(c["t"][0]) for c in model.calls] == needed and len(needed) < T
    assert all(c["x_t"].shape[0] == 4 for c in model.calls)


def _stub(n_genes: int, d_model: int):
    from types import SimpleNamespace

    return SimpleNamespace(n_genes=n_genes, backbone_config=SimpleNamespace(d_model=d_model))


@settings(max_examples=60, deadline=None)
@given(
    n_genes=st.integers(1, 30_000),
    d_model=st.integers(8, 4096),
    more_genes=st.integers(0, 5000),
    wider=st.integers(0, 2048),
)
def test_auto_batch_size_properties(n_genes, d_model, more_genes, wider):
    """What callers rely on, not how it is computed: a power of two in [16, 256]; on a CPU the token tensor
    (rows x (G + 1) x D float32) stays within CPU_TOKEN_BYTES unless already at the floor of 16 rows, and twice
    as many rows would not; bigger models never get more rows; an accelerator never gets fewer rows than the CPU.
    (That the *result* does not depend on the batch size: test_same_seed_same_samples_any_batch_size.)"""
    from sthinge.models.sampler import CPU_TOKEN_BYTES

    rows = auto_batch_size(_stub(n_genes, d_model), "cpu")
    assert 16 <= rows <= 256 and rows & (rows - 1) == 0
    token_bytes = (n_genes + 1) * d_model * 4
    assert rows == 16 or rows * token_bytes <= CPU_TOKEN_BYTES
    assert rows == 256 or 2 * rows * token_bytes > CPU_TOKEN_BYTES  # the largest that fits: no waste
    assert auto_batch_size(_stub(n_genes + more_genes, d_model), "cpu") <= rows
    assert auto_batch_size(_stub(n_genes, d_model + wider), "cpu") <= rows
    assert auto_batch_size(_stub(n_genes, d_model), "cuda") >= rows


def test_auto_batch_size_small_and_large_models():
    # the two ends the docstring promises: the cap for small models, the floor at the 800M width (1536)
    assert auto_batch_size(_stub(10, 64), "cpu") == 256
    assert auto_batch_size(_stub(200, 1536), "cpu") == 16


def test_auto_batch_size_reads_a_real_model_on_its_device(tiny_hinge):
    # the sampler's default: the gene count and width of the model, on the device its parameters are on
    stub = _stub(tiny_hinge.n_genes, tiny_hinge.backbone_config.d_model)
    assert auto_batch_size(tiny_hinge) == auto_batch_size(stub, "cpu") == auto_batch_size(tiny_hinge, "cpu")


def test_same_seed_same_samples_any_batch_size(tiny_hinge):
    model = tiny_hinge.eval()
    cond = torch.randn(5, 6)
    a = sample(model, cond, n_samples=3, n_steps=10, generator=torch.Generator().manual_seed(7), return_samples=True)
    b = sample(
        model,
        cond,
        n_samples=3,
        n_steps=10,
        generator=torch.Generator().manual_seed(7),
        batch_size=4,
        return_samples=True,
    )
    c = sample(model, cond, n_samples=3, n_steps=10, generator=torch.Generator().manual_seed(8), return_samples=True)
    torch.testing.assert_close(a[2], b[2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[2], c[2])
    assert torch.all(a[1] > 0)  # samples differ from each other
    torch.testing.assert_close(a[1], a[2].std(1, correction=0))


@pytest.mark.parametrize(("n_steps", "masking"), [(None, "exact"), (7, "exact"), (None, "bernoulli"), (3, "bernoulli")])
def test_reference_sampler_matches(make_hinge, n_steps, masking):
    torch.manual_seed(0)
    model = make_hinge(n_steps=20, masking=masking).eval()
    with torch.no_grad():  # non-trivial modulation so that t, masks and condition all matter
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cond = torch.randn(6, 6)
    _, _, fast = sample(
        model,
        cond,
        n_steps=n_steps,
        n_samples=2,
        batch_size=5,
        generator=torch.Generator().manual_seed(1),
        return_samples=True,
    )
    ref = sample_reference(model, cond, n_steps=n_steps, n_samples=2, generator=torch.Generator().manual_seed(1))
    assert (fast - ref).abs().max().item() <= 1e-4


def test_autocast_bfloat16_runs(tiny_hinge):
    model = tiny_hinge.eval()
    cond = torch.randn(3, 6)
    mean32, _ = sample(model, cond, n_steps=5, generator=torch.Generator().manual_seed(0))
    mean16, _ = sample(model, cond, n_steps=5, generator=torch.Generator().manual_seed(0), autocast=torch.bfloat16)
    assert mean16.dtype == torch.float32 and torch.isfinite(mean16).all()
    assert (mean16 - mean32).abs().max() < 0.5


def test_sample_checks_arguments(tiny_hinge):
    with pytest.raises(ValueError, match="cond"):
        sample(tiny_hinge, torch.randn(6))
    with pytest.raises(ValueError, match="n_samples"):
        sample(tiny_hinge, torch.randn(2, 6), n_samples=0)
    with pytest.raises(ValueError, match="genes"):
        sample(tiny_hinge, torch.randn(2, 6), schedule=MaskSchedule(5))
