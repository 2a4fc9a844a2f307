"""Checkpoint directories, written atomically and loaded without unpickling.

    exp/x/checkpoints/
        latest                  "step_1200\\n", replaced atomically after each save
        step_1200/
            model.safetensors   weights (tied tensors stored once, aliases in the metadata)
            train_state.pt      optimizer, scheduler, sampler position, RNG states, counters:
                                tensors and primitive containers only (torch.load weights_only)
            config.yaml         {"model": MultiStreamLM.config_dict(), "training": run config}
            token_list.json

A checkpoint is first written to a hidden temp directory next to its final name and then renamed,
so a crash at any point leaves the previous checkpoint and `latest` intact.
"""

from __future__ import annotations

import json
import logging
import os
import pickle  # only for its exception type: nothing here unpickles
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from opuslm.fileio import write_directory_atomic, write_text_atomic
from opuslm.vocab import TokenList

WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.pt"
CONFIG = "config.yaml"
TOKEN_LIST = "token_list.json"
LATEST = "latest"
STEP_PREFIX = "step_"

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or incompatible."""


# ------------------------------------------------------------------------------ weights
def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """safetensors file; tensors sharing storage (tied embeddings) are stored once."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous().cpu()
    save_file(unique, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The full state dict (aliases restored as the same tensor)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {name: f.get_tensor(name) for name in f.keys()}
            metadata = f.metadata() or {}
        for alias, name in json.loads(metadata.get("aliases", "{}")).items():
            state[alias] = state[name]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors weights file ({e!r})") from None
    return state


# ------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors / primitives (weights_only loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ directories
def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"{STEP_PREFIX}{step}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete step directories under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def is_complete(directory: Path) -> bool:
    return all((directory / name).exists() for name in (WEIGHTS, TRAIN_STATE, CONFIG, TOKEN_LIST))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The directory `latest` points at, or None when no checkpoint was completed.

    If the pointer's target is gone (a crash while a checkpoint of the same step was being
    replaced), or there is no pointer beside complete step directories (a crash before the first
    pointer was written, or step directories copied in by hand), the newest complete step
    directory is used instead: resuming must never start over beside a checkpoint.
    """
    pointer = Path(root) / LATEST
    target = None
    if pointer.exists():
        target = Path(root) / pointer.read_text(encoding="utf-8").strip()
        if is_complete(target):
            return target
    # Only when the pointer does not lead to a checkpoint are the step directories listed.
    complete = [p for p in list_checkpoints(root) if is_complete(p)]
    if not complete:
        if target is not None:
            raise CheckpointError(
                f"{pointer} points at {target}, which is not a complete checkpoint"
            )
        return None
    if target is None:
        logger.warning("%s has no %s pointer: using %s", root, LATEST, complete[-1])
    else:
        logger.warning(
            "%s points at %s, which is incomplete: using %s", pointer, target, complete[-1]
        )
    return complete[-1]


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    weights: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    config: dict[str, Any],
    token_list: TokenList,
    keep_last_n: int | None = None,
) -> Path:
    """Write `root/step_<step>/` atomically, point `latest` at it, keep the last N."""
    root = Path(root)

    def write(directory: Path) -> None:
        save_weights(weights, directory / WEIGHTS)
        torch.save(train_state, directory / TRAIN_STATE)
        (directory / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        token_list.save(directory / TOKEN_LIST)

    # Flushed before the rename: `latest` must never point at weights still only in the page
    # cache. The same step saved again replaces the old one.
    final = write_directory_atomic(step_dir(root, step), write)
    write_text_atomic(root / LATEST, final.name + "\n")
    if keep_last_n is not None:
        for old in list_checkpoints(root)[:-keep_last_n]:
            shutil.rmtree(old)
    for stale in root.glob(f".{STEP_PREFIX}*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_train_state(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / TRAIN_STATE
    if not path.exists():
        raise CheckpointError(f"{path}: training state not found (weights-only checkpoint?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        # torch's own message suggests weights_only=False, which would run the file's code.
        match = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(e))
        reason = match.group(1) if match else (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{path}: refused: not a training state written by opuslm (only tensors and plain "
            f"containers are loaded, nothing is unpickled): {reason}"
        ) from None


def load_checkpoint_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint config not found")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def require_token_list(directory: str | os.PathLike, expected: TokenList) -> None:
    """Raise naming the first difference if the checkpoint's token list is not `expected`."""
    path = Path(directory) / TOKEN_LIST
    expected.require_same(TokenList.load(path), what=f"token list of checkpoint {directory}")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A step directory, or a checkpoints root / experiment dir (followed through `latest`)."""
    path = Path(path)
    if (path / WEIGHTS).exists():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST).exists():
            found = latest_checkpoint(root)
            if found is not None:
                return found
    raise CheckpointError(f"{path}: not a checkpoint directory (no {WEIGHTS}, no {LATEST} pointer)")


def average_weights(directories: list[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (in float64, cast back); other tensors: the last."""
    if not directories:
        raise CheckpointError("no checkpoints to average")
    states = [load_weights(Path(d) / WEIGHTS) for d in directories]
    names = list(states[0])
    for directory, state in zip(directories, states):
        if list(state) != names:
            diff = sorted(set(state) ^ set(names))
            raise CheckpointError(f"{directory}: parameter names differ, e.g. {diff[:3]}")
    averaged: dict[str, torch.Tensor] = {}
    done: dict[int, torch.Tensor] = {}  # tied tensors (aliases) are averaged once and stay tied
    for name in names:
        first = states[0][name]
        if id(first) not in done:
            tensors = [s[name] for s in states]
            if first.is_floating_point():
                done[id(first)] = torch.stack([t.double() for t in tensors]).mean(0).to(first.dtype)
            else:
                done[id(first)] = tensors[-1]
        averaged[name] = done[id(first)]
    return averaged
