"""The kernels builder: merges the modes' metrics and never keeps the timing of a kernel that failed its check."""
import pytest

import suite.run.measure as measure
from suite.families.kernels import KernelCheckError
from suite.run.builders import BuildContext, get_builder

HPARAMS = {"modes": ["fwd", "fwdbwd"], "level": "module", "causal": False, "batch_size": 1, "heads": 2,
           "head_dim": 8, "dtype": "float32", "repeats": 1, "max_check_error": 1e-4}


def context(**hparams):
    return BuildContext(task="k", family="kernels", attention="ea", seq_len=64, seed=3, device="cpu",
                        hparams={**HPARAMS, **hparams}, data={"source": "random-normal"})


@pytest.fixture
def calls(monkeypatch):
    """A stand-in for measure.measure_attention that records its calls and returns per-mode numbers."""
    class Calls(list):
        results: dict

    seen = Calls()
    results = {
        "fwd": {"fwd_ms": 1.0, "tokens_per_s": 64e3, "peak_mem_bytes": 100, "check_error": 1e-6,
                "check_rows": 16, "backend_used": "torch", "level": "module"},
        "fwdbwd": {"fwdbwd_ms": 3.0, "tokens_per_s": 21e3, "peak_mem_bytes": 300, "check_error": 2e-6,
                   "check_rows": 16, "backend_used": "torch", "level": "module"},
    }

    def fake(spec, seq_len, mode, **kwargs):
        seen.append((spec, seq_len, mode, kwargs))
        return dict(results[mode])

    monkeypatch.setattr(measure, "measure_attention", fake)
    seen.results = results
    return seen


def test_modes_are_measured_and_merged_with_the_worst_memory_and_error(calls):
    job = get_builder("kernels")(context())
    assert job.data_info == {"source": "random-normal", "substitute": False}
    metrics = job.measure()
    assert [c[2] for c in calls] == ["fwd", "fwdbwd"]
    assert calls[0][3]["level"] == "module" and calls[0][3]["seed"] == 3 and calls[0][3]["num_heads"] == 2
    assert metrics["fwd_ms"] == 1.0 and metrics["fwdbwd_ms"] == 3.0
    assert metrics["peak_mem_bytes"] == 300 and metrics["check_error"] == 2e-6
    assert metrics["fwd_tokens_per_s"] == 64e3 and metrics["fwdbwd_tokens_per_s"] == 21e3
    assert metrics["check_error_fwd"] == 1e-6 and metrics["fwd_peak_mem_bytes"] == 100
    assert "level" not in metrics and "backend_used" not in metrics and "tokens_per_s" not in metrics
    assert job.backends == {"ea": "torch"}


def test_a_kernel_that_fails_its_check_gets_no_timing(calls):
    calls.results["fwdbwd"]["check_error"] = 0.2
    with pytest.raises(KernelCheckError, match="differs from its reference by 0.2 .* > max_check_error 0.0001"):
        get_builder("kernels")(context()).measure()


def test_a_kernel_without_a_check_gets_no_timing(calls):
    del calls.results["fwd"]["check_error"]
    with pytest.raises(KernelCheckError, match="returned no check_error"):
        get_builder("kernels")(context()).measure()


def test_bad_modes_are_rejected():
    with pytest.raises(ValueError, match=r"'modes': expected a list of fwd, fwdbwd, decode, got \['backward'\]"):
        get_builder("kernels")(context(modes=["backward"]))
