"""Models built around a registry attention: ``lm.DecoderLM`` (causal LM); ViT and LRA models live beside it."""
