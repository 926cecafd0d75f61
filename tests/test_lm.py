"""Decoder LM: training on real text, decoding equal to the parallel forward, checkpoints, text sources."""
from __future__ import annotations

import math
import zipfile

import pytest
import torch

from suite.attention import available
from suite.data import DataMissingError
from suite.data import text as text_mod
from suite.data.text import (
    contiguous_split,
    embedded_kjv_text,
    encode_splits,
    load_text,
    random_windows,
    sequential_windows,
)
from suite.data.tokenizer import ByteTokenizer, build_tokenizer, tokenizer_from_dict
from suite.families.lm.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from suite.families.lm.decode_bench import decode_benchmark
from suite.families.lm.evaluate import heldout_metrics
from suite.models.config import LMConfig
from suite.models.lm import DecoderLM, next_token_loss

ATTENTIONS = available()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight the other tests for cores)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def tiny_lm(attention: str, **overrides) -> DecoderLM:
    cfg = dict(attention=attention, dim=32, depth=2, heads=2)
    cfg.update(overrides)
    return DecoderLM(LMConfig(**cfg))


@pytest.fixture(scope="module")
def kjv_tokens() -> torch.Tensor:
    return ByteTokenizer().encode_tensor(embedded_kjv_text()[:20_000])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_training_loss_falls_on_real_text(attention, kjv_tokens):
    torch.manual_seed(0)
    model = tiny_lm(attention)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        x, y = random_windows(kjv_tokens, 32, 8, gen)
        loss = next_token_loss(model, (x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(257), abs=0.3)  # starts near uniform over 257 tokens
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_logits_depend_on_earlier_tokens_and_never_on_later_ones(attention):
    torch.manual_seed(5)
    model = tiny_lm(attention).eval()
    idx = torch.randint(0, 257, (1, 20))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 257
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-5)  # causal: position < 10 cannot see token 10
    assert not torch.allclose(a[:, 11:], b[:, 11:])  # the mixer carries token 10 to later positions


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_prefill_then_step_logits_equal_parallel_forward(attention):
    torch.manual_seed(1)
    model = tiny_lm(attention).eval()
    idx = torch.randint(0, 257, (2, 40))
    with torch.no_grad():
        full = model(idx)
        logits, states = model.prefill(idx[:, :17])
        stepped = [logits]
        for t in range(17, 40):
            step_logits, states = model.step(idx[:, t], states)
            stepped.append(step_logits[:, None])
    got = torch.cat(stepped, dim=1)
    assert got.shape == full.shape == (2, 40, 257)
    assert (got - full).norm() / full.norm() < 1e-4
    assert states["pos"] == 40


@pytest.mark.parametrize("attention", ["softmax", "ea"])
def test_greedy_generate_equals_argmax_of_repeated_forward(attention):
    torch.manual_seed(2)
    model = tiny_lm(attention).eval()
    prompt = torch.randint(0, 257, (2, 9))
    out = model.generate(prompt, max_new_tokens=6)
    seq = prompt
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_sampling_with_a_seeded_generator_is_reproducible():
    model = tiny_lm("ea:order=2").eval()
    prompt = torch.randint(0, 257, (1, 5))
    a = model.generate(prompt, 8, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 8, temperature=1.0, top_k=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (1, 13)


def test_learned_positions_decode_like_forward_and_refuse_past_the_table():
    model = tiny_lm("softmax", pos_emb="learned", max_seq_len=16).eval()
    idx = torch.randint(0, 257, (1, 16))
    with torch.no_grad():
        logits, states = model.prefill(idx[:, :10])
        for t in range(10, 16):
            step_logits, states = model.step(idx[:, t], states)
        assert torch.allclose(step_logits, model(idx)[:, -1], atol=1e-5)
        with pytest.raises(ValueError, match="position table"):
            model.step(idx[:, 0], states)


def test_decode_state_is_constant_for_ea_and_grows_with_context_for_softmax():
    rows = {a: decode_benchmark(tiny_lm(a), [8, 32], new_tokens=2, warmup_steps=0, prefill_repeats=1)
            for a in ("ea", "softmax")}
    ea, sm = rows["ea"], rows["softmax"]
    assert ea[0]["state_bytes"] == ea[1]["state_bytes"] == ea[1]["state_bytes_after_decode"]
    # EA: 2 layers x [B=1, H=2, 2, order+1=7, D=16] fp32
    assert ea[0]["state_bytes"] == 2 * 2 * 2 * 7 * 16 * 4
    # softmax: 2 layers x K and V x [1, L, 2, 16] fp32
    assert [r["state_bytes"] for r in sm] == [2 * 2 * L * 32 * 4 for L in (8, 32)]
    for row in ea + sm:
        assert row["status"] == "ok" and row["decode_ms_per_token"] > 0 and row["prefill_ms"] > 0
    assert sm[0]["step_backend"] == "sdpa-kvcache"


def test_held_out_metrics_of_a_uniform_model_are_log2_vocab_bits_per_byte():
    model = tiny_lm("softmax")
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # tied head -> every logit 0 -> uniform over 257 tokens
    tokens = ByteTokenizer().encode_tensor(b"abcdefghij" * 20)
    metrics = heldout_metrics(model, tokens, n_bytes=200, seq_len=16, batch_size=4)
    assert metrics["loss"] == pytest.approx(math.log(257), rel=1e-6)
    assert metrics["bpb"] == pytest.approx(math.log2(257), rel=1e-6)
    assert metrics["eval_tokens"] == 16 * (199 // 16)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(4)
    model = tiny_lm("ea:order=2")
    folder = save_checkpoint(tmp_path / "ckpt", model, ByteTokenizer(), {"seq_len": 32, "source": "kjv"})
    loaded, tok, meta = load_checkpoint(folder)
    assert loaded.cfg == model.cfg and isinstance(tok, ByteTokenizer) and meta == {"seq_len": 32, "source": "kjv"}
    assert read_checkpoint_config(folder)["model"]["attention"] == "ea:order=2"
    idx = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model.eval()(idx))
    state = torch.load(folder / "model.pt", weights_only=True)  # plain tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_checkpoint_keeps_a_locally_trained_bpe_tokenizer(tmp_path):
    text = ("the quick brown fox jumps over the lazy dog\n" * 200).encode()
    bpe = build_tokenizer("bpe", text, vocab_size=300)
    assert 257 < bpe.vocab_size <= 300  # the trainer stops early when no pair is left to merge
    assert bpe.decode(bpe.encode("the lazy fox")) == "the lazy fox"
    model = tiny_lm("softmax", vocab_size=bpe.vocab_size)
    _, tok, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, bpe))
    assert tok.encode("quick brown dog") == bpe.encode("quick brown dog") and tok.eos_id == bpe.eos_id
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")  # merges were learnt


def test_reading_a_folder_that_is_not_a_checkpoint_says_so(tmp_path):
    with pytest.raises(ValueError, match="not an LM checkpoint"):
        load_checkpoint(tmp_path)


def test_byte_tokenizer_round_trips_unicode_and_reserves_eos():
    tok = ByteTokenizer()
    ids = tok.encode("naïve — text")
    assert max(ids) < 256 and tok.decode(ids + [tok.eos_id]) == "naïve — text"
    assert tokenizer_from_dict(tok.to_dict()).vocab_size == 257


# -- text sources --------------------------------------------------------------------------------------------
def test_embedded_default_is_a_few_mb_of_english_marked_as_substitute():
    corpus = load_text()
    rec = corpus.record
    assert rec["source"] == "kjv" and rec["substitute"] is True and rec["bytes"] > 4_000_000
    assert corpus.splits["train"].startswith(b"In the beginning God created the heaven and the earth.")
    assert b"[" not in corpus.splits["train"][:100_000]
    sizes = rec["split_bytes"]
    assert sizes["train"] / rec["bytes"] == pytest.approx(0.90, abs=0.01)
    assert sizes["val"] / rec["bytes"] == pytest.approx(0.05, abs=0.01)
    assert corpus.splits["train"].endswith(b"\n")  # cut at a chapter (line) boundary


def test_contiguous_split_cuts_at_line_starts_and_loses_nothing():
    data = b"".join(b"line %d\n" % i for i in range(1000))
    parts = contiguous_split(data)
    assert parts["train"] + parts["val"] + parts["test"] == data
    assert all(p.endswith(b"\n") for p in parts.values())


def test_enwik8_uses_the_standard_byte_split_and_reads_the_published_zip(tmp_path, monkeypatch):
    monkeypatch.setattr(text_mod, "ENWIK8_SPLIT", (90, 5, 5))
    data = bytes(range(100))
    with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as zf:
        zf.writestr("enwik8", data)
    corpus = load_text("enwik8", tmp_path)
    assert corpus.splits == {"train": data[:90], "val": data[90:95], "test": data[95:]}
    assert corpus.record["substitute"] is False
    (tmp_path / "enwik8").write_bytes(data[:50])
    with pytest.raises(DataMissingError, match="expected 100 bytes"):
        load_text("enwik8", tmp_path)


def test_wikitext_103_reads_the_published_raw_files(tmp_path):
    folder = tmp_path / "wikitext-103-raw"
    folder.mkdir()
    for name in ("train", "valid", "test"):
        (folder / f"wiki.{name}.raw").write_text(f" = {name} = \n text of {name} \n")
    corpus = load_text("wikitext-103", tmp_path)
    assert corpus.splits["val"] == b" = valid = \n text of valid \n"
    assert corpus.record["split_bytes"]["test"] == len(b" = test = \n text of test \n")


def test_tinystories_halves_the_valid_file_at_a_story_boundary(tmp_path):
    (tmp_path / "TinyStories-train.txt").write_text("Once upon a time.\n<|endoftext|>\nThe end.\n")
    stories = [f"Story {i}.\n" for i in range(10)]
    (tmp_path / "TinyStories-valid.txt").write_text("<|endoftext|>\n".join(stories))
    corpus = load_text("tinystories", tmp_path)
    val, test = corpus.splits["val"].decode(), corpus.splits["test"].decode()
    assert val + test == "<|endoftext|>\n".join(stories)
    assert val.endswith("<|endoftext|>") and test.startswith("\nStory")


def test_a_local_directory_of_text_files_is_split_90_5_5(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text("".join(f"sentence {i}.{j}\n" for j in range(300)))
    corpus = load_text(str(tmp_path))
    total = corpus.record["bytes"]
    assert corpus.record["source"] == f"file:{tmp_path.name}"
    assert corpus.record["split_bytes"]["train"] / total == pytest.approx(0.9, abs=0.01)
    assert corpus.splits["train"].startswith(b"sentence 0.0\n")


@pytest.mark.parametrize("source, hint", [("enwik8", "enwik8.zip"), ("wikitext-103", "wikitext-103-raw-v1.zip"),
                                          ("tinystories", "TinyStories-valid.txt")])
def test_a_missing_corpus_says_what_to_download_and_where(tmp_path, source, hint):
    with pytest.raises(DataMissingError) as err:
        load_text(source, tmp_path)
    assert hint in str(err.value) and str(tmp_path) in str(err.value) and "--data-root" in str(err.value)


def test_an_unknown_source_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataMissingError, match="valid sources: kjv, enwik8"):
        load_text("no-such-corpus", tmp_path)


def test_a_hugging_face_data_set_is_never_fetched_implicitly():
    with pytest.raises(DataMissingError, match="--download"):
        load_text("hf:suite-test/definitely-not-cached")


def test_windows_score_every_target_once_and_shift_by_one():
    tokens = torch.arange(0, 100, dtype=torch.int64) % 256
    seen = torch.cat([y.flatten() for _, y in sequential_windows(tokens.to(torch.uint8), 10, 3)])
    assert torch.equal(seen, tokens[1:91])  # 9 whole windows of 10 targets
    x, y = random_windows(tokens.to(torch.uint8), 10, 4, torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])


def test_encode_splits_gives_uint8_bytes_for_the_byte_tokenizer():
    corpus = text_mod.TextCorpus({"train": b"ab", "val": b"c", "test": b"d"}, {})
    tensors = encode_splits(corpus, ByteTokenizer())
    assert tensors["train"].dtype == torch.uint8 and tensors["train"].tolist() == [97, 98]


def test_a_hugging_face_data_set_loads_offline_with_its_own_splits(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "local_ds"
    folder.mkdir()
    (folder / "train.txt").write_text("first train line\nsecond train line\n")
    (folder / "test.txt").write_text("held out one\nheld out two\nheld out three\nheld out four\n")
    corpus = load_text(f"hf:{folder}")
    assert corpus.splits["train"] == b"first train line\nsecond train line"
    assert corpus.splits["val"] + corpus.splits["test"] == b"held out one\nheld out two\nheld out three\nheld out four"
    assert corpus.splits["test"].startswith(b"held out") and corpus.record["source"] == f"hf:{folder}"
