"""Pathfinder / Path-X generator, after Linsley et al. (``drewlinsley/pathfinder``, the snakes2 generator that LRA's
data were drawn with); it writes the release layout that ``pathfinder.py`` loads (its docstring shows it).

Per image (parameters from LRA's TFDS builder docstrings):
1. A paddle is a line of ``paddle_length`` px drawn at ``antialias_scale`` x resolution and Lanczos-downsampled;
   its footprint is the same line dilated by a disk of radius ``margin`` (also downsampled). An occupancy
   mask starts with a ``padding``-px border.
2. Two target contours: seed A's tail is drawn uniformly among free pixels at least ``2*seed_distance`` from
   the border (where the paddle's footprint would not hit the mask), seed B's tail lies ``seed_distance``
   from A's in a random direction. Both grow alternately to ``contour_length`` paddles.
3. Growth: the next pivot is the last one moved ``paddle_length + 2*margin`` along the last orientation;
   candidate heads lie on the circle of radius ``paddle_length + margin`` around it, weighted by
   ``(1 - dilated occupancy) * max(cos(min(continuity*|turn|, pi/2)), 0)**2``; a drawn paddle whose
   footprint overlaps the mask (sum >= 1.8) is redrawn up to ``max_paddle_retrial`` times, else both
   target contours are thrown away and redrawn. Footprints join the mask one paddle late, so a contour does
   not block itself.
4. Distractor contours of ``contour_length // 3`` paddles are added the same way (failures tolerated;
   placement stops when under 1% of the image is free).
5. Markers: disks of radius ``marker_radius`` at the start tip of one target contour and at the end tip of
   the same contour (label 1) or of the other one (label 0).
6. Composite = pixelwise max, rescaled so the brightest pixel is 255 (as ``scipy.misc.imsave`` did).

Intensities as in the reference: target paddles ``paddle_contrast * snake_contrast``, distractor paddles
``snake_contrast``, markers 1.

Deliberate differences from the reference code:
- Contours never touch (as the occupancy mask intends): a new target paddle is also kept clear of the other
  target contour's newest paddle, which the lagging mask does not hold yet (the reference lets the two
  targets touch there), and the last paddles of *both* targets enter the mask before distractors are drawn
  (the reference adds only the second one's).
- Labels are balanced exactly: each pair of consecutive images holds one of each label, in random order.
- Every image has its own random stream (seed, stream, resolution, contour length, batch, index), so
  generation is deterministic, runs in parallel and can be extended later without changing what exists.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from suite.data.lra.progress import progress_bar

if TYPE_CHECKING:
    pass

from suite.data.lra.pathfinder import CONTOUR_DIRS, GENERATOR_RECORD, RESOLUTIONS, contour_dir_name, read_metadata_file

LRA_NUM_IMAGES = 200_000
GENERATOR_VERSION = 1
_LABEL_STREAM = 0x1ABE1


@dataclass(frozen=True)
class PathfinderParams:
    """Generator settings; ``lra_params`` gives the ones LRA's data was made with."""

    resolution: int
    contour_length: int
    padding: int
    paddle_length: int
    paddle_thickness: float
    paddle_margins: tuple[int, ...]
    marker_radius: float
    seed_distance: int
    continuity: float
    antialias_scale: int
    snake_contrasts: tuple[float, ...]
    paddle_contrasts: tuple[float, ...]
    distractor_length: int
    num_distractor_snakes: int
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4
    stop_with_availability: float = 0.01


def lra_params(resolution: int, contour_length: int) -> PathfinderParams:
    """LRA's settings for pathfinder32 / pathfinder128 (TFDS builder docstrings; wrapper defaults elsewhere)."""
    if contour_length not in CONTOUR_DIRS:
        raise ValueError(f"contour_length must be one of {sorted(CONTOUR_DIRS)}, got {contour_length}")
    distractor_length = contour_length // 3
    if resolution == 32:
        return PathfinderParams(32, contour_length, padding=1, paddle_length=2, paddle_thickness=0.5,
                                paddle_margins=(1,), marker_radius=1.5, seed_distance=7, continuity=1.0,
                                antialias_scale=2, snake_contrasts=(2.0,), paddle_contrasts=(0.75,),
                                distractor_length=distractor_length,
                                num_distractor_snakes=20 // distractor_length)
    if resolution == 128:
        return PathfinderParams(128, contour_length, padding=1, paddle_length=5, paddle_thickness=1.5,
                                paddle_margins=(2, 3), marker_radius=3.0, seed_distance=20, continuity=1.8,
                                antialias_scale=2, snake_contrasts=(0.9,), paddle_contrasts=(1.0,),
                                distractor_length=distractor_length,
                                num_distractor_snakes=35 // distractor_length)
    raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")


# ----------------------------------------------------------------------------------------------- drawing
def _translate(coord, theta: float, dist: float) -> tuple[int, int]:
    return (int(math.ceil(coord[0] + dist * math.sin(theta))), int(math.ceil(coord[1] + dist * math.cos(theta))))


def _flip(theta: float) -> float:
    return theta + math.pi if theta < 0 else theta - math.pi


@lru_cache(maxsize=64)
def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _dilate(image: np.ndarray, struct: np.ndarray) -> np.ndarray:
    """Grey dilation: out[y, x] = max of image over struct centred on (y, x) (cv2.dilate, anchor at the centre)."""
    r = struct.shape[0] // 2
    h, w = image.shape
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=image.dtype)
    padded[r:r + h, r:r + w] = image
    out = np.zeros_like(image)
    for dy, dx in zip(*np.nonzero(struct)):
        np.maximum(out, padded[dy:dy + h, dx:dx + w], out=out)
    return out


def _lanczos(image_u8: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image_u8).resize((size, size), Image.Resampling.LANCZOS),
                      dtype=np.float32) / 255.0


@lru_cache(maxsize=32768)
def _paddle(theta: float, length: int, thickness: float, margin: int, aa: int):
    """(line [S, S] in [0, 1], footprint [S, S] in [0, 1], struct bool [S, S]) of a paddle whose tail is the centre."""
    half = length + int(math.ceil(thickness)) + margin
    size = 2 * half + 1
    centre = half * aa
    head = _translate((centre, centre), theta, length * aa)
    blown = Image.new("L", (2 * centre + 1, 2 * centre + 1), 0)
    ImageDraw.Draw(blown).line([(centre, centre), (head[1], head[0])], fill=255,
                               width=int(round(thickness * aa)))
    blown_u8 = np.asarray(blown)
    line = _lanczos(blown_u8, size)
    footprint = _lanczos(_dilate(blown_u8, _disk(margin * aa)), size)
    return line, footprint, footprint >= 1.0


def _window(coord, half: int, shape):
    """(image slices, patch slices) where a (2*half+1)-square patch centred on coord meets the image, or None."""
    y0, x0 = coord[0] - half, coord[1] - half
    ys, ye = max(y0, 0), min(y0 + 2 * half + 1, shape[0])
    xs, xe = max(x0, 0), min(x0 + 2 * half + 1, shape[1])
    if ys >= ye or xs >= xe:
        return None
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))


def _stamp_max(image: np.ndarray, patch: np.ndarray, coord) -> None:
    """image = max(image, patch centred on coord), in place, clipped at the borders."""
    window = _window(coord, patch.shape[0] // 2, image.shape)
    if window is not None:
        np.maximum(image[window[0]], patch[window[1]], out=image[window[0]])


def _overlaps(mask: np.ndarray, patch: np.ndarray, coord, limit: float = 1.8) -> bool:
    """Whether max(mask + patch centred on coord) >= limit (mask and patch lie in [0, 1])."""
    window = _window(coord, patch.shape[0] // 2, mask.shape)
    return window is not None and float((mask[window[0]] + patch[window[1]]).max()) >= limit


def _any_within(occupied: np.ndarray, struct: np.ndarray) -> np.ndarray:
    """bool [H, W]: whether occupied is True anywhere in struct centred on each pixel (binary dilation)."""
    r = struct.shape[0] // 2
    h, w = occupied.shape
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    padded[r:r + h, r:r + w] = occupied
    out = np.zeros_like(occupied)
    for dy, dx in zip(*np.nonzero(struct)):
        out |= padded[dy:dy + h, dx:dx + w]
    return out


@lru_cache(maxsize=16)
def _disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = np.nonzero(_disk(radius))
    return dy - radius, dx - radius


_PAD = 8  # zero border around occupancy masks, wider than any dilation radius used on them


def _new_mask(shape) -> np.ndarray:
    """A zero occupancy mask of ``shape`` as a view into a zero array with a _PAD border (see _dilated_at)."""
    return np.zeros((shape[0] + 2 * _PAD, shape[1] + 2 * _PAD), dtype=np.float32)[_PAD:-_PAD, _PAD:-_PAD]


def _copy_mask(mask: np.ndarray) -> np.ndarray:
    assert mask.base is not None  # made by _new_mask: a view into the padded array
    return mask.base.copy()[_PAD:-_PAD, _PAD:-_PAD]


def _dilated_at(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation of mask (made by _new_mask) by a disk, evaluated only at the pixels (ys, xs): float [len(ys)].
    Pixels outside the image count as 0, like cv2.dilate's default border."""
    dy, dx = _disk_offsets(radius)
    assert mask.base is not None  # made by _new_mask: a view into the padded array
    return mask.base[ys[:, None] + (dy + _PAD)[None, :], xs[:, None] + (dx + _PAD)[None, :]].max(axis=1)


@lru_cache(maxsize=16)
def _circle_candidates(step: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique integer offsets (int [M, 2], lexicographic) of points 1 px apart on a circle of radius step, and their
    orientations atan2(dy, dx). Offsets are floor(step * (sin, cos)), so pivot + offset equals the reference's
    int() truncation of pivot + step * (sin, cos) at every in-bounds pixel."""
    angles = np.arange(0, 360, 360.0 / (2 * step * np.pi)) * np.pi / 180
    offsets = np.unique(np.floor(np.stack([step * np.sin(angles), step * np.cos(angles)], axis=1)).astype(int),
                        axis=0)
    return offsets, np.arctan2(offsets[:, 0], offsets[:, 1])


def _marker(shape, coord, radius: float, aa: int) -> np.ndarray:
    """A disk drawn at aa x resolution around coord and Lanczos-downsampled, in [0, 1]."""
    yy = np.arange(shape[0] * aa)[:, None] - coord[0] * aa
    xx = np.arange(shape[1] * aa)[None, :] - coord[1] * aa
    blown = ((xx * xx + yy * yy) <= (radius * aa) ** 2).astype(np.uint8) * 255
    return np.asarray(Image.fromarray(blown).resize((shape[1], shape[0]), Image.Resampling.LANCZOS), np.float32) / 255.0


def _in_bounds(coord, shape) -> bool:
    return 0 <= coord[0] < shape[0] and 0 <= coord[1] < shape[1]


# ----------------------------------------------------------------------------------------------- contours
@dataclass
class _Snake:
    """A contour being grown: its drawn layer, last pivot and orientation, and the footprint (patch, centre) of
    its last paddle, which joins the occupancy mask only when the next paddle is placed."""

    layer: np.ndarray
    pivot: tuple[int, int]
    theta: float
    last_footprint: tuple[np.ndarray, tuple[int, int]]
    tips: list = field(default_factory=list)  # tail of the seed paddle, then the head of every added paddle


class _Canvas:
    def __init__(self, p: PathfinderParams, margin: int, rng: np.random.Generator):
        self.p, self.margin, self.rng = p, margin, rng
        self.shape = (p.resolution, p.resolution)

    def paddle(self, theta: float):
        p = self.p
        return _paddle(theta, p.paddle_length, p.paddle_thickness, self.margin, p.antialias_scale)

    def pick(self, values: tuple[float, ...]) -> float:
        return values[int(self.rng.integers(len(values)))]

    def seed(self, mask: np.ndarray, border: int,
             check_availability: bool) -> tuple[tuple[int, int], float, tuple[int, int]] | None:
        """A seed paddle's (tail, theta, pivot) with the tail where the paddle's footprint meets no occupied
        pixel (occupied: mask > 0.3, or within ``border`` px of the edge), or None."""
        p, rng = self.p, self.rng
        occupied = mask > 0.3
        for _ in range(p.max_paddle_retrial + 1):
            theta = int(rng.integers(-180, 180)) * np.pi / 180
            _, _, struct = self.paddle(theta)
            if check_availability and 1.0 - occupied.mean() < p.stop_with_availability:
                return None
            lined = occupied.copy()
            lined[:border], lined[-border:], lined[:, :border], lined[:, -border:] = True, True, True, True
            free = np.flatnonzero(~_any_within(lined, struct))
            if free.size == 0:
                return None
            tail = divmod(int(free[rng.integers(free.size)]), self.shape[1])
            head = _translate(tail, theta, p.paddle_length)
            pivot = _translate(head, _flip(theta), p.paddle_length + self.margin)
            if _in_bounds(head, self.shape) and _in_bounds(pivot, self.shape):
                return tail, theta, pivot
        return None

    def start(self, tail, theta: float, pivot, contrast: float) -> _Snake:
        line, footprint, _ = self.paddle(theta)
        layer = np.zeros(self.shape, dtype=np.float32)
        _stamp_max(layer, line * contrast, tail)
        return _Snake(layer, pivot, theta, (footprint, tail), [tail])

    def extend(self, snake: _Snake, mask: np.ndarray, contrast: float, avoid=None) -> bool:
        """Add one paddle to snake; on success the previous paddle's footprint joins mask (both in place).
        ``avoid``: another contour's newest footprint (patch, centre), not yet in mask but kept clear too."""
        p, rng, margin = self.p, self.rng, self.margin
        blocked = mask
        if avoid is not None:
            blocked = _copy_mask(mask)
            _stamp_max(blocked, *avoid)
        pivot = _translate(snake.pivot, snake.theta, p.paddle_length + 2 * margin)
        offsets, orientations = _circle_candidates(p.paddle_length + margin)
        ys, xs = pivot[0] + offsets[:, 0], pivot[1] + offsets[:, 1]
        inside = (ys >= 0) & (ys < self.shape[0]) & (xs >= 0) & (xs < self.shape[1])
        if not inside.any():
            return False
        ys, xs, orientations = ys[inside], xs[inside], orientations[inside]
        turn = np.abs(orientations - snake.theta)
        turn = np.minimum(np.minimum(turn, 2 * np.pi - turn) * p.continuity, 0.5 * np.pi)
        weights = np.maximum(np.cos(turn), 0) ** 2 * (1 - _dilated_at(blocked, ys, xs, margin))
        total = weights.sum()
        if total < 1e-4:
            return False
        cmf = np.cumsum(weights / total)
        for _ in range(p.max_paddle_retrial + 1):
            index = int(np.argmax(cmf - rng.random() > 0))
            head = (int(ys[index]), int(xs[index]))
            line, footprint, _ = self.paddle(_flip(float(orientations[index])))
            if not _overlaps(blocked, footprint, head):
                _stamp_max(mask, *snake.last_footprint)
                _stamp_max(snake.layer, line * contrast, head)
                snake.pivot, snake.theta = pivot, float(orientations[index])
                snake.last_footprint = (footprint, head)
                snake.tips.append(head)
                return True
        return False


def _two_targets(canvas: _Canvas, border_mask: np.ndarray):
    """Two target contours of contour_length paddles grown alternately, with the occupancy mask, or None."""
    p, rng = canvas.p, canvas.rng
    mus = list(p.snake_contrasts) * 2
    rng.shuffle(mus)
    mask = _copy_mask(border_mask)
    seed_a = canvas.seed(mask, max(2 * p.seed_distance, p.padding), check_availability=False)
    if seed_a is None:
        return None
    tail_a, theta_a, pivot_a = seed_a
    for _ in range(p.max_paddle_retrial + 1):
        theta_b = int(rng.integers(-180, 180)) * np.pi / 180
        direction = int(rng.integers(0, 360)) * np.pi / 180
        tail_b = (int(np.round(tail_a[0] + p.seed_distance * np.sin(direction))),
                  int(np.round(tail_a[1] + p.seed_distance * np.cos(direction))))
        head_b = _translate(tail_b, theta_b, p.paddle_length)
        pivot_b = _translate(head_b, _flip(theta_b), p.paddle_length + canvas.margin)
        if all(_in_bounds(c, canvas.shape) for c in (tail_b, head_b, pivot_b)):
            break
    else:
        return None
    snakes = [canvas.start(tail_a, theta_a, pivot_a, canvas.pick(p.paddle_contrasts) * mus[0]),
              canvas.start(tail_b, theta_b, pivot_b, canvas.pick(p.paddle_contrasts) * mus[1])]
    for _ in range(p.contour_length - 1):
        contrast = canvas.pick(p.paddle_contrasts)
        for i, (snake, mu) in enumerate(zip(snakes, mus)):
            if not canvas.extend(snake, mask, contrast * mu, avoid=snakes[1 - i].last_footprint):
                return None
    for snake in snakes:
        _stamp_max(mask, *snake.last_footprint)
    return snakes, mask


def _distractor(canvas: _Canvas, image: np.ndarray, mask: np.ndarray) -> bool:
    """Draw one distractor contour onto image and mask (in place); on failure leave both unchanged."""
    p = canvas.p
    contrast = canvas.pick(p.snake_contrasts)
    seed = canvas.seed(mask, 1, check_availability=True)
    if seed is None:
        return False
    snake = canvas.start(*seed, contrast)
    trial_mask = _copy_mask(mask)
    for _ in range(p.distractor_length - 1):
        if not canvas.extend(snake, trial_mask, canvas.pick(p.snake_contrasts)):
            return False
    _stamp_max(trial_mask, *snake.last_footprint)
    np.maximum(image, snake.layer, out=image)
    mask[...] = trial_mask
    return True


def _bytescale(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    scale = 255.0 / (high - low) if high > low else 1.0
    return (((image - low) * scale).clip(0, 255) + 0.5).astype(np.uint8)


@dataclass
class PathfinderSample:
    """One rendered image with what made it (for tests and inspection). Arrays are [H, W]."""

    image: np.ndarray                 # uint8, what is saved
    label: int                        # 1: both markers on one contour
    margin: int
    targets: list[np.ndarray]         # float layers of the two target contours
    distractors: np.ndarray           # float layer of all distractor contours
    markers: list[np.ndarray]         # float layers of the origin and terminal marker
    marker_tips: list[tuple[int, int]]
    marked_contour: int               # target contour that carries the origin marker
    tips: list[list[tuple[int, int]]] = field(default_factory=list)  # per target: seed tail, then paddle heads


def render_pathfinder_image(params: PathfinderParams, label: int, rng: np.random.Generator) -> PathfinderSample:
    """Draw one Pathfinder image with the given label (0 or 1)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label}")
    margin = params.paddle_margins[int(rng.integers(len(params.paddle_margins)))]
    canvas = _Canvas(params, margin, rng)
    shape = canvas.shape
    border_mask = _new_mask(shape)
    pad = params.padding
    border_mask[:pad], border_mask[-pad:], border_mask[:, :pad], border_mask[:, -pad:] = 1, 1, 1, 1
    targets = None
    while targets is None:
        targets = _two_targets(canvas, border_mask)
    snakes, mask = targets
    image = np.maximum(snakes[0].layer, snakes[1].layer)
    distractors = np.zeros(shape, dtype=np.float32)
    for _ in range(params.num_distractor_snakes):
        for _ in range(params.max_distractor_retrial + 1):
            if _distractor(canvas, distractors, mask):
                break
    marked = int(rng.integers(0, 2))
    other = marked if label == 1 else 1 - marked
    tips = [snakes[marked].tips[0], snakes[other].tips[-1]]
    markers = [_marker(shape, tip, params.marker_radius, params.antialias_scale) for tip in tips]
    composite = np.maximum(np.maximum(image, distractors), np.maximum(markers[0], markers[1]))
    return PathfinderSample(_bytescale(composite), label, margin, [s.layer for s in snakes], distractors,
                            markers, tips, marked, [list(s.tips) for s in snakes])


# ----------------------------------------------------------------------------------------------- files
def _metadata_row(batch: int, k: int, label: int, p: PathfinderParams, margin: int) -> str:
    return (f"imgs/{batch} sample_{k}.png {k} {label} {p.continuity} {p.contour_length} {p.distractor_length} "
            f"{p.paddle_length} {p.paddle_thickness} {margin} {len(p.paddle_contrasts)}")


def _check_generator_record(curv_dir: Path, record: dict) -> None:
    path = curv_dir / GENERATOR_RECORD
    record = json.loads(json.dumps(record))  # tuples become lists, as they come back from the file
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != record:
            raise ValueError(f"{curv_dir} holds Pathfinder images made with other settings ({path}); "
                             f"use another output directory")
    else:
        curv_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, sort_keys=True))


def _balanced_labels(count: int, key: list[int]) -> np.ndarray:
    """int [count] of 0/1 where each consecutive pair (2j, 2j+1) holds one 0 and one 1 in random order,
    so every even-length prefix of a batch is exactly balanced."""
    first = np.random.default_rng(key).integers(0, 2, size=(count + 1) // 2)
    return np.stack([first, 1 - first], axis=1).reshape(-1)[:count]


def _render_indexed(job: tuple[PathfinderParams, int, tuple[int, ...]]) -> tuple[np.ndarray, int, int]:
    """Worker: (image uint8 [H, W], label, margin) for (params, label, random-stream key)."""
    params, label, key = job
    sample = render_pathfinder_image(params, label, np.random.default_rng(list(key)))
    return sample.image, sample.label, sample.margin


def generate_pathfinder(out_dir: str | os.PathLike, resolution: int = 32, contour_length: int = 14,
                        num: int = LRA_NUM_IMAGES, seed: int = 0, progress: bool = True,
                        images_per_batch: int = 1000, workers: int = 1, stream: int = 0) -> dict:
    """Write ``num`` images and their metadata under ``out_dir/pathfinder{resolution}/<curv dir>/``.

    Deterministic for (seed, stream, resolution, contour_length, images_per_batch), whatever ``workers``
    (processes drawing images in parallel); ``stream`` gives independent image sets for one seed (the cache
    uses one per split). Images already there from an earlier call with the same settings are kept,
    so a larger ``num`` only adds the missing ones. Returns a summary dict (directory, counts, seed, parameters).
    Cost on one CPU core: about 25 ms per 32x32 image at contour length 14 and 0.4 s per 128x128 one
    (most attempts at two long target contours fail and are redrawn, as in the reference generator).
    """
    if num < 0 or images_per_batch < 1 or workers < 1:
        raise ValueError(f"need num >= 0, images_per_batch >= 1 and workers >= 1, "
                         f"got {num}, {images_per_batch}, {workers}")
    params = lra_params(resolution, contour_length)
    curv_dir = Path(out_dir) / f"pathfinder{resolution}" / contour_dir_name(contour_length)
    _check_generator_record(curv_dir, {"generator": "suite.data.lra.pathfinder", "version": GENERATOR_VERSION,
                                       "seed": seed, "stream": stream, "images_per_batch": images_per_batch,
                                       "params": asdict(params)})
    num_batches = math.ceil(num / images_per_batch)
    todo = []
    for batch in range(num_batches):
        meta = curv_dir / "metadata" / f"{batch}.npy"
        have = len(read_metadata_file(meta)) if meta.exists() else 0
        want = min(images_per_batch, num - batch * images_per_batch)
        if have < want:
            todo.append((batch, have, want))
    label_counts = [0, 0]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        with progress_bar(f"Pathfinder{resolution} L={contour_length} (seed {seed})",
                          sum(w - h for _, h, w in todo), enabled=progress) as advance:
            for batch, have, want in todo:
                img_dir = curv_dir / "imgs" / str(batch)
                img_dir.mkdir(parents=True, exist_ok=True)
                meta = curv_dir / "metadata" / f"{batch}.npy"
                rows = [" ".join(r) for r in read_metadata_file(meta)] if meta.exists() else []
                labels = _balanced_labels(images_per_batch,
                                          [seed, stream, resolution, contour_length, batch, _LABEL_STREAM])
                jobs = [(params, int(labels[k]), (seed, stream, resolution, contour_length, batch, k))
                        for k in range(have, want)]
                results = pool.map(_render_indexed, jobs, chunksize=8) if pool else map(_render_indexed, jobs)
                for k, (image, label, margin) in zip(range(have, want), results):
                    Image.fromarray(image).save(img_dir / f"sample_{k}.png")
                    rows.append(_metadata_row(batch, k, label, params, margin))
                    label_counts[label] += 1
                    advance()
                meta.parent.mkdir(parents=True, exist_ok=True)
                tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
                tmp.write_text("".join(r + "\n" for r in rows))
                os.replace(tmp, meta)
    finally:
        if pool is not None:
            pool.shutdown()
    return {"dir": str(curv_dir), "num": num, "batches": num_batches, "generated": sum(label_counts),
            "generated_labels": {"0": label_counts[0], "1": label_counts[1]}, "seed": seed,
            "params": asdict(params)}
