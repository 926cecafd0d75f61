"""LM checkpoints: a folder with the weights (``model.pt``, a plain state_dict) and ``config.json`` beside them.

``config.json`` holds the LMConfig, the tokenizer (a BPE vocabulary in full) and free-form metadata (data
record, training steps, metrics), so a model trained overnight can be rebuilt for evaluation and decoding.
Weights load with ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from suite.data.tokenizer import tokenizer_from_dict
from suite.models.config import LMConfig
from suite.models.lm import DecoderLM
from suite.run.artifacts import atomic_folder

WEIGHTS, CONFIG = "model.pt", "config.json"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: DecoderLM, tokenizer: Any, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``path/model.pt`` and ``path/config.json`` all or nothing (a failed write, e.g. a full disk, leaves no
    partial checkpoint: ``suite.run.artifacts.atomic_folder``); returns the folder."""
    folder = Path(path)
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"tokenizer vocab_size {tokenizer.vocab_size} != model vocab_size {model.cfg.vocab_size}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = {"format": FORMAT_VERSION, "model": model.cfg.to_dict(), "tokenizer": tokenizer.to_dict(),
              "metadata": metadata or {}}
    with atomic_folder(folder) as partial:
        torch.save(state, partial / WEIGHTS)
        (partial / CONFIG).write_text(json.dumps(config, indent=1, default=str))
    return folder


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder; ValueError when it is not one."""
    folder = Path(path)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise ValueError(f"{folder} is not an LM checkpoint (expected {WEIGHTS} and {CONFIG} in that folder)")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder}: checkpoint format {config.get('format')!r}, this suite reads {FORMAT_VERSION}")
    return config


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DecoderLM, Any, dict[str, Any]]:
    """Rebuild (model in eval mode on ``device``, tokenizer, metadata) from a checkpoint folder."""
    config = read_checkpoint_config(path)
    model = DecoderLM(LMConfig.from_dict(config["model"]))
    state = torch.load(Path(path) / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer_from_dict(config["tokenizer"]), config["metadata"]
