"""Element-wise attention (EA): ``ea_attention``, ``ea_step`` and the ``EAAttention`` module ("ea").

Per channel c, o_ic = Σ_j ŵ_ijc v_jc / Σ_j ŵ_ijc with ŵ_ijc = T_t(q_ic k_jc) exp(-k_jc²/2), the order-t
Taylor stand-in for exp(-(q_ic - k_jc)²/2) (DESIGN.md §2). Backends:

- ``"torch"``:  the O(tLD) path with §2's analytic backward: on a CPU one fused C kernel per call (cpu_fused.py,
                built once per machine; ``backend_used`` "cpu-fused"), elsewhere or without a C compiler the
                op-by-op PyTorch path (torch_op.py; ``backend_used`` "torch-unfused")
- ``"triton"``: the Triton kernels (triton_kernels.py, triton_ops.py); on a CPU only under TRITON_INTERPRET=1
- ``"naive"``:  the direct O(L²) formula (naive.py), for tests
- ``"auto"``:   triton for CUDA tensors, torch otherwise

A recurrent state is a fp32 tensor [B, H, 2, t+1, D]: index 0 holds A_n = Σ φ_n(k) v, index 1 holds
B_n = Σ φ_n(k), for n = 0..t; 2(t+1)·H·D floats per layer whatever the context length.
"""
from suite.attention.ea.layer import EAAttention
from suite.attention.ea.op import BACKENDS, ea_attention, ea_step, empty_state, path_used, resolve_backend

__all__ = ["BACKENDS", "EAAttention", "ea_attention", "ea_step", "empty_state", "path_used", "resolve_backend"]
