"""An lm-eval model, registered as ``suite-lm``, that wraps a DecoderLM (a checkpoint folder or a live model).

    simple_evaluate(model="suite-lm", model_args={"checkpoint": "runs/.../ckpt"}, ...)   # after importing this module
    simple_evaluate(model=SuiteLM(model=m, tokenizer=tok, max_length=256), ...)

- ``loglikelihood``: log P(continuation | context), summed over the continuation's tokens, and whether greedy
  decoding would produce it. Context + continuation longer than ``max_length`` is scored in windows of at
  most ``max_length`` tokens, each target seeing as much preceding text as fits.
- ``loglikelihood_rolling``: the whole text's log-likelihood from disjoint windows
  (``lm_eval.utils.get_rolling_token_windows`` with context 1, then ``make_disjoint_window``), the first token
  conditioned on ``<eos>``, as lm-eval's own models do.
- ``generate_until``: prefill + recurrent ``step`` (EA: constant-size state; softmax: KV cache), greedy unless
  the request asks for sampling, stopping at any ``until`` string, ``<eos>`` or ``max_gen_toks``.

``max_length`` (tokens) defaults to the ``seq_len`` the checkpoint was trained with. The default device is the
CPU (lm-eval's own CLI defaults to cuda:0).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from suite.families.lm.checkpoint import load_checkpoint

Window = tuple[list[int], list[int]]  # (input tokens, the targets that its last len(targets) positions predict)


def _windows(tokens: list[int], first_target: int, max_length: int) -> list[Window]:
    """Windows that predict tokens[first_target:] once each, every input at most max_length tokens long."""
    windows, end = [], len(tokens)
    while end > first_target:
        start = max(first_target, end - max_length)
        windows.append((tokens[max(0, end - 1 - max_length):end - 1], tokens[start:end]))
        end = start
    return windows[::-1]


@register_model("suite-lm")
class SuiteLM(LM):
    """lm-eval LM over a DecoderLM and its tokenizer (byte or BPE)."""

    def __init__(self, checkpoint: str | None = None, model: Any = None, tokenizer: Any = None,
                 device: str | None = None,
                 batch_size: int | str | None = 16, max_length: int | str | None = None,
                 **_lm_eval_kwargs: Any) -> None:
        super().__init__()
        device = device or "cpu"
        metadata: dict[str, Any] = {}
        if model is None:
            if checkpoint is None:
                raise ValueError("suite-lm needs checkpoint=<folder> (or model= and tokenizer=)")
            model, tokenizer, metadata = load_checkpoint(checkpoint, device)
        if tokenizer is None:
            raise ValueError("suite-lm: a live model needs its tokenizer")
        self.model, self.tok = model.to(device).eval(), tokenizer
        self._device = torch.device(device)
        self.batch_size = 16 if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
        default_len = metadata.get("seq_len") or (model.cfg.max_seq_len if model.cfg.pos_emb == "learned" else 1024)
        self.max_length = int(max_length or default_len)
        if model.cfg.pos_emb == "learned" and self.max_length > model.cfg.max_seq_len:
            raise ValueError(f"max_length {self.max_length} exceeds the model's position table "
                             f"({model.cfg.max_seq_len})")

    # -- scoring -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, windows: list[Window]) -> list[tuple[float, bool]]:
        """(sum of log-probs of the targets, all targets greedy) per window; windows batched, right-padded."""
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(windows)
        for first in range(0, len(order), self.batch_size):
            chunk = order[first:first + self.batch_size]
            width = max(len(windows[i][0]) for i in chunk)
            batch = torch.full((len(chunk), width), self.tok.eos_id, dtype=torch.long)
            for row, i in enumerate(chunk):
                batch[row, :len(windows[i][0])] = torch.tensor(windows[i][0])
            logprobs = F.log_softmax(self.model(batch.to(self._device)).float(), dim=-1)
            for row, i in enumerate(chunk):
                inp, targets = windows[i]
                lp = logprobs[row, len(inp) - len(targets):len(inp)]
                tgt = torch.tensor(targets, device=lp.device)
                out[i] = (lp.gather(-1, tgt[:, None]).sum().item(), bool((lp.argmax(-1) == tgt).all()))
        return out

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation, trailing spaces of the context moved to the continuation."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole, ctx = self.tok.encode(context + continuation), self.tok.encode(context)
        return ctx, whole[len(ctx):]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        windows, owner = [], []
        for n, (context, continuation) in enumerate(req.args for req in requests):
            ctx, cont = self._encode_pair(context, continuation)
            ctx = ctx or [self.tok.eos_id]
            for window in _windows(ctx + cont, len(ctx), self.max_length):
                windows.append(window)
                owner.append(n)
        results: list[list[Any]] = [[0.0, True] for _ in requests]  # [log-likelihood, greedy] per request
        for n, (logprob, greedy) in zip(owner, self._score(windows)):
            results[n][0] += logprob
            results[n][1] = results[n][1] and greedy
        return [(lp, greedy) for lp, greedy in results]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for window in get_rolling_token_windows(self.tok.encode(text), self.tok.eos_id, self.max_length, 1):
                context, targets = make_disjoint_window(window)
                windows.append(((context + targets)[:-1], targets))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._score(windows)):
            totals[n] += logprob
        return totals

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate_one(self, context: str, until: list[str], max_gen_toks: int, temperature: float) -> str:
        prompt = (self.tok.encode(context) or [self.tok.eos_id])[-self.max_length:]
        logits, states = self.model.prefill(torch.tensor([prompt], device=self._device), last_only=True)
        generated: list[int] = []
        text = ""
        for i in range(max_gen_toks):
            token = self.model.sample(logits, temperature)
            if int(token) == self.tok.eos_id:
                break
            generated.append(int(token))
            text = self.tok.decode(generated)
            if any(stop in text for stop in until):
                break
            if i + 1 < max_gen_toks:
                logits, states = self.model.step(token, states)
        for stop in until:
            text = text.split(stop)[0] if stop else text
        return text

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        outputs = []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = dict(gen_kwargs or {})
            until = kwargs.get("until") or []
            until = [s for s in ([until] if isinstance(until, str) else until) if s]
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            outputs.append(self._generate_one(context, until, int(kwargs.get("max_gen_toks", 256)), temperature))
        return outputs
