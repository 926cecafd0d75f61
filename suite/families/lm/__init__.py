"""The LM family: causal language modelling around ``suite.models.lm.DecoderLM``.

``builder`` registers ``lm`` (train, evaluate, lm-eval, decode benchmark, checkpoint) and ``lm-decode``
(decoding speed against L); ``evaluate`` scores held-out text (nats, bits per byte); ``checkpoint`` saves and
loads trained models; ``decode_bench`` times prefill and per-token decoding; ``lm_eval_model`` /
``lm_eval_run`` / ``heldout_docs`` run lm-eval (model ``suite-lm``, local held-out tasks); ``eval_checkpoint``
is the command that evaluates a saved checkpoint.
"""
from suite.families.lm import builder  # noqa: F401  (registers lm and lm-decode)
