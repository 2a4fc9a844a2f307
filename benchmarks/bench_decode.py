"""Real-time factor of `OpusLM.transcribe` / `synthesize`: batched vs one utterance at a time.

The model has the mini recipe's size (Llama body hidden 256, 4 layers; 25 Hz frames, MFCC k-means
256, mel-RVQ 4 x 256) with random weights, which is all that matters for speed; its tokenizers are
trained on the benchmark's own flite utterances. Output lengths are fixed (min_frames =
max_frames), since random weights would rarely stop on their own: ASR writes 40 tokens per
utterance, TTS 75 frames (3 s). The baseline is the published recipe's way: one utterance per
`generate` call. TTS is timed in two parts, the LM decoding of the frames (batched or not) and
the codec decoding of the frames to audio (per utterance in both). RTF = time / seconds of audio
(ASR: input audio; TTS: synthesised audio), from wall-clock time and from this process's CPU time
(all threads; more robust than wall time when other jobs share the cores).

    .venv/bin/python benchmarks/bench_decode.py [--threads 2] [--utterances 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from tiny_model import ModelSpec, build_tiny_model  # noqa: E402

from opuslm import OpusLM  # noqa: E402

SENTENCES = [
    "the early bird catches the worm but the second mouse gets the cheese",
    "a journey of a thousand miles begins with a single step",
    "never put off until tomorrow what you can do today",
    "all that glitters is not gold and all who wander are not lost",
    "the quick brown fox jumps over the lazy dog near the river bank",
    "actions speak louder than words when the going gets tough",
    "where there is a will there is a way to get things done",
    "time flies like an arrow and fruit flies like a banana",
]
ASR_TOKENS = 40
TTS_FRAMES = 75
MINI = ModelSpec(
    codec={
        "num_codebooks": 4,
        "codebook_size": 256,
        "hop_length": 640,
        "n_mels": 80,
        "kmeans_max_iter": 10,
    },
    semantic_hop=640,
    num_semantic=256,
    body={
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "tie_word_embeddings": False,
    },
    prompt_frames=75,
    decoding={
        "asr": {"min_frames": ASR_TOKENS, "max_frames": ASR_TOKENS},
        "tts": {"min_frames": TTS_FRAMES, "max_frames": TTS_FRAMES},
    },
)


@dataclass
class Timing:
    wall: float
    cpu: float


def timed(function) -> tuple[object, Timing]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def row(task: str, mode: str, count: int, audio_s: float, t: Timing, baseline: Timing) -> str:
    return (
        f"| {task} | {mode} | {count} | {audio_s:.1f} | {t.wall:.2f} | {t.cpu:.2f} "
        f"| {t.wall / audio_s:.3f} | {t.cpu / audio_s:.3f} | {baseline.cpu / t.cpu:.2f}x |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=8, choices=range(1, 9))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    voices = ("slt", "rms", "awb", "kal16")
    utterances = {
        f"utt{i}": (voices[i % len(voices)], text)
        for i, text in enumerate(SENTENCES[: args.utterances])
    }
    MINI.utterances = utterances
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_model(Path(tmp), MINI)
        model = OpusLM.from_pretrained(tiny.packed_dir)
        audios = [sf.read(p, dtype="float32") for p in tiny.wavs.values()]
        texts = [text for _, text in utterances.values()]
        prompt = audios[0]
        model.transcribe(*audios[0])  # warm-up (lazy imports, first-call allocations)

        input_s = sum(len(w) / sr for w, sr in audios)
        _, asr_one = timed(lambda: [model.transcribe(w, sr) for w, sr in audios])
        _, asr_batched = timed(lambda: model.transcribe_batch(audios))

        def tts_frames(batch: list[str]) -> list[torch.Tensor]:
            return model.generate("tts", [model.tts_prompt(t, prompt) for t in batch], seed=0)

        frames, tts_one = timed(lambda: [tts_frames([t])[0] for t in texts])
        _, tts_batched = timed(lambda: tts_frames(texts))
        waveforms, codec = timed(lambda: [model.decode_audio(f)[0] for f in frames])
        output_s = sum(len(w) for w in waveforms) / model.sample_rate

    print(f"torch threads: {args.threads}; {len(audios)} utterances")
    print(
        "| task | mode | utts | audio (s) | wall (s) | CPU (s) | RTF wall | RTF CPU "
        "| CPU speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    n = len(audios)
    print(row("asr", "one by one (baseline)", n, input_s, asr_one, asr_one))
    print(row("asr", f"batched x{n}", n, input_s, asr_batched, asr_one))
    print(row("tts LM (frames)", "one by one (baseline)", n, output_s, tts_one, tts_one))
    print(row("tts LM (frames)", f"batched x{n}", n, output_s, tts_batched, tts_one))
    print(row("tts codec (Griffin-Lim)", "per utterance", n, output_s, codec, codec))
    one_total = Timing(tts_one.wall + codec.wall, tts_one.cpu + codec.cpu)
    batched_total = Timing(tts_batched.wall + codec.wall, tts_batched.cpu + codec.cpu)
    print(row("tts end to end", "one by one (baseline)", n, output_s, one_total, one_total))
    print(row("tts end to end", f"batched x{n}", n, output_s, batched_total, one_total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
