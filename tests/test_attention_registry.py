"""The attention registry: spec parsing, errors that name the valid choices, timm integration, and that every
registered attention builds and runs at ViT- and LM-sized shapes on the CPU."""
from __future__ import annotations

import functools
import time

import pytest
import torch

from suite.attention import (
    AttentionModule,
    available,
    build_attention,
    canonical_spec,
    get_entry,
    parse_spec,
    timm_attn_layer,
)

NAMES = available()


def test_unknown_name_lists_valid_names_and_closest_match():
    with pytest.raises(ValueError) as err:
        build_attention("linaer", 32, 2)
    message = str(err.value)
    assert "did you mean 'linear'" in message
    for name in NAMES:
        assert name in message


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError) as err:
        build_attention("retention:decay=0.9", 32, 2)
    message = str(err.value)
    assert "'decay'" in message
    for option in get_entry("retention").options:
        assert option in message


def test_option_without_value_is_rejected():
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("linear:chunk_size")


def test_unknown_backend_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid: auto, torch, fla"):
        build_attention("linear:backend=cuda", 32, 2)


def test_dim_not_divisible_by_heads_is_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        build_attention("aft", 30, 4)


def test_spec_parsing_types_values():
    assert parse_spec("ea:order=2") == ("ea", {"order": 2})
    assert parse_spec(" mamba : d_state=8, backend=torch ") == ("mamba", {"d_state": 8, "backend": "torch"})
    assert parse_spec("softmax:qkv_bias=false") == ("softmax", {"qkv_bias": False})


def test_canonical_spec_sorts_options():
    assert canonical_spec("based:feature_dim=8,chunk_size=32") == "based:chunk_size=32,feature_dim=8"
    assert canonical_spec("linear") == "linear"


def test_options_reach_the_module():
    module = build_attention("based:feature_dim=8,chunk_size=32", 32, 2, causal=True)
    assert (module.feature_dim, module.chunk_size, module.causal) == (8, 32, True)
    assert module.spec == "based:chunk_size=32,feature_dim=8"
    assert build_attention("ea:order=2", 32, 2).order == 2


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_class_follows_the_constructor_contract(name):
    entry = get_entry(name)
    assert issubclass(entry.cls, AttentionModule)
    assert "backend" in entry.options and entry.options["backend"] == "auto"
    assert entry.description


def test_timm_attn_layer_returns_a_class_not_a_partial():
    layer = timm_attn_layer("linear")
    assert isinstance(layer, type) and not isinstance(layer, functools.partial)
    with pytest.raises(ValueError, match="valid names"):
        timm_attn_layer("nope")


@pytest.mark.parametrize("name", NAMES)
def test_timm_vision_transformer_accepts_the_attention(name):
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=5,
                              attn_layer=timm_attn_layer(name))
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    assert model.blocks[0].attn.inner.registry_name == name


# ViT-ish: dim 192, 3 heads, 197 tokens, bidirectional. LM-ish: dim 256, 4 heads, 256 tokens, causal.
@pytest.mark.parametrize("shape", [(192, 3, 197, False), (256, 4, 256, True)], ids=["vit", "lm"])
@pytest.mark.parametrize("name", NAMES)
def test_builds_and_runs_at_model_sized_shapes_on_cpu(name, shape):
    dim, heads, length, causal = shape
    module = build_attention(name, dim, heads, causal=causal)
    x = torch.randn(1, length, dim)
    start = time.perf_counter()
    with torch.no_grad():
        y = module(x)
    elapsed = time.perf_counter() - start
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert sum(p.numel() for p in module.parameters()) > 0
    assert elapsed < 20.0, f"{name} took {elapsed:.1f}s at {shape}"


def _timm_layer(spec, **kwargs):
    return timm_attn_layer(spec)(32, num_heads=2, **kwargs)


def test_timm_arguments_are_honoured_through_the_attention_options():
    assert _timm_layer("linear", qkv_bias=True).inner.qkv.bias is not None
    assert _timm_layer("linear", qkv_bias=False).inner.qkv.bias is None
    assert _timm_layer("based", qkv_bias=True).inner.q_proj.bias is not None
    assert _timm_layer("softmax", proj_bias=False).inner.proj.bias is None
    assert isinstance(_timm_layer("ea", qk_norm=False).inner.q_norm, torch.nn.Identity)
    assert isinstance(_timm_layer("ea", qk_norm=True).inner.q_norm, torch.nn.RMSNorm)
    dropped = _timm_layer("softmax", proj_drop=0.5)
    assert isinstance(dropped.proj_drop, torch.nn.Dropout) and dropped.proj_drop.p == 0.5


def test_timm_arguments_an_attention_cannot_honour_are_refused_by_name():
    with pytest.raises(ValueError, match="attn_drop"):
        _timm_layer("ea", attn_drop=0.1)
    with pytest.raises(ValueError, match="scale_norm"):
        _timm_layer("softmax", scale_norm=True)
    with pytest.raises(ValueError, match="qk_norm=True is not supported by 'aft'"):
        _timm_layer("aft", qk_norm=True)
    with pytest.raises(ValueError, match="spec sets qkv_bias=False"):
        _timm_layer("ea:qkv_bias=false", qkv_bias=True)
    with pytest.raises(ValueError, match="unsupported timm argument.*gated"):
        _timm_layer("ea", gated=True)


def test_a_non_default_norm_layer_is_refused_by_name():
    with pytest.raises(ValueError, match="norm_layer=BatchNorm1d is not supported: 'ea' normalises q and k"):
        _timm_layer("ea", qk_norm=True, norm_layer=torch.nn.BatchNorm1d)
    with pytest.raises(ValueError, match="norm_layer=GroupNorm"):
        _timm_layer("ea_exact", qk_norm=True, norm_layer=functools.partial(torch.nn.GroupNorm, 1))


def test_the_default_norm_layer_stands_in_for_the_attention_qk_norm():
    from timm.layers import LayerNorm

    for norm_layer in (None, LayerNorm, torch.nn.LayerNorm, functools.partial(torch.nn.LayerNorm, eps=1e-6),
                       torch.nn.RMSNorm):
        assert isinstance(_timm_layer("ea", qk_norm=True, norm_layer=norm_layer).inner.q_norm, torch.nn.RMSNorm)
    # without a q/k norm timm builds nothing from norm_layer either, so any one is unused
    assert isinstance(_timm_layer("ea", qk_norm=False, norm_layer=torch.nn.BatchNorm1d).inner.q_norm,
                      torch.nn.Identity)
    _timm_layer("linear", norm_layer=torch.nn.BatchNorm1d)


def test_timm_args_say_what_the_spec_builds_by_itself():
    assert timm_attn_layer("ea").timm_args == {"qkv_bias": True, "qk_norm": True, "proj_bias": True}
    assert timm_attn_layer("linear").timm_args == {"qkv_bias": False, "qk_norm": False, "proj_bias": True}
    assert timm_attn_layer("ea:qk_norm=false").timm_args["qk_norm"] is False
    layer = _timm_layer("ea:order=2", qk_norm=True)
    assert layer.inner.spec == "ea:order=2"  # records name the spec the task asked for


def test_attention_specs_are_checked_by_the_registry_once_per_version_of_the_attention_code(tmp_path, monkeypatch):
    import json

    import suite.attention
    from suite.tasks import attention_specs as checked

    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path))
    assert checked.checked_spec("ea:order=2") == "ea:order=2" and "softmax" in checked.all_names()
    kept = json.loads((tmp_path / checked.CACHE_FILE).read_text())[checked.fingerprint()]
    assert kept["specs"] == {"ea:order=2": "ea:order=2"} and kept["names"] == available()

    def registry_asked(spec):
        raise AssertionError(f"the registry was asked about {spec}")

    monkeypatch.setattr(checked, "_registry_loaded", lambda: False)  # as in a fresh process, before torch
    monkeypatch.setattr(suite.attention, "validate_spec", registry_asked)
    assert checked.checked_spec("ea:order=2") == "ea:order=2"  # the kept answer, no registry
    with pytest.raises(AssertionError, match="ea:order=4"):
        checked.checked_spec("ea:order=4")  # not kept: the registry answers
    monkeypatch.undo()
    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="even integer"):
        checked.checked_spec("ea:order=3")  # a bad spec: the registry's error, never kept
    assert "ea:order=3" not in json.loads((tmp_path / checked.CACHE_FILE).read_text())[checked.fingerprint()]["specs"]
    monkeypatch.setenv("EA_SUITE_PLUGINS", "another_plugin")  # another set of plugins: another fingerprint
    checked.fingerprint.cache_clear()
    try:
        monkeypatch.setattr(checked, "_registry_loaded", lambda: False)
        monkeypatch.setattr(suite.attention, "validate_spec", registry_asked)
        with pytest.raises(AssertionError, match="ea:order=2"):
            checked.checked_spec("ea:order=2")
    finally:
        monkeypatch.undo()
        checked.fingerprint.cache_clear()
