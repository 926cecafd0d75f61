"""The torch backend's fused CPU kernel (suite/attention/ea/cpu_fused.py) and its op-by-op fallback.

- the fused kernel against the fp64 naive formula: forward and gradients, odd shapes (channel counts that are not
  a multiple of the vector width, several channel chunks with a ragged last one), masks, causal and not, every
  order, fp32 and fp64, strided inputs, state chaining;
- every output element is written, the result does not depend on the thread count, and the backward keeps only
  O(LHD) tensors;
- the op-by-op path still runs (and is reported) when the kernel is disabled or cannot be built;
- the kernel is compiled once per machine (cached on disk), never per call or per shape.
"""
import subprocess
import warnings

import pytest
import torch

from suite.attention import build_attention
from suite.attention.ea import cpu_fused as fused
from suite.attention.ea import ea_attention, path_used
from suite.attention.ea.naive import ea_naive, ea_naive_state

needs_kernel = pytest.mark.skipif(fused.unavailable_reason() is not None,
                                  reason=f"fused CPU kernel unavailable: {fused.unavailable_reason()}")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def inputs(B, L, H, D, dtype=torch.float64, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, L, H, D, generator=gen, dtype=torch.float64) * scale).to(dtype) for _ in range(3)]


def mask_for(B, L, seed=1):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, generator=gen) > 0.3
    mask[0, 0] = False
    mask[-1, -3:] = False
    return mask


def grads(q, k, v, order, causal, mask, g, backend="torch"):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = ea_attention(*leaves, order, causal, key_padding_mask=mask, backend=backend)
    return (out, *torch.autograd.grad(out, leaves, g.to(out.dtype)))


@pytest.fixture
def poisoned(monkeypatch):
    """Every buffer the kernel returns starts as NaN, so an element it never writes fails the test."""
    monkeypatch.setattr(fused, "_new_output", lambda shape, dtype: torch.full(shape, float("nan"), dtype=dtype))


SHAPES = [(2, 37, 3, 24), (3, 29, 3, 7), (1, 70, 1, 13), (2, 5, 5, 3), (2, 41, 3, 45), (1, 1, 2, 8)]


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_forward_and_gradients_match_fp64_naive_formula(shape, causal, masked, poisoned):
    q, k, v = inputs(*shape)
    mask = mask_for(shape[0], shape[1]) if masked else None
    g = torch.randn(*shape, dtype=torch.float64)
    ref = grads(q, k, v, 6, causal, mask, g, backend="naive")
    assert path_used("torch", q) == fused.FUSED
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        out = grads(*(t.to(dtype) for t in (q, k, v)), 6, causal, mask, g)
        for name, a, b in zip(("o", "dq", "dk", "dv"), out, ref):
            assert a.dtype == dtype and torch.isfinite(a).all(), name
            if b.abs().max() < 1e-12:  # dq is exactly 0 when a query sees one key (L = 1): rounding only
                assert a.abs().max() < 1e-4 * g.abs().max(), name
            else:
                assert rel_err(a, b) < tol, (name, dtype, rel_err(a, b))


@needs_kernel
@pytest.mark.parametrize("order", [0, 2, 4, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_every_order(order, causal, poisoned):
    q, k, v = inputs(2, 23, 2, 12)
    mask = mask_for(2, 23)
    g = torch.randn(2, 23, 2, 12, dtype=torch.float64)
    ref = grads(q, k, v, order, causal, mask, g, backend="naive")
    out = grads(q.float(), k.float(), v.float(), order, causal, mask, g)
    for name, a, b in zip(("o", "dq", "dk", "dv"), out, ref):
        assert rel_err(a, b) < 2e-6 or (order == 0 and name == "dq" and a.abs().max() == 0), (name, rel_err(a, b))


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_fused_passes_fp64_gradcheck(causal):
    q, k, v = (t.requires_grad_() for t in inputs(2, 9, 2, 5, scale=0.8))
    mask = mask_for(2, 9)
    assert torch.autograd.gradcheck(lambda a, b, c: ea_attention(a, b, c, 4, causal, mask, backend="torch"), (q, k, v))


@needs_kernel
def test_state_chaining_and_final_state(poisoned):
    q, k, v = inputs(2, 50, 3, 11, dtype=torch.float32)
    mask = mask_for(2, 50)
    full, state = ea_attention(q, k, v, 6, True, mask, output_final_state=True, backend="torch")
    ref_state = ea_naive_state(k, v, 6, mask)
    assert state.dtype == torch.float32 and rel_err(state, ref_state) < 1e-6
    outs, st = [], None
    for a, b in ((0, 17), (17, 18), (18, 50)):
        o, st = ea_attention(q[:, a:b], k[:, a:b], v[:, a:b], 6, True, mask[:, a:b], initial_state=st,
                             output_final_state=True, backend="torch")
        outs.append(o)
    assert rel_err(torch.cat(outs, 1), full) < 1e-6 and rel_err(st, state) < 1e-6
    # gradients of a chained call: the prefix enters through the state, as in the naive formula
    g = torch.randn(2, 33, 3, 11)
    _, st17 = ea_attention(q[:, :17], k[:, :17], v[:, :17], 6, True, mask[:, :17], output_final_state=True)
    leaves = [t[:, 17:].clone().requires_grad_() for t in (q, k, v)]
    out = ea_attention(*leaves, 6, True, mask[:, 17:], initial_state=st17, backend="torch")
    got = torch.autograd.grad(out, leaves, g)
    ref_leaves = [t[:, 17:].double().requires_grad_() for t in (q, k, v)]
    ref = ea_naive(*ref_leaves, 6, True, mask[:, 17:], initial_state=st17.double())
    want = torch.autograd.grad(ref, ref_leaves, g.double())
    assert rel_err(out, ref) < 1e-6
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-5


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_strided_inputs_and_broadcast_gradient_equal_contiguous(causal):
    """The module's q, k, v are views into one qkv tensor, and sum().backward() sends a stride-0 gradient."""
    B, L, H, D = 2, 19, 3, 10
    qkv = torch.randn(B, L, 3, H, D)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ea_attention(*leaves, 4, causal, backend="torch").sum().backward()
    views = [t.detach().requires_grad_() for t in (q, k, v)]
    ea_attention(*views, 4, causal, backend="torch").sum().backward()
    for a, b in zip(leaves, views):
        assert torch.equal(a.grad, b.grad)


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_result_does_not_depend_on_thread_count(causal):
    q, k, v = inputs(3, 40, 4, 33, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(grads(q, k, v, 6, causal, None, torch.ones(3, 40, 4, 33)))
    finally:
        torch.set_num_threads(before)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other))


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_backward_keeps_only_q_k_v(causal):
    """O(LHD) kept for the backward: nothing of size [t+1, L, H, D] (nor o or Z) is saved."""
    q, k, v = (t.requires_grad_() for t in inputs(2, 64, 2, 16, dtype=torch.float32))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ea_attention(q, k, v, 6, causal, backend="torch")
    assert sum(saved) <= 3 * q.numel()


@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fused_and_unfused_agree_on_bad_numbers(causal, bad):
    q, k, v = inputs(2, 37, 2, 8, dtype=torch.float32, scale=0.7)
    q[1, 5, 0, 3] = bad
    k[0, 20, 1, 2] = bad
    keep = torch.ones(2, 37, dtype=torch.bool)
    keep[:, 30:] = False
    k[:, 30:] = -bad
    v[:, 30:] = bad
    out = ea_attention(q, k, v, 4, causal, keep, backend="torch")
    with fused.disabled():
        ref = ea_attention(q, k, v, 4, causal, keep, backend="torch")
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.equal(torch.isinf(out), torch.isinf(ref))
    ok = torch.isfinite(ref)
    assert rel_err(out[ok], ref[ok]) < 1e-6


# -- the fallback ----------------------------------------------------------------------------------

@needs_kernel
@pytest.mark.parametrize("causal", [False, True])
def test_disabled_kernel_runs_the_op_by_op_path_and_says_so(causal):
    module = build_attention("ea:backend=torch", 48, 3, causal=causal)
    x = torch.randn(2, 21, 48, requires_grad=True)
    y = module(x)
    assert module.backend_used == fused.FUSED
    with fused.disabled():
        y_ref = module(x)
        assert module.backend_used == fused.UNFUSED
        assert fused.unavailable_reason().startswith("disabled")
    assert module(x) is not None and module.backend_used == fused.FUSED
    assert rel_err(y, y_ref) < 1e-6
    gx, = torch.autograd.grad(y.square().sum(), x)
    gx_ref, = torch.autograd.grad(y_ref.square().sum(), x)
    assert rel_err(gx, gx_ref) < 1e-5


def test_op_by_op_path_in_row_blocks_equals_one_block(monkeypatch):
    """The fallback's long-L blocking (state carried across blocks of rows) still holds."""
    from suite.attention.ea import torch_op as reference

    q, k, v = inputs(2, 37, 3, 24)
    mask = mask_for(2, 37)
    g = torch.randn(2, 37, 3, 24, dtype=torch.float64)
    with fused.disabled():
        whole = grads(q, k, v, 6, True, mask, g)
        monkeypatch.setattr(reference, "_rows_per_block", lambda x: 8)
        blocked = grads(q, k, v, 6, True, mask, g)
    for a, b in zip(blocked, whole):
        assert rel_err(a, b) < 1e-12


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """The kernel loader as a new process sees it, with its cache in tmp_path."""
    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path))
    for name, value in (("_lib", None), ("_reason", None), ("_tried", False), ("BUILD_INFO", {})):
        monkeypatch.setattr(fused, name, value)
    return tmp_path


def test_no_compiler_falls_back_visibly(fresh_loader, monkeypatch):
    monkeypatch.setattr(fused, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not fused.usable(torch.zeros(1))
    assert "no C compiler" in fused.unavailable_reason()
    module = build_attention("ea", 32, 2)
    x = torch.randn(2, 9, 32)
    y = module(x)
    assert module.backend_used == fused.UNFUSED == "torch-unfused"
    assert rel_err(y, module.reference_forward(x)) < 1e-5


def test_failed_build_falls_back_visibly(fresh_loader, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="failed"):
        assert fused.path_name(torch.zeros(1)) == fused.UNFUSED
    assert "failed" in fused.unavailable_reason()


def test_environment_switch_disables_without_a_warning(fresh_loader, monkeypatch):
    monkeypatch.setenv(fused.ENV_SWITCH, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused.path_name(torch.zeros(1)) == fused.UNFUSED
    assert fused.ENV_SWITCH in fused.unavailable_reason()


def test_cuda_tensors_never_take_the_cpu_kernel():
    assert path_used("torch", torch.device("meta")) == fused.UNFUSED
    assert path_used("naive", torch.device("cpu")) == "naive"


@needs_kernel
def test_kernel_is_compiled_once_then_loaded_from_the_cache(fresh_loader, monkeypatch):
    compiles = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):
        if "-shared" in cmd:
            compiles.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(fused.subprocess, "run", counting_run)
    q, k, v = inputs(2, 13, 2, 8, dtype=torch.float32)
    ea_attention(q, k, v, 4, True, backend="torch")
    assert len(compiles) == 1 and fused.BUILD_INFO["compiled"] is True
    assert list(fresh_loader.glob("cpu-kernels/ea_cpu_*.so"))
    for shape in ((1, 5, 1, 3), (3, 40, 4, 16), (2, 200, 2, 70)):  # other shapes, dtypes, orders: no new build
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            ea_attention(*inputs(*shape, dtype=dtype), 2, False, backend="torch")
    assert len(compiles) == 1
    # a new process (the loader reset) finds the library on disk: no compiler run at all
    for name, value in (("_lib", None), ("_reason", None), ("_tried", False), ("BUILD_INFO", {})):
        monkeypatch.setattr(fused, name, value)
    ea_attention(q, k, v, 4, True, backend="torch")
    assert len(compiles) == 1 and fused.BUILD_INFO["compiled"] is False
    assert fused.BUILD_INFO["seconds"] < 5


@needs_kernel
def test_double_backward_raises_instead_of_returning_nothing():
    q, k, v = (t.requires_grad_() for t in inputs(1, 6, 1, 8, dtype=torch.float32))
    out = ea_attention(q, k, v, 2, True, backend="torch")
    gq, = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        gq.sum().backward()
