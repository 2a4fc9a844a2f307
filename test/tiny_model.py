"""A tiny packed OpusLM model built from scratch, shared by the API / inference test suites.

Three flite utterances train a character sentencepiece model, an MFCC k-means semantic tokenizer
and a 2 x 16 mel-RVQ codec; a random 2-layer Llama body (hidden 32) is saved as a checkpoint the
way the trainer writes it and packed with `opuslm.bin.pack`. Building everything takes a few
seconds; the session fixture `tiny` in `conftest.py` builds it once for all test modules.

`build_tiny_model(root, ModelSpec(...))` builds other sizes (benchmarks/bench_decode.py uses the
mini recipe's).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch
import transformers
import yaml

from opuslm.bin import make_token_list, pack
from opuslm.model.lm import MultiStreamLM
from opuslm.tokenizers.acoustic import train_codec
from opuslm.tokenizers.semantic import SpectralConfig, SpectralFeatures, train_semantic_tokenizer
from opuslm.tokenizers.text import train_sentencepiece
from opuslm.train.checkpoint import save_checkpoint
from opuslm.vocab import TokenList

UTTERANCES = {
    "utt_a": ("slt", "the cat sat on the mat"),
    "utt_b": ("rms", "a dog ran in the park"),
    "utt_c": ("awb", "we like to read good books"),
}
CODEC_CONFIG = {
    "num_codebooks": 2,
    "codebook_size": 16,
    "n_mels": 32,
    "synthesis_hop": 160,
    "griffin_lim_iters": 4,
    "kmeans_max_iter": 10,
}
NUM_SEMANTIC = 16
PROMPT_FRAMES = 10
BODY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
# Small limits keep decoding with random weights (which rarely emit eos) fast.
DECODING = {
    "asr": {"max_frames": 8},
    "textlm": {"max_frames": 6},
    "tts": {"max_frames": 12},
    "audiolm": {"max_frames": 6},
}


@dataclass
class ModelSpec:
    """What to build: utterances (uttid -> (flite voice, text)), tokenizer and body sizes."""

    utterances: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(UTTERANCES))
    codec: dict = field(default_factory=lambda: dict(CODEC_CONFIG))
    semantic_hop: int = 320
    num_semantic: int = NUM_SEMANTIC
    body: dict = field(default_factory=lambda: dict(BODY))
    prompt_frames: int = PROMPT_FRAMES
    decoding: dict = field(default_factory=lambda: dict(DECODING))


@dataclass
class TinyModel:
    root: Path
    packed_dir: Path
    checkpoint_dir: Path  # checkpoints/step_5
    text_tokenizer_dir: Path
    semantic_dir: Path
    codec_dir: Path
    wav_scp: Path  # uttid -> flite wav at 16 kHz
    text: Path  # Kaldi text of the same utterances
    wavs: dict[str, Path]

    def pack_inputs(self) -> dict[str, Path]:
        """`opuslm.packing.pack`'s checkpoint and tokenizer arguments for this model."""
        return dict(
            checkpoint=self.checkpoint_dir,
            text_tokenizer_dir=self.text_tokenizer_dir,
            semantic_dir=self.semantic_dir,
            codec_dir=self.codec_dir,
        )


def flite(voice: str, text: str, path: Path) -> Path:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return path


def build_tiny_model(root: Path, spec: ModelSpec | None = None, seed: int = 0) -> TinyModel:
    """Tokenizers, a random checkpoint and its packed directory under `root`."""
    spec = spec or ModelSpec()
    root.mkdir(parents=True, exist_ok=True)
    wavs = {u: flite(v, t, root / f"{u}.wav") for u, (v, t) in spec.utterances.items()}
    audio = [sf.read(p, dtype="float32")[0] for p in wavs.values()]
    (root / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wavs.items()))
    (root / "text").write_text("".join(f"{u} {t}\n" for u, (_, t) in spec.utterances.items()))

    text_dir, semantic_dir, codec_dir = root / "text_tok", root / "semantic", root / "codec"
    train_sentencepiece([t for _, t in spec.utterances.values()], 64, "char", out_dir=text_dir)
    features = SpectralFeatures(SpectralConfig(hop_length=spec.semantic_hop))
    semantic = train_semantic_tokenizer(audio, features, spec.num_semantic, seed=seed)
    semantic.save(semantic_dir)
    train_codec(audio, spec.codec).save(codec_dir)
    token_list_path = root / "token_list.json"
    make_token_list.main(
        [
            "--text_tokenizer_dir", str(text_dir),
            "--semantic_dir", str(semantic_dir),
            "--codec_dir", str(codec_dir),
            "--output", str(token_list_path),
        ]
    )  # fmt: skip
    token_list = TokenList.load(token_list_path)

    torch.manual_seed(seed)
    body = transformers.LlamaConfig(vocab_size=token_list.size("text"), **spec.body)
    model = MultiStreamLM.from_base(body, token_list)
    training = {"data": {"prompt_source": "speaker", "prompt_frames": spec.prompt_frames}}
    checkpoint_dir = save_checkpoint(
        root / "exp" / "checkpoints",
        step=5,
        weights=model.state_dict(),
        train_state={"step": 5},
        config={"model": model.config_dict(), "training": training},
        token_list=token_list,
    )
    decode_config = root / "decode.yaml"
    decode_config.write_text(yaml.safe_dump(spec.decoding))
    packed_dir = root / "packed"
    status = pack.main(
        [
            "--checkpoint", str(root / "exp"),
            "--text_tokenizer_dir", str(text_dir),
            "--semantic_dir", str(semantic_dir),
            "--codec_dir", str(codec_dir),
            "--output_dir", str(packed_dir),
            "--default_prompt_wav", str(next(iter(wavs.values()))),
            "--decode_config", str(decode_config),
        ]
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"packing the tiny model failed with status {status}")
    return TinyModel(
        root=root,
        packed_dir=packed_dir,
        checkpoint_dir=checkpoint_dir,
        text_tokenizer_dir=text_dir,
        semantic_dir=semantic_dir,
        codec_dir=codec_dir,
        wav_scp=root / "wav.scp",
        text=root / "text",
        wavs=wavs,
    )
