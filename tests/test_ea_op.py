"""ea_attention / ea_step: every backend against the fp64 naive formula (DESIGN.md §7)."""
import math

import pytest
import torch

from suite.attention.ea import ea_attention, ea_step, triton_ops
from suite.attention.ea.naive import ea_naive

B, L, H, D = 2, 37, 3, 24
ORDERS = (0, 2, 4, 6)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ (absolute error where ref is exactly 0, e.g. dq at order 0)."""
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def nan_poisoned_outputs(monkeypatch):
    """Every Triton output buffer starts as NaN, so an element a kernel never writes fails the test."""
    monkeypatch.setattr(triton_ops, "_new_output",
                        lambda shape, dtype, device, name: torch.full(shape, float("nan"), dtype=dtype, device=device))


def make_inputs(dtype=torch.float64, scale=1.0, seed=0, length=L):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, length, H, D, generator=gen, dtype=torch.float64) * scale).to(dtype) for _ in range(3)]


def make_mask(length=L, seed=1):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, length, generator=gen) > 0.3
    mask[0, 0] = False  # causal row 0 of batch 0 has no usable key
    mask[1, -5:] = False  # a padded tail
    return mask


def run(backend, q, k, v, order, causal, mask=None, **kw):
    if backend == "triton-split":
        return triton_ops.ea_triton(q, k, v, order, causal, mask, num_splits=3, block_l=16, **kw)[0]
    return ea_attention(q, k, v, order, causal, key_padding_mask=mask, backend=backend, **kw)


# -- forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("masked", [False, True])
def test_torch_backend_matches_naive_formula(causal, order, masked):
    q, k, v = make_inputs()
    mask = make_mask() if masked else None
    ref = ea_naive(q, k, v, order, causal, mask)
    out = run("torch", q, k, v, order, causal, mask)
    assert rel_err(out, ref) < 1e-6  # fp32 math inside, fp64 in and out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("backend", ["triton", "triton-split"])
def test_triton_forward_matches_naive_formula(backend, causal, order, masked):
    q, k, v = make_inputs()
    mask = make_mask() if masked else None
    ref = ea_naive(q, k, v, order, causal, mask)
    out = run(backend, *(t.float() for t in (q, k, v)), order, causal, mask)
    assert out.dtype == torch.float32 and not out.isnan().any()
    assert rel_err(out, ref) < 1e-5


def test_naive_formula_equals_exact_definition_with_exp_q_factor():
    """ŵ = exp(-q²/2) T_t(qk) exp(-k²/2): the q factor cancels, so the naive form can leave it out."""
    q, k, v = make_inputs(length=9)
    order = 4
    x = q[:, :, None] * k[:, None]
    w = torch.exp(-q[:, :, None] ** 2 / 2) * sum(x ** n / math.factorial(n) for n in range(order + 1)) \
        * torch.exp(-k[:, None] ** 2 / 2)
    direct = (w * v[:, None]).sum(2) / w.sum(2)
    assert rel_err(ea_naive(q, k, v, order, False), direct) < 1e-12


def test_high_order_approaches_exact_gaussian_weights():
    q, k, v = make_inputs(scale=0.5, length=9)
    w = torch.exp(-(q[:, :, None] - k[:, None]) ** 2 / 2)
    exact = (w * v[:, None]).sum(2) / w.sum(2)
    assert rel_err(ea_naive(q, k, v, 16, False), exact) < 1e-6


def test_empty_key_set_outputs_zero_not_nan():
    q, k, v = make_inputs(dtype=torch.float32)
    mask = make_mask()
    for backend in ("naive", "torch", "triton"):
        out = run(backend, q, k, v, 6, True, mask)
        assert torch.isfinite(out).all(), backend
        assert out[0, 0].abs().max() == 0, backend
    allmasked = torch.zeros(B, L, dtype=torch.bool)
    for backend in ("naive", "torch", "triton"):
        assert run(backend, q, k, v, 2, False, allmasked).abs().max() == 0


def test_large_inputs_give_finite_outputs_and_gradients():
    for backend in ("torch", "triton"):
        q, k, v = (t.clamp(-8, 8).requires_grad_() for t in make_inputs(dtype=torch.float32, scale=6.0))
        out = run(backend, q, k, v, 6, True)
        out.sum().backward()
        assert torch.isfinite(out).all()
        for t in (q, k, v):
            assert torch.isfinite(t.grad).all(), backend


# -- gradients -------------------------------------------------------------------------------------

def _grads(backend, q, k, v, order, causal, mask, g):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = run(backend, *leaves, order, causal, mask)
    return torch.autograd.grad(out, leaves, g.to(out.dtype))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("masked", [False, True])
def test_torch_gradients_match_autograd_through_naive_formula(causal, order, masked):
    q, k, v = make_inputs()
    mask = make_mask() if masked else None
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    ref = _grads("naive", q, k, v, order, causal, mask, g)
    out = _grads("torch", q, k, v, order, causal, mask, g)
    for name, a, b in zip("qkv", out, ref):
        assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("masked", [False, True])
def test_triton_gradients_match_autograd_through_naive_formula(causal, order, masked):
    q, k, v = make_inputs()
    mask = make_mask() if masked else None
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    ref = _grads("naive", q, k, v, order, causal, mask, g)
    for backend in ("triton", "triton-split"):
        out = _grads(backend, *(t.float() for t in (q, k, v)), order, causal, mask, g)
        for name, a, b in zip("qkv", out, ref):
            assert not a.isnan().any(), (backend, name)
            assert rel_err(a, b) < 1e-5, (backend, name)


def test_torch_backend_passes_fp64_gradcheck():
    q, k, v = (t[:, :6, :1, :3].clone().requires_grad_() for t in make_inputs())
    mask = make_mask(length=6)
    assert torch.autograd.gradcheck(lambda a, b, c: ea_attention(a, b, c, 4, True, mask, backend="torch"), (q, k, v))


# -- states, prefill and decoding --------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_chunked_prefill_through_state_equals_one_call(backend):
    q, k, v = make_inputs(dtype=torch.float32)
    full = run(backend, q, k, v, 6, True)
    split = 20
    o1, state = ea_attention(q[:, :split], k[:, :split], v[:, :split], 6, True, output_final_state=True,
                             backend=backend)
    o2, state2 = ea_attention(q[:, split:], k[:, split:], v[:, split:], 6, True, initial_state=state,
                              output_final_state=True, backend=backend)
    assert state.shape == (B, H, 2, 7, D) and state.dtype == torch.float32
    assert rel_err(torch.cat([o1, o2], 1), full) < 1e-5
    _, whole_state = ea_attention(q, k, v, 6, True, output_final_state=True, backend="naive")
    assert rel_err(state2, whole_state) < 1e-5


def test_triton_final_state_matches_reference_state_with_splits():
    q, k, v = make_inputs(dtype=torch.float32)
    mask = make_mask()
    _, ref_state = ea_attention(q, k, v, 4, True, mask, output_final_state=True, backend="naive")
    _, state = triton_ops.ea_triton(q, k, v, 4, True, mask, output_final_state=True, num_splits=3, block_l=16)
    assert rel_err(state, ref_state) < 1e-5


@pytest.mark.parametrize("order", [0, 2, 6])
def test_stepping_equals_causal_op(order):
    q, k, v = make_inputs(dtype=torch.float32)
    ref = ea_attention(q, k, v, order, True, backend="naive")
    state, outs = None, []
    for t in range(L):
        o, state = ea_step(q[:, t], k[:, t], v[:, t], state, order)
        outs.append(o)
    assert rel_err(torch.stack(outs, 1), ref) < 1e-5


def test_stepping_after_prefill_equals_causal_op_over_whole_sequence():
    q, k, v = make_inputs(dtype=torch.float32)
    ref = ea_attention(q, k, v, 6, True, backend="naive")
    prompt = 25
    o, state = ea_attention(q[:, :prompt], k[:, :prompt], v[:, :prompt], 6, True, output_final_state=True)
    outs = [o]
    for t in range(prompt, L):
        o_t, state = ea_step(q[:, t], k[:, t], v[:, t], state, 6)
        outs.append(o_t[:, None])
    assert rel_err(torch.cat(outs, 1), ref) < 1e-5


# -- dtypes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_in_gives_same_dtype_out_with_fp32_accuracy(backend, dtype):
    q, k, v = make_inputs(dtype=dtype)
    ref = ea_naive(*(t.double() for t in (q, k, v)), 6, True)
    out = run(backend, q, k, v, 6, True)
    assert out.dtype == dtype
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # the output rounding alone costs about this much
    assert rel_err(out, ref) < tol
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    run(backend, *leaves, 6, True).float().pow(2).sum().backward()
    assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all() for t in leaves)


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(order=3), "even"),
    (dict(order=-2), "even"),
    (dict(order=2.0), "even"),
    (dict(backend="cuda"), "unknown backend"),
    (dict(key_padding_mask=torch.ones(B, L + 1, dtype=torch.bool)), "key_padding_mask"),
    (dict(key_padding_mask=torch.ones(B, L)), "key_padding_mask"),
    (dict(initial_state=torch.zeros(B, H, 2, 7, D)), "causal=True only"),
    (dict(causal=True, initial_state=torch.zeros(B, H, 2, 5, D)), "initial_state must have shape"),
])
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, message):
    q, k, v = make_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        ea_attention(q, k, v, **kwargs)


def test_bad_shapes_raise_value_error():
    q, k, v = make_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="4-D"):
        ea_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="same shape"):
        ea_attention(q, k[:, :-1], v)
    with pytest.raises(ValueError, match="floating-point"):
        ea_attention(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="3-D"):
        ea_step(q, k, v, None)
    with pytest.raises(ValueError, match="state must have shape"):
        ea_step(q[:, 0], k[:, 0], v[:, 0], torch.zeros(B, H, 2, 3, D), order=6)


def test_torch_path_in_row_blocks_equals_one_block(monkeypatch):
    """Long causal inputs run in blocks of rows with the state carried across; force tiny blocks here."""
    from suite.attention.ea import torch_op as reference

    q, k, v = make_inputs()
    mask = make_mask()
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    whole = _grads("torch", q, k, v, 6, True, mask, g)
    o_whole, s_whole = ea_attention(q, k, v, 6, True, mask, output_final_state=True, backend="torch")
    monkeypatch.setattr(reference, "_rows_per_block", lambda x: 8)
    blocked = _grads("torch", q, k, v, 6, True, mask, g)
    o_blocked, s_blocked = ea_attention(q, k, v, 6, True, mask, output_final_state=True, backend="torch")
    assert rel_err(o_blocked, o_whole) < 1e-12 and rel_err(s_blocked, s_whole) < 1e-12
    for a, b in zip(blocked, whole):
        assert rel_err(a, b) < 1e-12


# -- launcher paths: channel blocks, default rows per kernel, high orders, the L split --------------------

@pytest.mark.parametrize("shape", [(1, 21, 2, 128), (2, 13, 5, 40)], ids=["D128-two-blocks", "blocks-across-heads"])
@pytest.mark.parametrize("causal", [False, True])
def test_triton_head_dim_128_and_channel_blocks_across_heads(shape, causal):
    """The kernels see [B, L, H*D] channels in blocks of BLOCK_C: D = 128 fills two blocks, and H*D = 200 gives
    a partial second block whose channels start mid-head. Forward and gradients against the fp64 formula."""
    b, length, h, d = shape
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(b, length, h, d, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(b, length, generator=gen) > 0.25
    g = torch.randn(b, length, h, d, generator=gen, dtype=torch.float64)
    ref_o = ea_naive(q, k, v, 6, causal, mask)
    ref = _grads("naive", q, k, v, 6, causal, mask, g)
    out_o = ea_attention(*(t.float() for t in (q, k, v)), 6, causal, key_padding_mask=mask, backend="triton")
    assert rel_err(out_o, ref_o) < 1e-5
    out = _grads("triton", *(t.float() for t in (q, k, v)), 6, causal, mask, g)
    for name, a, r in zip("qkv", out, ref):
        assert not a.isnan().any(), name
        assert rel_err(a, r) < 1e-5, name


def test_triton_default_rows_per_kernel_with_l_split_and_state():
    """num_splits=3 with the launcher's own rows per kernel (4 and 8), forward, final state and gradients."""
    q, k, v = (t.float() for t in make_inputs())
    mask = make_mask()
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    _, ref_state = ea_attention(q, k, v, 6, True, mask, output_final_state=True, backend="naive")
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o, state = triton_ops.ea_triton(*leaves, 6, True, mask, output_final_state=True, num_splits=3)
    assert rel_err(o, ea_naive(*(t.double() for t in (q, k, v)), 6, True, mask)) < 1e-5
    assert rel_err(state, ref_state) < 1e-5
    grads = torch.autograd.grad(o, leaves, g.float())
    ref = _grads("naive", *(t.double() for t in (q, k, v)), 6, True, mask, g)
    for name, a, r in zip("qkv", grads, ref):
        assert rel_err(a, r) < 1e-5, name


@pytest.mark.parametrize("causal", [False, True])
def test_triton_order_8_uses_half_the_rows_and_matches_naive_formula(causal):
    assert triton_ops.block_rows("fwd", causal, 8) == triton_ops.block_rows("fwd", causal, 6) // 2
    q, k, v = make_inputs(scale=0.7)
    mask = make_mask()
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    ref = _grads("naive", q, k, v, 8, causal, mask, g)
    out = _grads("triton", *(t.float() for t in (q, k, v)), 8, causal, mask, g)
    assert rel_err(run("triton", *(t.float() for t in (q, k, v)), 8, causal, mask),
                   ea_naive(q, k, v, 8, causal, mask)) < 1e-5
    for name, a, r in zip("qkv", out, ref):
        assert rel_err(a, r) < 1e-5, name


def test_l_split_aims_at_16_warps_per_sm_with_chunks_of_at_least_128_rows():
    # 1 x 8 channel blocks of 4 warps on 132 SMs want 66 chunks; L = 8192 allows 64 of 128 rows
    assert triton_ops.default_num_splits(1, 8192, 1024, 132) == 64
    assert triton_ops.default_num_splits(1, 1024, 1024, 132) == 8
    assert triton_ops.default_num_splits(64, 8192, 4096, 132) == 1  # 2048 programs fill the GPU already
    cfg = triton_ops.launch_config(2, 1000, 8, 64, torch.device("cpu"), sms=132)
    assert cfg.num_splits * cfg.chunk >= 1000 and cfg.chunk % 8 == 0 and cfg.num_splits > 1


@pytest.mark.parametrize("causal", [False, True])
def test_triton_order_18_runs_one_row_tiles_and_matches_naive_formula(causal):
    assert triton_ops.block_rows("fwd", causal, 18) == triton_ops.block_rows("dkdv", causal, 18) == 1
    q, k, v = make_inputs(scale=0.5, length=11)
    mask = make_mask(length=11)
    g = torch.randn(B, 11, H, D, dtype=torch.float64)
    ref = _grads("naive", q, k, v, 18, causal, mask, g)
    out = _grads("triton", *(t.float() for t in (q, k, v)), 18, causal, mask, g)
    assert rel_err(run("triton", *(t.float() for t in (q, k, v)), 18, causal, mask),
                   ea_naive(q, k, v, 18, causal, mask)) < 1e-5
    for name, a, r in zip("qkv", out, ref):
        assert not a.isnan().any(), name
        assert rel_err(a, r) < 1e-5, name


# -- inference forward, launch settings, bytes moved ---------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_inference_forward_allocates_and_writes_no_normaliser(monkeypatch, causal):
    """Under torch.no_grad() (inference, a decode prefill) the fwd kernel runs with STORE_Z off: no Z buffer is
    allocated, and o is the training forward's o."""
    allocated = []

    def record(shape, dtype, device, name):
        allocated.append(name)
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(triton_ops, "_new_output", record)
    q, k, v = (t.to(torch.bfloat16) for t in make_inputs(scale=0.5))
    mask = make_mask()
    with torch.no_grad():
        o_inf = ea_attention(q, k, v, 6, causal, key_padding_mask=mask, backend="triton")
    assert "z" not in allocated and "o" in allocated
    allocated.clear()
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    o_train = ea_attention(*leaves, 6, causal, key_padding_mask=mask, backend="triton")
    assert "z" in allocated
    assert torch.equal(o_inf, o_train.detach())
    # inputs that need no gradient take the same path outside no_grad mode
    allocated.clear()
    ea_attention(q, k, v, 6, causal, key_padding_mask=mask, backend="triton")
    assert "z" not in allocated


@pytest.mark.parametrize("block_c", [32, 64, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_triton_channel_blocks_other_than_the_default_match_naive_formula(block_c, causal):
    """block_c is a launch argument (gpu-check sweeps it): 72 channels in blocks of 32, 64 or 256."""
    q, k, v = make_inputs()
    mask = make_mask()
    g = torch.randn(B, L, H, D, dtype=torch.float64)
    ref_o = ea_naive(q, k, v, 6, causal, mask)
    ref = _grads("naive", q, k, v, 6, causal, mask, g)
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    o, _ = triton_ops.ea_triton(*leaves, 6, causal, mask, num_splits=2, block_c=block_c)
    assert rel_err(o, ref_o) < 1e-5
    for name, a, r in zip("qkv", torch.autograd.grad(o, leaves, g.float()), ref):
        assert rel_err(a, r) < 1e-5, name


@pytest.mark.parametrize("setting", [dict(block_c=48), dict(block_c=512), dict(block_l=3), dict(num_splits=0)])
def test_launch_settings_the_kernels_cannot_take_are_refused(setting):
    q, k, v = (t.float() for t in make_inputs())
    with pytest.raises(ValueError, match=next(iter(setting))):
        triton_ops.ea_triton(q, k, v, 6, True, **setting)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["inference", "fwdbwd"])
@pytest.mark.parametrize("splits, want_state", [(1, False), (3, False), (1, True)])
def test_traffic_model_lists_exactly_the_kernels_the_launcher_launches(monkeypatch, causal, mode, splits,
                                                                      want_state):
    from suite.attention.ea.hopper_compile import _variant_name

    if want_state and not causal:
        pytest.skip("a final state is causal only")
    launched = []
    monkeypatch.setattr(triton_ops, "_launch",
                        lambda kernel, grid, args, num_warps, **c: launched.append(_variant_name(kernel.fn.__name__,
                                                                                                 c)))
    q, k, v = (t.float().requires_grad_(mode == "fwdbwd") for t in make_inputs())
    o, _ = triton_ops.ea_triton(q, k, v, 6, causal, None, output_final_state=want_state, num_splits=splits)
    if mode == "fwdbwd":
        o.backward(torch.ones_like(o))
    cfg = triton_ops.launch_config(B, L, H, D, q.device, num_splits=splits)
    assert launched == triton_ops.launched_kernels(causal, mode, cfg, want_state)
    moved = triton_ops.traffic(B, L, H, D, 4, 6, causal, mode, cfg, want_state)
    assert set(moved) == set(launched) | {"carries"}
    if mode == "inference":  # q, k, v read and o written: 16 bytes per fp32 element, more with the chunk sums
        assert moved[f"fwd {'causal' if causal else 'non-causal'} no-Z"] == (16 if causal else 8) * B * L * H * D


def test_the_torch_path_off_a_cpu_never_waits_for_the_device(monkeypatch):
    """Off a CPU the torch path is gpu-check's fp64 reference: its prefix sums are cumsums and nothing in the
    forward sweep or the key gradients reads a value back from the device (meta tensors hold no values, so any
    such read raises), whatever the number of blocks."""
    from suite.attention.ea import torch_op as reference

    monkeypatch.setattr(reference, "_rows_per_block", lambda x: 64)
    q, k, v = (torch.empty(2, 200, 3, 8, device="meta", dtype=torch.float64) for _ in range(3))
    e = reference.key_features(k)
    for causal in (True, False):
        N, Z, dN, dZ, state = reference._blocked_forward_sums(q, k, v, e, 6, causal, None, True)
        assert N.shape == dZ.shape == q.shape and state.shape == (2, 3, 2, 7, 8)
        dk, dv, carry = reference._key_grads(q, k, v, e, q, q, 6, causal, None)
        assert dk.shape == dv.shape == k.shape
    monkeypatch.undo()
    assert reference._rows_per_block(torch.empty(4, 1, 16, 64)) == 256  # 2^20 elements on a CPU
    assert reference._rows_per_block(torch.empty(4, 1, 16, 64, device="meta")) == (1 << 27) // 4096  # 2^27 elsewhere
