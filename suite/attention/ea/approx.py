"""How far the order-t Taylor weights are from the exact Gaussian weights exp(-(q-k)²/2).

``python run_suite.py approx`` prints, for q and k at several scales (the RMS of each channel's
values: 1 is what EAAttention's per-head RMS normalisation gives at initialisation), the relative RMSE of
EA's output at orders 0..8 against exact element-wise attention, non-causal, on random inputs.
"""
from __future__ import annotations

import pandas as pd
import torch

from suite.attention.ea.exact import ea_exact_direct
from suite.attention.ea.naive import ea_naive


def approximation_table(scales=(0.5, 1.0, 1.5, 2.0, 3.0), orders=(0, 2, 4, 6, 8), length: int = 128,
                        seed: int = 0) -> pd.DataFrame:
    """Rows: scale of q and k; columns: order; cells: relative RMSE of EA against exact EA (fp64)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for scale in scales:
        q, k, v = (torch.randn(2, length, 2, 16, generator=gen, dtype=torch.float64) for _ in range(3))
        q, k = q * scale, k * scale
        exact = ea_exact_direct(q, k, v)
        row = {"q, k scale (RMS)": scale}
        for order in orders:
            out = ea_naive(q, k, v, order, causal=False)
            row[f"t={order}"] = float((out - exact).norm() / exact.norm())
        rows.append(row)
    return pd.DataFrame(rows)
