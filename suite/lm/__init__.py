"""Causal language modelling around ``suite.models.lm.DecoderLM``: tokenizers, checkpoints, held-out metrics,
the decode benchmark, and lm-eval (model ``suite-lm`` and the local tasks in ``tasks/lm/lm_eval/``)."""
