"""The packed model directory: all that inference needs, loadable without unpickling anything.

    packed/
        config.yaml                 PackedConfig: the LM's config_dict, the tokenizer directories
                                    (relative), sample and frame rate, the TTS prompt settings,
                                    default decoding settings per task
        model.safetensors           the LM's weights
        token_list.json             the joint vocabulary
        text_tokenizer/             the text tokenizer's own saved directory
        semantic/                   k-means centroids and feature config
        codec/                      codec config and weights
        default_prompt.safetensors  optional: raw token rows [P, S] of the TTS speaker used when
                                    `synthesize` gets no prompt
        lexicon.txt                 optional: the word list of ASR decoding's lexicon_penalty
                                    (`opuslm.model.lexicon`), one word per line
        word_lm.counts              optional: ASR decoding's word LM (word_lm_weight,
          or word_lm.arpa           `opuslm.model.word_lm`): n-gram counts, estimated at load
                                    time, or an ARPA back-off file

Only safetensors, JSON, YAML and plain text are read, so a planted pickle is refused, never run.
`pack` writes the directory under a temporary name and renames it into place; it checks that the
token list matches the tokenizers and that the weights have the shapes the config and token list
need. `load_packed` repeats these checks and names the first difference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors
import torch
import yaml
from safetensors.numpy import load_file as load_numpy_file
from safetensors.numpy import save_file as save_numpy_file

from opuslm.fileio import write_directory_atomic
from opuslm.model.generate import GenerationConfig, SamplingConfig
from opuslm.model.lexicon import Lexicon, LexiconError
from opuslm.model.lm import MultiStreamLM
from opuslm.model.word_lm import WordLMError, WordLMScorer, WordNgramLM, is_arpa
from opuslm.tasks import TASK_TARGETS, crop_prompt
from opuslm.tokenizers.frames import FrameAlignmentError, check_compatible, tokenize_waveforms
from opuslm.train.checkpoint import load_weights, resolve_checkpoint, save_weights
from opuslm.vocab import TokenList, VocabError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"
TOKEN_LIST = "token_list.json"
TEXT_TOKENIZER = "text_tokenizer"
SEMANTIC = "semantic"
CODEC = "codec"
DEFAULT_PROMPT = "default_prompt.safetensors"
LEXICON = "lexicon.txt"
WORD_LM = "word_lm.counts"
WORD_LM_ARPA = "word_lm.arpa"
# What a packed directory must hold, for error messages (the default prompt is optional).
REQUIRED_ENTRIES = {
    CONFIG: "model architecture, tokenizer paths, sample rate, decoding defaults",
    WEIGHTS: "the LM's weights",
    TOKEN_LIST: "the joint vocabulary",
    f"{TEXT_TOKENIZER}/": "the text tokenizer",
    f"{SEMANTIC}/": "the semantic tokenizer: features and k-means",
    f"{CODEC}/": "the codec",
}
DEFAULT_PROMPT_SECONDS = 3.0

# Decoding defaults per task. Speech is sampled (greedy speech decoding tends to loop on one
# unit); text is greedy. max_seconds bounds speech targets and is turned into frames at pack time.
DEFAULT_DECODING: dict[str, dict[str, Any]] = {
    "asr": {"max_frames": 256},
    "textlm": {"max_frames": 128},
    "tts": {
        "semantic": {"greedy": False, "top_k": 30, "temperature": 0.8},
        "acoustic": {"greedy": False, "top_k": 30, "temperature": 0.8},
        "min_frames": 1,
        "max_seconds": 30.0,
    },
    "audiolm": {
        "semantic": {"greedy": False, "top_k": 30, "temperature": 0.8},
        "acoustic": {"greedy": False, "top_k": 30, "temperature": 0.8},
        "min_frames": 1,
        "max_seconds": 10.0,
    },
}


class PackError(ValueError):
    """A packed directory (or the inputs of `pack`) that is incomplete or inconsistent."""


def _required_listing() -> str:
    return "; ".join(f"{name} ({what})" for name, what in REQUIRED_ENTRIES.items())


# ------------------------------------------------------------------------------ decoding config
def _strict_bool(value: Any) -> bool:
    """A YAML boolean; `bool("false")` would be True."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def generation_config(task: str, settings: dict, where: str) -> GenerationConfig:
    """A GenerationConfig for `task` from a settings mapping, e.g.

        {"text": {"greedy": true}, "semantic": {"greedy": false, "top_k": 30},
         "acoustic": {...}, "min_frames": 0, "max_frames": 512, "max_len_ratio": 0.8,
         "ctc_weight": 0.3, "ctc_pre_beam": 20, "beam_size": 4}

    Unknown keys and bad values raise PackError naming `where` and the key.
    """
    if task not in TASK_TARGETS:
        raise PackError(f"{where}: unknown task {task!r}; known tasks: {', '.join(TASK_TARGETS)}")
    if not isinstance(settings, dict):
        raise PackError(f"{where}: decoding settings must be a mapping, got {settings!r:.80}")
    modality_keys = {f.name for f in dataclasses.fields(SamplingConfig)}
    scalars = {
        "min_frames": int,
        "max_frames": int,
        "max_len_ratio": float,
        "ctc_weight": float,
        "ctc_pre_beam": int,
        "beam_size": int,
        "lexicon_penalty": float,
        "word_lm_weight": float,
        "interleave_text": _strict_bool,
        "advance_penalty": float,
    }
    known = {"text", "semantic", "acoustic", *scalars}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise PackError(f"{where}: unknown decoding key {unknown[0]!r} (known: {sorted(known)})")
    kwargs: dict[str, Any] = {"target": TASK_TARGETS[task]}
    try:
        for name, value in settings.items():
            if name in scalars:
                try:
                    kwargs[name] = scalars[name](value)
                except (TypeError, ValueError) as e:
                    raise PackError(
                        f"{where}: bad decoding settings for {task}: {name}: {e}"
                    ) from None
                continue
            if not isinstance(value, dict):
                raise PackError(f"{where}: {name} must be a mapping of {sorted(modality_keys)}")
            bad = sorted(set(value) - modality_keys)
            if bad:
                raise PackError(
                    f"{where}: unknown key {name}.{bad[0]} (known: {sorted(modality_keys)})"
                )
            kwargs[name] = SamplingConfig(**value)
        return GenerationConfig(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, PackError):
            raise
        raise PackError(f"{where}: bad decoding settings for {task}: {e}") from None


def check_decoding_model(
    config: GenerationConfig,
    model: MultiStreamLM,
    where: str,
    has_lexicon: bool = False,
    has_word_lm: bool = False,
) -> None:
    """Raise PackError if `model` cannot decode with `config`: ctc_weight without a CTC head,
    lexicon_penalty without a packed lexicon, word_lm_weight without a packed word LM."""
    if config.ctc_weight > 0 and model.ctc_head is None:
        raise PackError(
            f"{where}: ctc_weight {config.ctc_weight} needs a model with a CTC head, and this "
            "one was trained without (model.ctc_weight 0)"
        )
    if config.lexicon_penalty > 0 and not has_lexicon:
        raise PackError(
            f"{where}: lexicon_penalty > 0 needs a lexicon, and none is packed with the model "
            "(opuslm.bin.pack --lexicon)"
        )
    if config.word_lm_weight > 0 and not has_word_lm:
        raise PackError(
            f"{where}: word_lm_weight > 0 needs a word LM, and none is packed with the model "
            "(opuslm.bin.pack --word_lm)"
        )


def merge_settings(base: dict, overrides: dict) -> dict:
    """Overrides win key by key; per-modality mappings are merged one level deep."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _default_decoding(frame_rate: float) -> dict[str, dict]:
    decoding = {}
    for task, settings in DEFAULT_DECODING.items():
        settings = dict(settings)
        seconds = settings.pop("max_seconds", None)
        if seconds is not None:
            settings["max_frames"] = round(seconds * frame_rate)
        decoding[task] = settings
    return decoding


# ------------------------------------------------------------------------------ config.yaml
PROMPT_SOURCES = ("speaker", "self")
_OPTIONAL_PATH = (str, type(None))
# The YAML type of each PackedConfig key: a downloaded config.yaml is checked before use.
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,),
    "sample_rate": (int,),
    "frame_rate": (int, float),
    "prompt_frames": (int,),
    "prompt_source": (str,),
    "decoding": (dict,),
    "text_tokenizer": (str,),
    "semantic": (str,),
    "codec": (str,),
    "default_prompt": _OPTIONAL_PATH,
    "lexicon": _OPTIONAL_PATH,
    "word_lm": _OPTIONAL_PATH,
    "source_checkpoint": _OPTIONAL_PATH,
    "format": (int,),
}


@dataclass
class PackedConfig:
    """config.yaml of a packed directory; tokenizer entries are paths relative to it."""

    model: dict
    sample_rate: int
    frame_rate: float
    # TTS speaker prompts are cropped / looped to this many frames, as in training.
    prompt_frames: int
    # How the model saw prompts in training: "speaker" (another utterance) or "self" (own prefix).
    prompt_source: str = "speaker"
    decoding: dict[str, dict] = field(default_factory=dict)
    text_tokenizer: str = TEXT_TOKENIZER
    semantic: str = SEMANTIC
    codec: str = CODEC
    default_prompt: str | None = None
    lexicon: str | None = None
    word_lm: str | None = None
    source_checkpoint: str | None = None
    format: int = FORMAT_VERSION

    @classmethod
    def load(cls, path: Path) -> PackedConfig:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise PackError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise PackError(f"{path}: expected a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PackError(f"{path}: unknown config key {unknown[0]!r} (known: {sorted(known)})")
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise PackError(f"{path}: missing config key {missing[0]!r}")
        for name, value in data.items():
            kinds = _CONFIG_TYPES[name]
            if not isinstance(value, kinds) or isinstance(value, bool):
                names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise PackError(f"{path}: {name} must be {names}, got {value!r:.80}")
        config = cls(**data)
        if min(config.sample_rate, config.frame_rate, config.prompt_frames) <= 0:
            raise PackError(
                f"{path}: sample_rate, frame_rate and prompt_frames must be positive, got "
                f"{config.sample_rate}, {config.frame_rate}, {config.prompt_frames}"
            )
        if config.prompt_source not in PROMPT_SOURCES:
            raise PackError(
                f"{path}: prompt_source must be one of {PROMPT_SOURCES}, "
                f"got {config.prompt_source!r}"
            )
        if config.format != FORMAT_VERSION:
            raise PackError(
                f"{path}: packed format {config.format}, this version reads {FORMAT_VERSION}"
            )
        for name in ("text_tokenizer", "semantic", "codec", "default_prompt", "lexicon", "word_lm"):
            entry = getattr(config, name)
            # A packed model is self-contained: an entry outside it (absolute, or climbing out
            # with "..") would load whatever that path holds on the user's machine.
            if entry is not None and (Path(entry).is_absolute() or ".." in Path(entry).parts):
                raise PackError(
                    f"{path}: {name} must be a path inside the packed directory, got {entry!r}"
                )
        for task, settings in config.decoding.items():
            generation_config(task, settings, f"{path}: decoding.{task}")
        return config

    def save(self, path: Path) -> None:
        text = yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)
        path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------ checks
def check_tokenizers(token_list: TokenList, text_tokenizer, semantic, codec, where: str) -> None:
    """Raise PackError naming the first difference between the token list and the tokenizers.

    The expected list is rebuilt from the tokenizers with the token list's own text block size,
    tasks and special slots, so any token string, size or codebook mismatch is found.
    """
    try:
        expected = TokenList.build(
            text_tokens=text_tokenizer.tokens(),
            num_text_rows=token_list.size("text"),
            num_semantic=semantic.num_clusters,
            num_codebooks=codec.num_codebooks,
            codebook_size=codec.codebook_size,
            tasks=token_list.tasks,
            special_slots=token_list.size("special"),
        )
        expected.require_same(token_list, f"{where}: token list vs the tokenizers")
    except VocabError as e:
        message = str(e) if str(e).startswith(where) else f"{where}: {e}"
        raise PackError(message) from None

    try:
        check_compatible(semantic, codec)
    except FrameAlignmentError as e:
        raise PackError(f"{where}: {e}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict; anything else (e.g. a pickle) is refused, never unpickled."""
    if not path.is_file():
        raise PackError(f"{path}: weights file not found")
    try:
        return load_weights(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise PackError(
            f"{path}: not a safetensors file ({e}); packed models are only read from "
            f"safetensors, never unpickled"
        ) from None


def load_state(model: MultiStreamLM, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict after naming the first missing / unexpected name or mismatched shape."""
    expected = model.state_dict()
    token_list = model.token_list
    for name, tensor in expected.items():
        if name not in state:
            raise PackError(f"{where}: weight {name} is missing")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise PackError(
                f"{where}: {name} has shape {list(state[name].shape)} but the config and the "
                f"token list ({len(token_list)} ids, {token_list.num_streams} streams) need "
                f"{list(tensor.shape)}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise PackError(f"{where}: unexpected weight {unexpected[0]} (not in the model)")
    model.load_state_dict(state, strict=True)


def build_model(
    model_config: dict, token_list: TokenList, state: dict[str, torch.Tensor], directory: Path
) -> MultiStreamLM:
    """MultiStreamLM with the architecture of `model_config` (from directory/config.yaml) and the
    weights `state` (from directory/model.safetensors)."""
    try:
        model = MultiStreamLM.from_config_dict(model_config, token_list)
    except (ValueError, KeyError, TypeError) as e:
        raise PackError(
            f"{directory / CONFIG}: the model config does not fit {directory / TOKEN_LIST}: {e}"
        ) from None
    load_state(model, state, str(directory / WEIGHTS))
    return model.eval()


def read_checkpoint(checkpoint: str | os.PathLike) -> tuple[Path, dict, TokenList]:
    """(step directory, training config, token list) of a training checkpoint: a step directory,
    or a run / checkpoints directory (its `latest`). Problems are PackErrors naming the file."""
    from opuslm.train.checkpoint import CheckpointError, load_checkpoint_config

    try:
        step_dir = resolve_checkpoint(checkpoint)
        run_config = load_checkpoint_config(step_dir)
    except CheckpointError as e:
        raise PackError(str(e)) from None
    if not isinstance(run_config, dict) or "model" not in run_config:
        raise PackError(f"{step_dir / 'config.yaml'}: expected a mapping with a 'model' entry")
    try:
        token_list = TokenList.load(step_dir / TOKEN_LIST)
    except VocabError as e:
        raise PackError(str(e)) from None
    return step_dir, run_config, token_list


def load_checkpoint_model(checkpoint: str | os.PathLike) -> tuple[MultiStreamLM, Path]:
    """The MultiStreamLM of a training checkpoint (see `read_checkpoint`) and its step directory."""
    step_dir, run_config, token_list = read_checkpoint(checkpoint)
    model = build_model(run_config["model"], token_list, read_weights(step_dir / WEIGHTS), step_dir)
    return model, step_dir


# ------------------------------------------------------------------------------ loading
@dataclass
class PackedModel:
    """Everything a packed directory holds, loaded."""

    directory: Path
    config: PackedConfig
    token_list: TokenList
    model: MultiStreamLM
    text_tokenizer: Any
    semantic: Any
    codec: Any
    default_prompt: np.ndarray | None  # raw token rows [P, S], or None
    lexicon: Lexicon | None = None  # read through the text tokenizer's surfaces
    word_lm: WordLMScorer | None = None  # likewise


def load_tokenizers(
    text_tokenizer_dir: Path, semantic_dir: Path, codec_dir: Path
) -> tuple[Any, Any, Any]:
    """(text tokenizer, semantic tokenizer, codec) from their saved directories."""
    from opuslm.tokenizers.acoustic import load_codec
    from opuslm.tokenizers.semantic import load_semantic_tokenizer
    from opuslm.tokenizers.text import load_text_tokenizer

    loaded = []
    for path, loader in (
        (text_tokenizer_dir, load_text_tokenizer),
        (semantic_dir, load_semantic_tokenizer),
        (codec_dir, load_codec),
    ):
        if not Path(path).is_dir():
            raise PackError(f"{path}: tokenizer directory missing")
        try:
            loaded.append(loader(path))
        except (ValueError, OSError, RuntimeError, safetensors.SafetensorError) as e:
            # The first sentence only: numpy's and torch's messages go on to suggest unpickling.
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
            raise PackError(
                f"{path}: cannot load the tokenizer: {reason} (nothing in a packed model is "
                "unpickled)"
            ) from None
    return loaded[0], loaded[1], loaded[2]


def read_default_prompt(path: Path, num_streams: int) -> np.ndarray:
    try:
        rows = load_numpy_file(str(path))["prompt"]
    except (safetensors.SafetensorError, OSError, KeyError) as e:
        raise PackError(f"{path}: not a default prompt safetensors file ({e})") from None
    if rows.ndim != 2 or rows.shape[1] != num_streams or len(rows) == 0:
        raise PackError(f"{path}: prompt must be [P > 0, {num_streams}], got {list(rows.shape)}")
    return rows.astype(np.int64)


def load_packed(directory: str | os.PathLike, device: str | torch.device = "cpu") -> PackedModel:
    """Load a packed directory (see the module docstring) onto `device`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PackError(f"{directory}: not a directory; a packed model holds {_required_listing()}")
    for name in REQUIRED_ENTRIES:
        if not (directory / name).exists():
            raise PackError(
                f"{directory}: {name} is missing; a packed model directory holds "
                f"{_required_listing()}"
            )
    config = PackedConfig.load(directory / CONFIG)
    try:
        token_list = TokenList.load(directory / TOKEN_LIST)
    except VocabError as e:
        raise PackError(str(e)) from None
    text_tokenizer, semantic, codec = load_tokenizers(
        directory / config.text_tokenizer, directory / config.semantic, directory / config.codec
    )
    check_tokenizers(token_list, text_tokenizer, semantic, codec, str(directory))
    state = read_weights(directory / WEIGHTS)
    model = build_model(config.model, token_list, state, directory)
    default_prompt = None
    if config.default_prompt is not None:
        default_prompt = read_default_prompt(
            directory / config.default_prompt, token_list.num_streams
        )
    word_files = {
        name: word_file.read(directory / getattr(config, name), text_tokenizer)
        for name, word_file in WORD_FILES.items()
        if getattr(config, name) is not None
    }
    return PackedModel(
        directory=directory,
        config=config,
        token_list=token_list,
        model=model.to(device),
        text_tokenizer=text_tokenizer,
        semantic=semantic,
        codec=codec,
        default_prompt=default_prompt,
        **word_files,
    )


def read_lexicon(path: Path, text_tokenizer) -> Lexicon:
    try:
        return Lexicon.load(path, text_tokenizer.surfaces())
    except LexiconError as e:
        raise PackError(str(e)) from None


def read_word_lm(path: Path, text_tokenizer) -> WordLMScorer:
    try:
        return WordLMScorer(WordNgramLM.load(path), text_tokenizer.surfaces())
    except WordLMError as e:
        raise PackError(str(e)) from None


class WordFile(NamedTuple):
    """One optional word file of ASR decoding: how it is read (path, text tokenizer -> what
    decoding uses) and its name in the packed directory, from the file given to `pack`."""

    read: Callable[[Path, object], object]
    name: Callable[[Path], str]


# config / PackedModel field -> WordFile; `pack` copies each file as given. A word LM keeps its
# format's name: estimating from counts is quicker than parsing the ARPA file of the same model
# (1.8x the lines; 1.70 s vs 2.12 s for a demo-sized model, benchmarks/bench_word_lm.py).
WORD_FILES = {
    "lexicon": WordFile(read_lexicon, lambda _: LEXICON),
    "word_lm": WordFile(read_word_lm, lambda path: WORD_LM_ARPA if is_arpa(path) else WORD_LM),
}


# ------------------------------------------------------------------------------ packing
def _training_prompt_settings(training: dict, checkpoint: Path) -> tuple[int | None, str]:
    """(prompt_frames, prompt_source) the model was trained with, from the run config."""
    data = training.get("data", {}) if isinstance(training, dict) else {}
    source = data.get("prompt_source", "speaker")
    frames = data.get("prompt_frames")
    if frames:
        return int(frames), source
    for entry in data.get("train", []):
        manifest_path = Path(entry.get("path", "")) if isinstance(entry, dict) else None
        if manifest_path is None or not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("task") == "tts" and manifest.get("prompt_frames"):
            return int(manifest["prompt_frames"]), source
    logger.info("%s: no TTS prompt length found in the run config or its manifests", checkpoint)
    return None, source


def pack(
    checkpoint: str | os.PathLike,
    text_tokenizer_dir: str | os.PathLike,
    semantic_dir: str | os.PathLike,
    codec_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    prompt_frames: int | None = None,
    default_prompt_wav: str | os.PathLike | None = None,
    decoding: dict[str, dict] | None = None,
    lexicon: str | os.PathLike | None = None,
    word_lm: str | os.PathLike | None = None,
) -> Path:
    """Write a packed model directory from a checkpoint and the three tokenizer directories.

    checkpoint: a step directory, or a run / checkpoints directory (its `latest` is used).
    prompt_frames: TTS prompt length in frames; default: the training run's, else 3 seconds.
    default_prompt_wav: audio of the speaker used by TTS without a prompt (optional; a training
        utterance is a good choice); it is stored as tokens, cut to `prompt_frames`.
    decoding: per-task overrides of the default decoding settings.
    lexicon: a word list (one word per line) for ASR decoding with lexicon_penalty > 0.
    word_lm: word n-gram counts (`opuslm.bin.make_lexicon --word_lm`) for ASR decoding with
        word_lm_weight > 0.
    """
    if prompt_frames is not None and prompt_frames <= 0:
        raise PackError(f"prompt_frames must be positive, got {prompt_frames}")
    step_dir, run_config, token_list = read_checkpoint(checkpoint)
    text_tokenizer, semantic, codec = load_tokenizers(
        Path(text_tokenizer_dir), Path(semantic_dir), Path(codec_dir)
    )
    check_tokenizers(token_list, text_tokenizer, semantic, codec, str(step_dir))
    state = read_weights(step_dir / WEIGHTS)
    model = build_model(run_config["model"], token_list, state, step_dir)

    trained_frames, prompt_source = _training_prompt_settings(
        run_config.get("training", {}), step_dir
    )
    prompt_frames = prompt_frames or trained_frames
    if prompt_frames is None:
        prompt_frames = round(DEFAULT_PROMPT_SECONDS * codec.frame_rate)
        logger.info("TTS prompts will be %d frames (%.1f s)", prompt_frames, DEFAULT_PROMPT_SECONDS)
    default_prompt = None
    if default_prompt_wav is not None:
        default_prompt = _prompt_rows(Path(default_prompt_wav), semantic, codec, prompt_frames)
    word_files = {}  # WORD_FILES field -> its source path, read now so that a bad file fails now
    for name, path in (("lexicon", lexicon), ("word_lm", word_lm)):
        if path is not None:
            WORD_FILES[name].read(Path(path), text_tokenizer)
            word_files[name] = Path(path)
    settings = _default_decoding(codec.frame_rate)
    for task, overrides in (decoding or {}).items():
        settings[task] = merge_settings(settings.get(task, {}), overrides)
        where = f"decoding settings for {task}"
        config = generation_config(task, settings[task], where)
        check_decoding_model(config, model, where, "lexicon" in word_files, "word_lm" in word_files)
    config = PackedConfig(
        model=model.config_dict(),
        sample_rate=int(codec.sample_rate),
        frame_rate=float(codec.frame_rate),
        prompt_frames=int(prompt_frames),
        prompt_source=prompt_source,
        decoding=settings,
        default_prompt=DEFAULT_PROMPT if default_prompt is not None else None,
        **{name: WORD_FILES[name].name(source) for name, source in word_files.items()},
        source_checkpoint=str(step_dir.resolve()),
    )

    def write(directory: Path) -> None:
        config.save(directory / CONFIG)
        save_weights(model.state_dict(), directory / WEIGHTS)
        token_list.save(directory / TOKEN_LIST)
        text_tokenizer.save(directory / TEXT_TOKENIZER)
        semantic.save(directory / SEMANTIC)
        codec.save(directory / CODEC)
        if default_prompt is not None:
            save_numpy_file({"prompt": default_prompt}, str(directory / DEFAULT_PROMPT))
        for name, source in word_files.items():
            shutil.copyfile(source, directory / WORD_FILES[name].name(source))

    return write_directory_atomic(output_dir, write)


def _prompt_rows(wav_path: Path, semantic, codec, prompt_frames: int) -> np.ndarray:
    """int32 raw token rows [prompt_frames, S] of a speaker prompt audio file."""
    from opuslm.audio import AudioError, load_audio

    try:
        wav = load_audio(str(wav_path), "default prompt", codec.sample_rate)
    except AudioError as e:
        raise PackError(f"{wav_path}: {e}") from None
    (rows,) = tokenize_waveforms(semantic, codec, [wav], [str(wav_path)])
    rows = crop_prompt(rows, prompt_frames, rng=None)
    return rows.astype(np.int32)
