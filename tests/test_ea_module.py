"""EAAttention ("ea"): the module around the op, its recurrent form and its q/k normalisation."""
import pytest
import torch

from suite.attention import build_attention
from suite.attention.ea import EAAttention
from suite.run.measure import check_rows, measure_attention, relative_error


def test_registry_builds_ea_with_order_option():
    module = build_attention("ea:order=2", 48, 4, causal=True)
    assert isinstance(module, EAAttention) and module.order == 2 and module.causal
    with pytest.raises(ValueError, match="even"):
        build_attention("ea:order=3", 48, 4)


@pytest.mark.parametrize("order", [2, 6])
def test_step_by_step_equals_parallel_causal_forward(order):
    module = build_attention(f"ea:order={order}", 48, 4, causal=True).double()
    x = torch.randn(2, 19, 48, dtype=torch.float64)
    ref = module(x)
    state = module.init_state(2, x.device, x.dtype)
    outs = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        outs.append(y)
    assert relative_error(torch.stack(outs, 1), ref) < 1e-6
    assert state.shape == (2, 4, 2, order + 1, 12)


def test_state_size_does_not_grow_with_context():
    module = build_attention("ea", 32, 2, causal=True)
    sizes = {module.state_bytes(module.prefill(torch.randn(1, n, 32))[1]) for n in (8, 64, 256)}
    assert sizes == {2 * 2 * 7 * 16 * 4}  # 2(t+1) H D fp32 values


def test_prefill_then_steps_equals_parallel_forward():
    module = build_attention("ea", 32, 2, causal=True).double()
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    ref = module(x)
    y, state = module.prefill(x[:, :15])
    outs = [y]
    for t in range(15, 23):
        y_t, state = module.step(x[:, t], state)
        outs.append(y_t[:, None])
    assert relative_error(torch.cat(outs, 1), ref) < 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_triton_backend_matches_torch_backend_in_module(causal):
    torch.manual_seed(0)
    fast = build_attention("ea:backend=triton", 48, 3, causal=causal)
    ref = build_attention("ea:backend=torch", 48, 3, causal=causal)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 21, 48, requires_grad=True)
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[1, -4:] = False
    a = fast(x, mask)
    b = ref(x, mask)
    assert fast.backend_used == "triton" and ref.backend_used == "cpu-fused"
    assert relative_error(a, b) < 1e-5
    ga = torch.autograd.grad(a.sum(), x)[0]
    gb = torch.autograd.grad(b.sum(), x)[0]
    assert relative_error(ga, gb) < 1e-5


def test_reference_forward_rows_match_full_forward():
    module = build_attention("ea", 32, 2, causal=True).double()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    rows = check_rows(40, 5, "cpu")
    assert relative_error(module.reference_forward(x, rows=rows), module(x)[:, rows]) < 1e-9


def test_qk_norm_keeps_taylor_inputs_near_unit_scale():
    module = build_attention("ea", 64, 4)
    x = torch.randn(2, 50, 64) * 30.0  # badly scaled input
    q, k, _ = module.project_qkv(x)
    assert q.pow(2).mean(-1).sqrt().sub(1).abs().max() < 1e-3
    assert k.pow(2).mean(-1).sqrt().sub(1).abs().max() < 1e-3
    raw = build_attention("ea:qk_norm=false", 64, 4)
    q_raw, _, _ = raw.project_qkv(x)
    assert q_raw.abs().max() > 5  # without the norm the Taylor argument leaves its good range


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd", "decode"])
def test_bench_measurement_checks_before_timing(mode):
    res = measure_attention("ea", 64, mode, batch=1, num_heads=2, head_dim=8, causal=True, repeats=1)
    assert res["check_error"] < 1e-4
    time_key = {"fwd": "fwd_ms", "fwdbwd": "fwdbwd_ms", "decode": "decode_ms_per_token"}[mode]
    assert res[time_key] > 0 and res["backend_used"]
    if mode == "decode":
        assert res["state_bytes"] == 2 * 2 * 7 * 8 * 4


def test_taylor_error_against_exact_weights_shrinks_with_order():
    from suite.attention.ea.approx import approximation_table

    table = approximation_table(scales=(0.5, 1.0), orders=(0, 2, 4, 6), length=32)
    for _, row in table.iterrows():
        errors = [row[f"t={t}"] for t in (0, 2, 4, 6)]
        assert errors == sorted(errors, reverse=True)
    assert table.iloc[0]["t=6"] < 1e-3  # at scale 0.5 order 6 is nearly exact
