"""lm-eval integration: the ``suite-lm`` model's log-likelihoods by hand, and the local tasks run offline."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from torch import nn

from suite.data.tokenizer import ByteTokenizer
from suite.families.lm.checkpoint import save_checkpoint
from suite.families.lm.heldout_docs import cloze_docs, perplexity_docs
from suite.families.lm.lm_eval_model import SuiteLM, _windows
from suite.families.lm.lm_eval_run import LOCAL_TASKS, TASK_DIR, flatten_metrics, run_lm_eval
from suite.models.config import LMConfig
from suite.models.lm import DecoderLM

LOG_Z = math.log(math.exp(10.0) + 256)  # log partition of the "next byte" model: one logit 10, 256 logits 0


class NextByteModel(nn.Module):
    """Predicts byte b+1 after byte b with logit 10 (all others 0): every log-prob is known in closed form."""

    cfg = LMConfig()

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return 10.0 * F.one_hot((idx + 1) % 257, 257).float() + 0 * self.unused


def requests(kind: str, *args) -> list[Instance]:
    return [Instance(kind, {}, a if isinstance(a, tuple) else (a,), i) for i, a in enumerate(args)]


def uniform_lm(attention: str = "softmax") -> DecoderLM:
    model = DecoderLM(LMConfig(attention=attention, dim=32, depth=2, heads=2))
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # tied head -> all logits 0 -> log p = -log 257 for every token
    return model


@pytest.mark.parametrize("max_length", [2, 64])
def test_loglikelihood_matches_a_hand_computed_next_byte_model(max_length):
    lm = SuiteLM(model=NextByteModel(), tokenizer=ByteTokenizer(), max_length=max_length)
    got = lm.loglikelihood(requests("loglikelihood", ("abc", "def"), ("abc", "dxf"), ("a", "bcdefgh"), ("", "ab")))
    expected = [(3 * (10 - LOG_Z), True), (10 - 3 * LOG_Z, False), (7 * (10 - LOG_Z), True),
                (10 - 2 * LOG_Z, False)]  # empty context: <eos> + 1 = byte 0, not "a"
    for (lp, greedy), (want_lp, want_greedy) in zip(got, expected):
        assert lp == pytest.approx(want_lp, abs=1e-4) and greedy is want_greedy


def test_rolling_loglikelihood_conditions_the_first_byte_on_eos_and_covers_every_byte():
    lm = SuiteLM(model=NextByteModel(), tokenizer=ByteTokenizer(), max_length=3)
    (got,) = lm.loglikelihood_rolling(requests("loglikelihood_rolling", "abcdefg"))
    assert got == pytest.approx(6 * 10 - 7 * LOG_Z, abs=1e-4)


def test_a_uniform_model_gives_minus_n_log_vocab():
    lm = SuiteLM(model=uniform_lm(), tokenizer=ByteTokenizer(), max_length=8)
    (lp, greedy), = lm.loglikelihood(requests("loglikelihood", ("The context", " and twenty bytes more!")))
    assert lp == pytest.approx(-len(" and twenty bytes more!") * math.log(257), rel=1e-5) and greedy is False
    (rolling,) = lm.loglikelihood_rolling(requests("loglikelihood_rolling", "x" * 50))
    assert rolling == pytest.approx(-50 * math.log(257), rel=1e-5)


def test_windows_predict_each_target_once_within_max_length():
    tokens = list(range(1, 12))
    windows = _windows(tokens, 3, 4)
    assert [t for _, targets in windows for t in targets] == tokens[3:]
    for inp, targets in windows:
        assert len(inp) <= 4 and len(targets) <= len(inp)
        assert inp[-1] == targets[-1] - 1  # the last input position predicts the last target


def test_generate_until_decodes_through_the_recurrent_step_and_stops_at_until(monkeypatch):
    torch.manual_seed(0)
    model = DecoderLM(LMConfig(attention="ea:order=2", dim=32, depth=2, heads=2)).eval()
    lm = SuiteLM(model=model, tokenizer=ByteTokenizer(), max_length=64)
    steps = []
    real_step = model.step
    monkeypatch.setattr(model, "step", lambda tok, st: steps.append(1) or real_step(tok, st))
    prompt = torch.tensor([list(b"In the beginning")])
    greedy = model.generate(prompt, 12)[0, prompt.shape[1]:].tolist()
    expected = ByteTokenizer().decode(greedy)
    (free,) = lm.generate_until(requests("generate_until", ("In the beginning", {"until": [], "max_gen_toks": 12})))
    assert free == expected and len(steps) >= 11
    stop = expected[3:5]
    (cut,) = lm.generate_until(requests("generate_until", ("In the beginning", {"until": [stop], "max_gen_toks": 12})))
    assert cut == expected.split(stop)[0]


def test_cloze_items_end_with_a_rare_word_seen_earlier_in_the_passage():
    text = ("The lamp was lit. " * 3 + "Anna walked home with the lamp. " + "She said it was the lamp. ") * 4
    docs = cloze_docs(text.encode(), min_words=10, max_words=60, common_words=3)
    assert docs
    for doc in docs:
        *context, target = doc["text"].split(" ")
        assert target.isalpha() and target.lower() in {w.strip(".").lower() for w in context}


def test_perplexity_docs_cover_every_line_in_order():
    text = "".join(f"line number {i}\n" for i in range(200)).encode()
    docs = perplexity_docs(text, passage_bytes=300)
    assert "\n".join(d["text"] for d in docs) + "\n" == text.decode() and len(docs) > 5


def test_local_tasks_run_offline_from_a_checkpoint_with_hand_checkable_bits_per_byte(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import suite.families.lm.lm_eval_model  # noqa: F401  (registers suite-lm)
    from suite.data.text import hf_offline

    folder = save_checkpoint(tmp_path / "ckpt", uniform_lm("ea:order=2"), ByteTokenizer(), {"seq_len": 64})
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False,
                          metadata={"source": "kjv", "split": "test"})
    assert set(LOCAL_TASKS) <= set(manager.all_tasks)
    with hf_offline(True):
        out = lm_eval.simple_evaluate(model="suite-lm", model_args={"checkpoint": str(folder)}, tasks=list(LOCAL_TASKS),
                                      task_manager=manager, limit=2, bootstrap_iters=0, log_samples=False)
    res = out["results"]
    assert res["suite_heldout_ppl"]["bits_per_byte,none"] == pytest.approx(math.log2(257), rel=1e-5)
    assert res["suite_heldout_ppl"]["byte_perplexity,none"] == pytest.approx(257, rel=1e-4)
    assert res["suite_heldout_cloze"]["acc,none"] == 0.0  # argmax of a uniform model is byte 0, never a word
    assert res["suite_heldout_cloze_gen"]["exact_match,first_word"] == 0.0


def test_run_lm_eval_returns_flat_metrics_for_the_record(tmp_path):
    result = run_lm_eval(uniform_lm(), ByteTokenizer(), tasks=["suite_heldout_ppl"], limit=2, max_length=32)
    metrics = flatten_metrics(result["results"])
    assert metrics["lm_eval.suite_heldout_ppl.bits_per_byte"] == pytest.approx(math.log2(257), rel=1e-5)
    assert set(metrics) == {f"lm_eval.suite_heldout_ppl.{m}" for m in ("word_perplexity", "byte_perplexity",
                                                                        "bits_per_byte")}
    assert "suite_heldout_ppl" in result["table"] and result["n_samples"]["suite_heldout_ppl"] == 2


def test_run_lm_eval_reads_the_held_out_split_of_a_local_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i} of a small local corpus about lamps.\n" for i in range(400)))
    result = run_lm_eval(uniform_lm(), ByteTokenizer(), tasks=["suite_heldout_ppl"], source=str(corpus),
                         max_length=32)
    assert result["n_samples"]["suite_heldout_ppl"] >= 1
    assert result["results"]["suite_heldout_ppl"]["bits_per_byte"] == pytest.approx(math.log2(257), rel=1e-5)


def test_lm_builder_trains_evaluates_runs_lm_eval_and_saves_a_checkpoint_the_decode_job_reloads(tmp_path):
    from suite.families.lm.builder import build_lm_decode_job, build_lm_job
    from suite.families.lm.checkpoint import load_checkpoint
    from suite.run.builders import BuildContext
    from suite.run.train import train_and_evaluate

    hp = {"steps": 3, "batch_size": 2, "dim": 32, "depth": 1, "heads": 2, "eval_tokens": 128,
          "lm_eval_tasks": ["suite_heldout_ppl"], "lm_eval_limit": 1, "decode_lengths": [16]}
    ctx = BuildContext(task="lm-kjv", family="lm", attention="ea:order=2", seq_len=32, seed=0, device="cpu",
                       hparams=hp, data={"source": "kjv", "tokenizer": "byte"}, profile="smoke",
                       artifacts_dir=tmp_path / "job")
    job = build_lm_job(ctx)
    job.validate("lm")
    assert job.data_info["source"] == "kjv" and job.data_info["substitute"] is True
    metrics = train_and_evaluate(job, ctx)
    assert 5.0 < metrics["val_bpb"] < 9.0 and metrics["val_eval_tokens"] == 128
    assert metrics["lm_eval.suite_heldout_ppl.bits_per_byte"] > 0 and metrics["test_bpb"] > 0
    assert metrics["state_bytes_L16"] == 2 * 3 * 16 * 2 * 4  # one layer, [1, 2 heads, 2, order+1=3, 16] fp32
    folder = tmp_path / "job" / "checkpoint"
    model, _, meta = load_checkpoint(folder)
    assert meta["seq_len"] == 32 and model.cfg.attention == "ea:order=2"

    decode_ctx = BuildContext(task="lm-decode", family="lm", attention="ea:order=2", seq_len=24, seed=0, device="cpu",
                              hparams={"checkpoint": str(folder), "new_tokens": 2, "prefill_repeats": 1},
                              data={"source": "random-tokens"})
    decode_job = build_lm_decode_job(decode_ctx)
    decode_job.validate("lm-decode")
    decode_metrics = decode_job.measure()
    assert decode_metrics["state_bytes"] == metrics["state_bytes_L16"] and decode_metrics["decode_ms_per_token"] > 0
    assert decode_job.backends["ea:order=2"] == "prefill=cpu-fused,step=torch-step"
