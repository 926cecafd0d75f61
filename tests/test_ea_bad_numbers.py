"""Every EA backend gives the same answer on bad numbers: NaN or inf at a usable position reaches exactly the
outputs (and channels) it should, as NaN; whatever a masked-out key or value holds never reaches an output;
L = 0 returns an empty output. The Triton kernels run through the interpreter (tests/conftest.py)."""
import pytest
import torch

from suite.attention.ea import ea_attention

BACKENDS = ["naive", "torch", "triton"]
B, L, H, D = 2, 37, 2, 8


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, L, H, D, generator=g) * 0.7 for _ in range(3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bad_query_reaches_only_its_own_output(backend, causal, bad):
    q, k, v = inputs()
    q[1, 5, 0, 3] = bad
    o = ea_attention(q, k, v, order=4, causal=causal, backend=backend)
    expected = torch.zeros_like(o, dtype=torch.bool)
    expected[1, 5, 0, 3] = True
    assert torch.equal(~torch.isfinite(o), expected)
    assert torch.isnan(o[1, 5, 0, 3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bad_key_reaches_every_row_that_attends_to_it_in_its_channel(backend, causal, bad):
    q, k, v = inputs()
    j = 20
    k[0, j, 1, 2] = bad
    o = ea_attention(q, k, v, order=4, causal=causal, backend=backend)
    expected = torch.zeros_like(o, dtype=torch.bool)
    expected[0, (j if causal else 0):, 1, 2] = True
    assert torch.equal(torch.isnan(o), expected), backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_masked_out_position_never_influences_the_output_whatever_it_holds(backend, causal, bad):
    q, k, v = inputs()
    keep = torch.ones(B, L, dtype=torch.bool)
    keep[:, 30:] = False
    keep[1, 4] = False
    clean = ea_attention(q, k, v, order=4, causal=causal, key_padding_mask=keep, backend=backend)
    k2, v2 = k.clone(), v.clone()
    k2[~keep] = bad
    v2[~keep] = bad
    dirty = ea_attention(q, k2, v2, order=4, causal=causal, key_padding_mask=keep, backend=backend)
    assert torch.isfinite(dirty).all()
    torch.testing.assert_close(dirty, clean)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_an_empty_sequence_gives_an_empty_output(backend, causal):
    q = k = v = torch.randn(B, 0, H, D)
    o = ea_attention(q, k, v, order=2, causal=causal, backend=backend)
    assert o.shape == (B, 0, H, D) and o.dtype == v.dtype
    if causal:
        o, state = ea_attention(q, k, v, order=2, causal=True, output_final_state=True, backend=backend)
        assert o.shape == (B, 0, H, D) and state.shape == (B, H, 2, 3, D) and not state.any()
