"""Every registered attention against the module contract, plus each baseline against a second implementation.

Tiny shapes (B=2, L<=40, dim=32). Small chunk/tile options make the chunked paths cross several chunk
boundaries. Equivalence checks run in fp64 (EA keeps fp32 internals, hence the 1e-5 tolerances).
"""
from __future__ import annotations

import math

import pytest
import torch

from suite.attention import available, build_attention
from suite.attention.aft import aft_causal_average, aft_global_average
from suite.attention.based import taylor_features
from suite.attention.ea import ea_attention
from suite.attention.ea.exact import ea_exact_attention, ea_exact_direct
from suite.attention.mamba import selective_scan
from suite.attention.retention import retention_log_decays
from suite.attention.scan import causal_linear_scan

NAMES = available()
DIM, HEADS, B, L = 32, 2, 2, 37
TOL = dict(atol=1e-5, rtol=1e-5)

# options that make the chunked/tiled paths cross several boundaries at L=37
SMALL_CHUNKS = {
    "linear": "linear:chunk_size=8",
    "based": "based:chunk_size=8",
    "aft": "aft:chunk_size=6",
    "retention": "retention:chunk_size=8",
    "mamba": "mamba:chunk_size=5",
    "ea_exact": "ea_exact:q_tile=7,k_tile=5",
}
FAST_BACKENDS = {"linear": "fla", "based": "fla", "retention": "fla", "mamba": "mamba_ssm"}


def make(name: str, causal: bool, spec: str | None = None) -> torch.nn.Module:
    module = build_attention(spec or SMALL_CHUNKS.get(name, name), DIM, HEADS, causal=causal).double()
    return module.eval()


def inputs(length: int = L) -> torch.Tensor:
    return torch.randn(B, length, DIM, dtype=torch.float64)


def padding_mask(length: int = L) -> torch.Tensor:
    """Batch 0: the last 6 positions padded; batch 1: the first 4 and a hole at 15..18."""
    keep = torch.ones(B, length, dtype=torch.bool)
    keep[0, -6:] = False
    keep[1, :4] = False
    keep[1, 15:19] = False
    return keep


def assert_same_gradients(out_a, out_b, wrt):
    """Gradients of a random projection of two outputs agree for every tensor in ``wrt``."""
    probe = torch.randn_like(out_a)
    grads_a = torch.autograd.grad((out_a * probe).sum(), wrt, retain_graph=True)
    grads_b = torch.autograd.grad((out_b * probe).sum(), wrt, retain_graph=True)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb)


def test_every_baseline_is_registered():
    assert {"ea", "ea_exact", "softmax", "linear", "based", "aft", "retention", "mamba"} <= set(NAMES)


# -- the contract, for every registered attention -------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_output_has_input_shape_and_is_finite(name, causal):
    module = make(name, causal)
    y = module(inputs())
    assert y.shape == (B, L, DIM)
    assert torch.isfinite(y).all()
    assert module.backend_used not in ("none", "")


@pytest.mark.parametrize("name", NAMES)
def test_causal_outputs_ignore_future_tokens(name):
    module = make(name, causal=True)
    x = inputs()
    i = 17
    x2 = x.clone()
    x2[:, i + 1:] = torch.randn_like(x2[:, i + 1:]) * 3
    with torch.no_grad():
        y, y2 = module(x), module(x2)
    torch.testing.assert_close(y[:, :i + 1], y2[:, :i + 1], **TOL)
    assert not torch.allclose(y[:, i + 1:], y2[:, i + 1:])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_valid_outputs(name, causal):
    module = make(name, causal)
    keep = padding_mask()
    x = inputs()
    x2 = torch.where(keep[..., None], x, torch.randn_like(x) * 5)
    with torch.no_grad():
        y, y2 = module(x, keep), module(x2, keep)
    torch.testing.assert_close(y[keep], y2[keep], **TOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_padding_equals_removing_the_padded_tokens(name, causal):
    """Padded positions are skipped entirely: valid outputs equal those of the compacted sequence.

    Mamba with d_conv=1: a wider conv window still spans padded positions (as zeros), by design.
    """
    module = make(name, causal, "mamba:d_conv=1,chunk_size=5" if name == "mamba" else None)
    keep = padding_mask()
    x = inputs()
    with torch.no_grad():
        y = module(x, keep)
        for b in range(B):
            compact = module(x[b:b + 1, keep[b]])
            torch.testing.assert_close(y[b, keep[b]], compact[0], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_step_by_step_decoding_equals_parallel_causal_forward(name):
    module = make(name, causal=True)
    x = inputs()
    with torch.no_grad():
        parallel = module(x)
        state = module.init_state(B, x.device, x.dtype)
        steps = []
        for t in range(L):
            y_t, state = module.step(x[:, t], state)
            steps.append(y_t)
    assert module.backend_used not in ("none", "")
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_prefill_then_step_equals_parallel_forward(name):
    module = make(name, causal=True)
    x = inputs()
    prompt = 23
    with torch.no_grad():
        parallel = module(x)
        y_prompt, state = module.prefill(x[:, :prompt])
        assert module.state_bytes(state) > 0
        steps = []
        for t in range(prompt, L):
            y_t, state = module.step(x[:, t], state)
            steps.append(y_t)
    torch.testing.assert_close(y_prompt, parallel[:, :prompt], **TOL)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel[:, prompt:], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_prefill_of_one_token_then_step(name):
    """A prompt shorter than any chunk or conv window still yields a usable state."""
    module = make(name, causal=True)
    x = inputs(5)
    with torch.no_grad():
        parallel = module(x)
        y0, state = module.prefill(x[:, :1])
        ys = [y0[:, 0]]
        for t in range(1, 5):
            y_t, state = module.step(x[:, t], state)
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), parallel, **TOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name, causal):
    module = build_attention(SMALL_CHUNKS.get(name, name), DIM, HEADS, causal=causal).train()
    x = torch.randn(B, L, DIM)
    (module(x, padding_mask()) * torch.randn(B, L, DIM)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_reference_forward_matches_forward_on_selected_rows(name):
    module = make(name, causal=True)
    x = inputs()
    rows = torch.tensor([0, 9, 36])
    with torch.no_grad():
        torch.testing.assert_close(module.reference_forward(x, rows=rows), module(x)[:, rows], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_step_on_a_non_causal_module_is_refused(name):
    module = make(name, causal=False)
    with pytest.raises(RuntimeError):
        module.init_state(B)


@pytest.mark.parametrize("name", sorted(set(FAST_BACKENDS) & set(NAMES)))
def test_requested_gpu_backend_without_cuda_raises_instead_of_falling_back(name):
    module = build_attention(f"{name}:backend={FAST_BACKENDS[name]}", DIM, HEADS, causal=True)
    with pytest.raises(ValueError, match="backend=.*requested"):
        module(torch.randn(B, 8, DIM))


@pytest.mark.parametrize("name", sorted(set(FAST_BACKENDS) & set(NAMES)))
def test_auto_backend_on_cpu_records_torch(name):
    module = build_attention(name, DIM, HEADS, causal=True)
    module(torch.randn(B, 8, DIM))
    assert module.backend_used == "torch"


# -- linear / based: chunked scan vs the quadratic formula -----------------------------------------------

def quadratic_decay_attention(q, k, v, g=None, initial_state=None):
    """o_i = Σ_{j≤i} exp(G_i - G_j) (q_i·k_j) v_j + exp(G_i) q_i S_0, G the inclusive cumsum of g."""
    scores = torch.einsum("bihf,bjhf->bhij", q, k)
    n = q.shape[1]
    G = torch.zeros(q.shape[0], n, q.shape[2], dtype=q.dtype) if g is None else torch.cumsum(g, 1)
    Gh = G.transpose(1, 2)
    decay = torch.exp(Gh[..., :, None] - Gh[..., None, :]) * torch.ones(n, n, dtype=q.dtype).tril()
    o = torch.einsum("bhij,bjhv->bihv", scores * decay, v)
    if initial_state is not None:
        o = o + torch.einsum("bihf,bhfv->bihv", q * torch.exp(G)[..., None], initial_state)
    return o


@pytest.mark.parametrize("with_decay", [False, True])
def test_chunked_causal_linear_scan_matches_quadratic_formula(with_decay):
    Bq, n, H, Fd, V = 2, 23, 3, 5, 4
    q, k = torch.randn(Bq, n, H, Fd, dtype=torch.float64), torch.randn(Bq, n, H, Fd, dtype=torch.float64)
    v = torch.randn(Bq, n, H, V, dtype=torch.float64)
    s0 = torch.randn(Bq, H, Fd, V, dtype=torch.float64)
    g = -torch.rand(Bq, n, H, dtype=torch.float64) if with_decay else None
    wrt = [t.requires_grad_() for t in (q, k, v, s0) + ((g,) if with_decay else ())]
    o, state = causal_linear_scan(q, k, v, g, initial_state=s0, chunk_size=5)
    expected = quadratic_decay_attention(q, k, v, g, s0)
    torch.testing.assert_close(o, expected)
    assert_same_gradients(o, expected, wrt)
    q, k, v, s0 = (t.detach() for t in (q, k, v, s0))
    g = None if g is None else g.detach()
    state = state.detach()
    # the returned state continues the sequence: one more token through the recurrence
    extra = [torch.cat([t, t[:, :1]], 1) for t in (q, k, v)]
    g_extra = None if g is None else torch.cat([g, g[:, :1]], 1)
    o_all, _ = causal_linear_scan(*extra, g_extra, s0, chunk_size=5)
    decay = 1.0 if g is None else torch.exp(g[:, 0])[..., None, None]
    next_state = decay * state + torch.einsum("bhf,bhv->bhfv", k[:, 0], v[:, 0])
    torch.testing.assert_close(o_all[:, -1], torch.einsum("bhf,bhfv->bhv", q[:, 0], next_state))


def test_linear_attention_causal_output_matches_normalised_quadratic_formula():
    module = make("linear", causal=True)
    x = inputs()
    with torch.no_grad():
        qf, kf, v = module.project_qkv(x)
        scores = torch.einsum("bihf,bjhf->bhij", qf, kf) * torch.ones(L, L, dtype=x.dtype).tril()
        o = torch.einsum("bhij,bjhv->bihv", scores / scores.sum(-1, keepdim=True), v)
        torch.testing.assert_close(module(x), module.proj(o.flatten(-2)))


def test_taylor_features_give_second_order_taylor_of_exp():
    x, y = torch.randn(7, 16, dtype=torch.float64), torch.randn(7, 16, dtype=torch.float64)
    s = (x * y).sum(-1) / 4.0
    assert taylor_features(x).shape == (7, 1 + 16 + 256)
    torch.testing.assert_close((taylor_features(x) * taylor_features(y)).sum(-1), 1 + s + s ** 2 / 2)


@pytest.mark.parametrize("causal", [False, True])
def test_based_matches_quadratic_taylor_scores(causal):
    module = make("based", causal)
    x, keep = inputs(), padding_mask()
    with torch.no_grad():
        q, k, v = module.project_qkv(x)
        s = torch.einsum("bihf,bjhf->bhij", q, k) / math.sqrt(module.feature_dim)
        w = (1 + s + s ** 2 / 2) * keep[:, None, None, :]
        if causal:
            w = w * torch.ones(L, L, dtype=x.dtype).tril()
        o = torch.einsum("bhij,bjhv->bihv", w / w.sum(-1, keepdim=True), v)
        torch.testing.assert_close(module(x, keep)[keep], module.o_proj(o.flatten(-2))[keep])


# -- retention: chunkwise vs the parallel decay-matrix form ---------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_retention_matches_parallel_decay_matrix_form(causal):
    """o = ((q kᵀ) ⊙ D) v with D_ij = γ^|c_i - c_j| (c counts usable positions), masked keys dropped."""
    module = make("retention", causal)
    keep = padding_mask()
    q, k, v = (torch.randn(B, L, HEADS, DIM // HEADS, dtype=torch.float64) for _ in range(3))
    o, _ = module.attend(q, k, v, keep)
    c = torch.cumsum(keep.double(), 1)                                   # [B, L]
    dist = (c[:, :, None] - c[:, None, :])                               # [B, i, j]
    log_g = retention_log_decays(HEADS).double()
    D = torch.exp(log_g[None, :, None, None] * dist.abs()[:, None])     # [B, H, i, j]
    allowed = keep[:, None, None, :] & (dist[:, None] >= 0 if causal else torch.ones_like(D, dtype=torch.bool))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * D * allowed
    expected = torch.einsum("bhij,bjhd->bihd", scores, v)
    torch.testing.assert_close(o[keep], expected[keep])


def test_retention_decays_follow_fla_chunk_retention():
    torch.testing.assert_close(torch.exp(retention_log_decays(4)), 1 - 2.0 ** (-5 - torch.arange(4.0)))


# -- AFT: running max vs the direct softmax formula ----------------------------------------------------

def test_aft_running_max_matches_direct_softmax_even_for_huge_keys():
    k = (torch.randn(B, L, 6, dtype=torch.float64) * 300).requires_grad_()   # exp(k) alone would overflow
    v = torch.randn(B, L, 6, dtype=torch.float64, requires_grad=True)
    keep = padding_mask()
    avg, state = aft_causal_average(k, v, keep, chunk_size=6)
    logits = k[:, None, :, :].expand(B, L, L, 6)
    allowed = (torch.ones(L, L, dtype=torch.bool).tril()[None] & keep[:, None, :])[..., None]
    w = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=2).nan_to_num(0.0)
    expected = (w * v[:, None]).sum(2)
    assert torch.isfinite(avg).all()
    torch.testing.assert_close(avg, expected)
    assert_same_gradients(avg, expected, [k, v])
    # the state continues the sequence exactly: chaining two halves equals one call
    first, st = aft_causal_average(k[:, :20], v[:, :20], keep[:, :20], chunk_size=6)
    second, st2 = aft_causal_average(k[:, 20:], v[:, 20:], keep[:, 20:], state=st, chunk_size=6)
    torch.testing.assert_close(torch.cat([first, second], 1), expected)
    for key in ("num", "den", "m"):
        torch.testing.assert_close(st2[key], state[key])


def test_aft_global_average_matches_direct_softmax():
    k, v, keep = torch.randn(B, L, 6, dtype=torch.float64) * 300, torch.randn(B, L, 6,
                                                                              dtype=torch.float64), padding_mask()
    w = torch.softmax(k.masked_fill(~keep[..., None], float("-inf")), dim=1)
    torch.testing.assert_close(aft_global_average(k, v, keep), (w * v).sum(1, keepdim=True))


def test_aft_row_with_no_usable_key_outputs_zero():
    keep = torch.zeros(1, 5, dtype=torch.bool)
    avg, _ = aft_causal_average(torch.randn(1, 5, 3), torch.randn(1, 5, 3), keep)
    assert torch.equal(avg, torch.zeros_like(avg))


# -- exact EA: tiled vs the direct [L, L] formula --------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_ea_exact_tiled_matches_direct_formula_in_fp64(causal):
    q, k, v = ((torch.randn(B, L, 3, 4, dtype=torch.float64) * 2).requires_grad_() for _ in range(3))
    keep = padding_mask()
    tiled = ea_exact_attention(q, k, v, causal, keep, q_tile=7, k_tile=5)    # checkpointed query tiles
    direct = ea_exact_direct(q, k, v, causal, keep)
    torch.testing.assert_close(tiled, direct, rtol=1e-10, atol=1e-12)
    assert_same_gradients(tiled, direct, [q, k, v])
    if causal:  # batch 1's first 4 queries see only padded keys
        assert torch.equal(tiled[1, :4], torch.zeros_like(tiled[1, :4]))


def test_ea_exact_far_away_keys_do_not_underflow():
    """exp(-(q-k)²/2) is 0 in fp32 for |q-k| ≳ 14; the running max keeps the normalised weights exact."""
    q = torch.zeros(1, 1, 1, 1)
    k = torch.tensor([40.0, 41.0, 45.0]).view(1, 3, 1, 1)
    v = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    assert torch.exp(-0.5 * (q - k) ** 2).sum() == 0        # the naive formula would give 0/0
    out = ea_exact_attention(q, k, v)
    w = torch.softmax(-0.5 * (q - k).double().flatten() ** 2, dim=0)
    torch.testing.assert_close(out.flatten().double(), (w * v.double().flatten()).sum().view(1))


def test_ea_with_high_order_converges_to_ea_exact():
    """Both weight keys by exp(-(q-k)²/2); with |q·k| small the order-t Taylor stand-in is exact to ~1e-12."""
    q, k, v = (torch.rand(B, L, 2, 4, dtype=torch.float64) - 0.5 for _ in range(3))
    approx = ea_attention(q, k, v, order=16, causal=True, backend="naive")
    torch.testing.assert_close(ea_exact_attention(q, k, v, causal=True), approx, rtol=1e-9, atol=1e-12)


def test_ea_exact_shares_ea_parameters():
    ea = build_attention("ea", DIM, HEADS)
    exact = build_attention("ea_exact", DIM, HEADS)
    exact.load_state_dict(ea.state_dict(), strict=True)
    x = torch.randn(B, 8, DIM)
    for a, b in zip(ea.project_qkv(x), exact.project_qkv(x)):
        torch.testing.assert_close(a, b)


# -- Mamba: chunked scan vs the plain recurrence ----------------------------------------------------------

def test_mamba_chunked_scan_matches_sequential_recurrence():
    Bs, n, Di, N = 2, 23, 6, 4
    u, Bm, Cm = torch.randn(Bs, n, Di, dtype=torch.float64), torch.randn(Bs, n, N, dtype=torch.float64), \
        torch.randn(Bs, n, N, dtype=torch.float64)
    delta = torch.rand(Bs, n, Di, dtype=torch.float64) * 2
    A = -torch.rand(Di, N, dtype=torch.float64) * 8
    D = torch.randn(Di, dtype=torch.float64)
    h = torch.randn(Bs, Di, N, dtype=torch.float64)
    wrt = [t.requires_grad_() for t in (u, delta, A, Bm, Cm, D, h)]
    y, h_last = selective_scan(u, delta, A, Bm, Cm, D, initial_state=h, chunk_size=5)   # checkpointed chunks
    ys = []
    for t in range(n):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None]
        ys.append((h * Cm[:, t, None]).sum(-1) + D * u[:, t])
    torch.testing.assert_close(y, torch.stack(ys, 1))
    torch.testing.assert_close(h_last, h)
    assert_same_gradients(torch.cat([y.flatten(), h_last.flatten()]), torch.cat([torch.stack(ys, 1).flatten(),
                                                                                 h.flatten()]), wrt)


def test_mamba_padded_positions_leave_the_ssm_state_unchanged():
    module = make("mamba", causal=True, spec="mamba:d_conv=1")
    x, keep = inputs(), padding_mask()
    with torch.no_grad():
        xs, _ = module.in_proj(x).chunk(2, dim=-1)
        _, state = module.forward_branch(xs, keep, False, 5, want_state=True)
        for b in range(B):
            _, compact = module.forward_branch(xs[b:b + 1, keep[b]], None, False, 5, want_state=True)
            torch.testing.assert_close(state["ssm"][b], compact["ssm"][0])


def test_mamba_non_causal_sees_both_directions():
    module = make("mamba", causal=False)
    x = inputs()
    x2 = x.clone()
    x2[:, -1] += 3.0
    x3 = x.clone()
    x3[:, 0] += 3.0
    with torch.no_grad():
        y, y2, y3 = module(x), module(x2), module(x3)
    assert not torch.allclose(y[:, 0], y2[:, 0])      # the last token reaches the first (backward scan)
    assert not torch.allclose(y[:, -1], y3[:, -1])    # and the first reaches the last (forward scan)


def sequential_selective_scan(u, delta, A, Bm, Cm, D, h):
    """The S6 recurrence stepped one position at a time (the plain definition), [B, L, ·] inputs."""
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None]
        ys.append((h * Cm[:, t, None]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1), h


def scan_inputs(n, Di=5, N=3, dtype=torch.float64):
    """Inputs with Δ spanning its whole range: 0 (padding), ~1e-4 (state kept for hundreds of steps), and
    Δ·A down to about -1e4 (decay exp(ΔA) = 0 in any dtype), plus a slowly decaying channel."""
    u, Bm, Cm = torch.randn(B, n, Di, dtype=dtype), torch.randn(B, n, N, dtype=dtype), torch.randn(B, n, N, dtype=dtype)
    delta = torch.exp(torch.empty(B, n, Di, dtype=dtype).uniform_(math.log(1e-4), math.log(1e3)))
    delta[:, :, 0] = 1e-4                                     # a long memory: exp(ΔA) ≈ 1 - 1e-4
    delta[0, 5:40] = 0.0                                      # a padded stretch: the state passes through
    A = -torch.exp(torch.empty(Di, N, dtype=dtype).uniform_(math.log(1e-2), math.log(16.0)))
    D, h = torch.randn(Di, dtype=dtype), torch.randn(B, Di, N, dtype=dtype)
    return u, delta, A, Bm, Cm, D, h


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 500])
def test_mamba_scan_matches_sequential_recurrence_over_long_decays_and_extreme_steps(chunk_size):
    u, delta, A, Bm, Cm, D, h = scan_inputs(300)
    wrt = [t.requires_grad_() for t in (u, delta, A, Bm, Cm, D, h)]
    y, h_last = selective_scan(u, delta, A, Bm, Cm, D, initial_state=h, chunk_size=chunk_size)
    y_ref, h_ref = sequential_selective_scan(u, delta, A, Bm, Cm, D, h)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_last, h_ref, rtol=1e-10, atol=1e-10)
    assert_same_gradients(torch.cat([y.flatten(), h_last.flatten()]), torch.cat([y_ref.flatten(), h_ref.flatten()]),
                          wrt)


def test_mamba_scan_stays_finite_in_fp32_when_decays_underflow():
    u, delta, A, Bm, Cm, D, h = (t.float().requires_grad_() for t in scan_inputs(100))
    y, h_last = selective_scan(u, delta, A, Bm, Cm, D, initial_state=h, chunk_size=16)
    y_ref, h_ref = sequential_selective_scan(*(t.detach().double() for t in (u, delta, A, Bm, Cm, D, h)))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-3)
    (y.sum() + h_last.sum()).backward()
    for t in (u, delta, A, Bm, Cm, D, h):
        assert torch.isfinite(t.grad).all()


def test_mamba_scan_backward_matches_finite_differences():
    u, delta, A, Bm, Cm, D, h = scan_inputs(11, Di=3, N=2)
    delta = delta.clamp(max=2.0)                              # keep exp(ΔA) smooth enough for finite differences
    args = [t.requires_grad_() for t in (u, delta, A, Bm, Cm, D, h)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a[:6], initial_state=a[6], chunk_size=4), args)


def test_mamba_scan_result_does_not_depend_on_chunk_size():
    u, delta, A, Bm, Cm, D, h = scan_inputs(45)
    results = [selective_scan(u, delta, A, Bm, Cm, D, initial_state=h, chunk_size=c) for c in (1, 4, 16, 45, 64)]
    for y, h_last in results[1:]:
        torch.testing.assert_close(y, results[0][0], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(h_last, results[0][1], rtol=1e-13, atol=1e-13)


def test_mamba_scan_saves_chunk_start_states_not_every_state_for_backward():
    n, Di, N, chunk = 64, 6, 4, 8
    u, delta, A, Bm, Cm, D, h = (t.requires_grad_() for t in scan_inputs(n, Di, N))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y, h_last = selective_scan(u, delta, A, Bm, Cm, D, initial_state=h, chunk_size=chunk)
    inputs_numel = sum(t.numel() for t in (u, delta, A, Bm, Cm, D))
    assert sum(saved) <= inputs_numel + (n // chunk) * B * N * Di       # inputs + one [B, N, Di] state per chunk
    assert max(saved) <= B * n * Di                                   # nothing as large as [B, L, Di, N]
