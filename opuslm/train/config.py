"""The training configuration: dataclasses loaded from YAML, with command-line overrides.

    python -m opuslm.bin.train --config conf/train.yaml --output_dir exp/x \\
        --optim.lr 3e-4 schedule.max_steps=2000 --resume

Overrides are `--key value`, `--key=value` or `key=value` with dotted keys for nested fields; the
value is parsed as YAML (`1e-4`, `true`, `[0.9, 0.95]`, `{hidden_size: 32}`). A bare `--flag` sets
a boolean to true. Unknown keys and values of the wrong type are errors naming the key and the file
(or "command line").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from opuslm.model.guided_attention import GuidedAttention


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


@dataclass
class ModelConfig:
    # A local Hugging Face model directory, or an inline HF config dict (random init; tests and
    # mini recipes), e.g. {model_type: llama, hidden_size: 32, num_hidden_layers: 2, ...}.
    base: str | dict = ""
    # Per-modality loss weights (text / special / semantic / acoustic); None = the model's defaults.
    loss_weights: dict[str, float] | None = None
    # Weight of the optional CTC alignment loss on the speech frames of ASR examples (0 = off).
    ctc_weight: float = 0.0
    # The same CTC head on the generated speech of TTS examples, reading their transcript: an
    # alignment loss for TTS (0 = off). Both need loss_region "target" (text and speech apart).
    tts_ctc_weight: float = 0.0
    # Prefix-LM attention: the condition rows (e.g. ASR speech) attend in both directions.
    prefix_lm: bool = False
    # CTC outputs per speech frame (MultiStreamLM.ctc_upsample); 1 = one label per frame.
    ctc_upsample: int = 1
    # Guided attention (opuslm/model/guided_attention.py): a diagonal prior on the attention of
    # transcript rows to speech rows and back, e.g. {weight: 1.0, sigma: 0.2, layers: [1, 2],
    # heads: 2}; None = off.
    guided_attention: dict[str, Any] | None = None
    # Training only: the chance that each ASR transcript token is hidden (pad) from the rows
    # after it, so the model must read the next character from the audio (MultiStreamLM).
    transcript_dropout: float = 0.0
    gradient_checkpointing: bool = False


@dataclass
class ManifestWeight:
    path: str = ""
    weight: float = 1.0
    # Keep only the utterances of at most this many sequence rows (None = all): e.g. the same
    # manifest listed twice, its short utterances first in a curriculum phase.
    max_length: int | None = None


@dataclass
class CurriculumPhase:
    # Mixing weights (one per data.train entry, in order) for the optimizer steps before until_step.
    until_step: int = 0
    weights: list[float] = field(default_factory=list)


@dataclass
class SpeechMaskConfig:
    # Time masks on the speech rows of ASR training examples (opuslm/data/augment.py): spans per
    # utterance (0 = off) and the widest span in frames. Validation and decoding never mask.
    num_masks: int = 0
    max_width: int = 5


@dataclass
class DataConfig:
    # The model's joint vocabulary; every manifest must have been built with the same one.
    token_list: str = ""
    train: list[ManifestWeight] = field(default_factory=list)
    # Piecewise-constant mixing weights: each phase's weights until its until_step (strictly
    # increasing), the train entries' own weights after the last phase. Empty = no curriculum.
    curriculum: list[CurriculumPhase] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    # Frame budget per global batch: batch_size x longest sequence (rows) <= batch_bins.
    batch_bins: int = 4096
    num_workers: int = 2
    prefetch_factor: int = 4
    # TTS speaker prompt: "speaker" = another utterance of the same speaker, "self" = the prefix of
    # the utterance itself. prompt_frames None = the length recorded in the manifest.
    prompt_source: str = "speaker"
    prompt_frames: int | None = None
    # "target": loss on the task's target segment; "whole": on every row but the first.
    loss_region: str = "target"
    asr_speech_mask: SpeechMaskConfig = field(default_factory=SpeechMaskConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    accum_grad: int = 1


@dataclass
class ScheduleConfig:
    type: str = "cosine"
    warmup_steps: int = 0
    max_steps: int = 1000
    floor_ratio: float = 0.3


@dataclass
class TrainLoopConfig:
    seed: int = 0
    log_interval: int = 10
    valid_interval: int = 500
    save_interval: int = 500
    keep_last_n: int = 3
    precision: str = "fp32"
    parallel: str = "ddp"
    # Deterministic kernels and single-threaded-safe settings (exact resume on CPU).
    deterministic: bool = False
    # Stop after this many consecutive steps with a non-finite loss or gradient.
    max_bad_steps: int = 10
    progress_bar: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    # A checkpoint directory whose weights start this run (annealing after pre-training).
    init_from: str | None = None
    # With init_from: carry the optimizer state over (True) or start it fresh (False).
    init_optimizer: bool = False
    # Continue from output_dir/checkpoints/latest when it exists.
    resume: bool = False

    def validate(self, where: str = "config") -> None:
        choices = {
            "data.prompt_source": (self.data.prompt_source, ("speaker", "self")),
            "data.loss_region": (self.data.loss_region, ("target", "whole")),
            "schedule.type": (self.schedule.type, ("constant", "cosine", "linear")),
            "train.precision": (self.train.precision, ("fp32", "bf16")),
            "train.parallel": (self.train.parallel, ("ddp", "fsdp")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{where}: {key} must be one of {allowed}, got {value!r}")
        positive = {
            "data.batch_bins": self.data.batch_bins,
            "optim.accum_grad": self.optim.accum_grad,
            "schedule.max_steps": self.schedule.max_steps,
            "train.log_interval": self.train.log_interval,
            "train.valid_interval": self.train.valid_interval,
            "train.save_interval": self.train.save_interval,
            "train.keep_last_n": self.train.keep_last_n,
            "train.max_bad_steps": self.train.max_bad_steps,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{where}: {key} must be positive, got {value}")
        mask = self.data.asr_speech_mask
        if mask.num_masks < 0 or mask.max_width < 1:
            raise ConfigError(
                f"{where}: data.asr_speech_mask needs num_masks >= 0 and max_width >= 1, got "
                f"{mask.num_masks} and {mask.max_width}"
            )
        for key in ("ctc_weight", "tts_ctc_weight"):
            weight = getattr(self.model, key)
            if weight < 0:
                raise ConfigError(f"{where}: model.{key} must be >= 0, got {weight}")
        if not 0 <= self.model.transcript_dropout < 1:
            dropout = self.model.transcript_dropout
            raise ConfigError(f"{where}: model.transcript_dropout must be in [0, 1), got {dropout}")
        if self.model.ctc_upsample < 1:
            upsample = self.model.ctc_upsample
            raise ConfigError(f"{where}: model.ctc_upsample must be >= 1, got {upsample}")
        if self.model.guided_attention is not None:
            try:
                GuidedAttention(**self.model.guided_attention)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{where}: model.guided_attention: {error}") from None
            if self.model.gradient_checkpointing:
                raise ConfigError(
                    f"{where}: model.guided_attention does not work with "
                    "model.gradient_checkpointing"
                )
        if not self.model.base:
            raise ConfigError(f"{where}: model.base is required (HF directory or config dict)")
        if not self.data.token_list:
            raise ConfigError(f"{where}: data.token_list is required")
        if not self.data.train:
            raise ConfigError(f"{where}: data.train lists no manifests")
        for i, entry in enumerate(self.data.train):
            if entry.max_length is not None and entry.max_length < 1:
                raise ConfigError(
                    f"{where}: data.train[{i}].max_length must be >= 1, got {entry.max_length}"
                )
        previous = 0
        for i, phase in enumerate(self.data.curriculum):
            key = f"data.curriculum[{i}]"
            if phase.until_step <= previous:
                bound = f"data.curriculum[{i - 1}].until_step ({previous})" if i else "0"
                raise ConfigError(
                    f"{where}: {key}.until_step must be greater than {bound}, got "
                    f"{phase.until_step}"
                )
            previous = phase.until_step
            if len(phase.weights) != len(self.data.train):
                raise ConfigError(
                    f"{where}: {key}.weights has {len(phase.weights)} weights, one per data.train "
                    f"entry ({len(self.data.train)}) is needed"
                )
            if any(w < 0 for w in phase.weights) or sum(phase.weights) <= 0:
                raise ConfigError(
                    f"{where}: {key}.weights must be >= 0 with a positive sum, got {phase.weights}"
                )

    def to_dict(self) -> dict:
        return to_plain(self)


def to_plain(value: Any) -> Any:
    """Dataclasses / tuples -> YAML-safe dicts / lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check `value` against the annotation `tp`, building nested dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    wrong = ConfigError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return convert(value, arg, key, where)
            except ConfigError:
                continue
        raise wrong
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise wrong
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong
        return build(tp, value, where, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise wrong
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise wrong
            return tuple(
                convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        converted = [convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        _, value_type = args if args else (str, Any)
        return {str(k): convert(v, value_type, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what Python reads as a number.
        try:
            return float(value)
        except ValueError:
            raise wrong from None
    if tp is dict and isinstance(value, dict):
        return value
    if (
        isinstance(tp, type)
        and isinstance(value, tp)
        and not (tp is int and isinstance(value, bool))
    ):
        return value
    raise wrong


def build(cls: type, data: dict, where: str, prefix: str = "") -> Any:
    """A dataclass from a dict; unknown keys are errors naming `prefix + key` and `where`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})"
        )
    kwargs = {k: convert(v, hints[k], f"{prefix}{k}", where) for k, v in data.items()}
    return cls(**kwargs)


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`--a.b 1`, `--a.b=1`, `a.b=1`, bare `--flag` -> [(dotted key, YAML-parsed value)]."""
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                if (
                    i + 1 < len(args)
                    and not args[i + 1].startswith("--")
                    and "=" not in args[i + 1]
                ):
                    text = args[i + 1]
                    i += 1
                else:
                    text = "true"
        elif "=" in arg:
            key, _, text = arg.partition("=")
        else:
            raise ConfigError(f"command line: cannot parse override {arg!r} (use --key value)")
        out.append((key.replace("-", "_"), yaml.safe_load(text)))
        i += 1
    return out


def apply_override(data: dict, key: str, value: Any) -> None:
    """Set a dotted key in a nested dict (missing levels are created; build() checks names)."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # missing, or an optional section left at None
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"command line: {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply overrides."""
    data: dict = {}
    where = "command line"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections")
        data = loaded or {}
    config = build(Config, data, where)
    if overrides:
        data = config.to_dict()
        for key, value in parse_overrides(overrides):
            apply_override(data, key, value)
        config = build(Config, data, f"{where} + command line overrides")
    return config
