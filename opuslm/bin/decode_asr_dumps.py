"""ASR of a token-dump manifest with a training checkpoint: no audio, no codec, no packing.

Greedy, or beam search with --beam_size > 1. With --ctc_weight > 0 (a checkpoint trained with a
CTC head) decoding is joint CTC / LM, as in `opuslm.model.generate`; with --lexicon and
--lexicon_penalty > 0 each word not in the lexicon costs that much score (`opuslm.model.lexicon`);
with --word_lm and --word_lm_weight > 0 a word n-gram LM is fused in (`opuslm.model.word_lm`).

For experiments (egs2/mini_flite EXPERIMENTS.md): a checkpoint's held-out transcripts straight from
the `asr` manifest that stage 5 wrote, on CPU or GPU, in batches. The output is a Kaldi `text`
table that `opuslm.bin.score_asr` scores like stage 9's. Packed models decode audio with
`opuslm.bin.infer` instead.

    python -m opuslm.bin.decode_asr_dumps --checkpoint exp/speechlm_demo \\
        --manifest exp/manifests/asr_test/data.json --text_tokenizer_dir exp/tokenizers/text \\
        --output exp/speechlm_demo/dumps_asr_test/text
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from opuslm.bin import run
from opuslm.data.dataset import ManifestReader
from opuslm.data.manifest import Manifest
from opuslm.fileio import write_text_atomic
from opuslm.model.generate import GenerationConfig, generate
from opuslm.model.lexicon import Lexicon, LexiconError
from opuslm.model.lm import MultiStreamLM
from opuslm.model.word_lm import WordLMError, WordLMScorer, WordNgramLM
from opuslm.packing import load_checkpoint_model as read_checkpoint_model
from opuslm.tasks import Example, generation_prompt
from opuslm.tokenizers.text import load_text_tokenizer

log = logging.getLogger("opuslm.decode_asr_dumps")


def load_checkpoint_model(path: str | Path, device: str | torch.device) -> MultiStreamLM:
    """The MultiStreamLM of a training checkpoint (step dir, checkpoints root or experiment dir)."""
    model, _ = read_checkpoint_model(path)
    return model.to(device)


def transcribe_manifest(
    model: MultiStreamLM,
    manifest: Manifest,
    decode_text,
    batch_size: int = 16,
    max_frames: int = 200,
    max_len_ratio: float = 0.0,
    ctc_weight: float = 0.0,
    ctc_pre_beam: int = GenerationConfig.ctc_pre_beam,
    beam_size: int = GenerationConfig.beam_size,
    lexicon: Lexicon | None = None,
    lexicon_penalty: float = 0.0,
    word_lm: WordLMScorer | None = None,
    word_lm_weight: float = 0.0,
) -> dict[str, str]:
    """{uttid: transcript} of every utterance of an `asr` manifest, longest first (greedy, or
    beam search with beam_size > 1)."""
    if manifest.task != "asr":
        raise ValueError(f"{manifest.path}: an asr manifest is needed, got task {manifest.task!r}")
    manifest.require_token_list(model.token_list)
    config = GenerationConfig(
        target="text",
        max_frames=max_frames,
        max_len_ratio=max_len_ratio,
        ctc_weight=ctc_weight,
        ctc_pre_beam=ctc_pre_beam,
        beam_size=beam_size,
        lexicon=lexicon,
        lexicon_penalty=lexicon_penalty,
        word_lm=word_lm,
        word_lm_weight=word_lm_weight,
    )
    reader = ManifestReader(manifest, prompt_source="self", prompt_frames=0)
    order = np.argsort(-manifest.lengths(0), kind="stable")  # similar lengths share a batch
    out = {}
    for start in tqdm(range(0, len(order), batch_size), desc="asr", unit="batch"):
        examples = [
            reader.example(int(i), np.random.default_rng(0)) for i in order[start:][:batch_size]
        ]
        prompts = [
            torch.from_numpy(
                generation_prompt("asr", Example(e.uttid, speech=e.speech), model.token_list)
            )
            for e in examples
        ]
        for example, frames in zip(examples, generate(model, prompts, config)):
            ids = model.token_list.decode_text(frames[:, 0].cpu().numpy())
            out[example.uttid] = decode_text(ids.tolist())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="step dir or experiment dir (latest)")
    parser.add_argument("--manifest", required=True, help="an asr manifest (data.json)")
    parser.add_argument("--text_tokenizer_dir", required=True)
    parser.add_argument("--output", required=True, help="Kaldi text table to write")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_frames", type=int, default=200)
    parser.add_argument("--max_len_ratio", type=float, default=0.0, help="0: only max_frames")
    parser.add_argument(
        "--ctc_weight", type=float, default=0.0, help="joint CTC / LM decoding weight (0: LM only)"
    )
    parser.add_argument(
        "--ctc_pre_beam",
        type=int,
        default=GenerationConfig.ctc_pre_beam,
        help="best LM ids scored by the CTC per step (0: all text ids)",
    )
    parser.add_argument(
        "--beam_size", type=int, default=GenerationConfig.beam_size, help="1: greedy"
    )
    parser.add_argument("--lexicon", help="word list (opuslm.bin.make_lexicon) for the penalty")
    parser.add_argument(
        "--lexicon_penalty",
        type=float,
        default=0.0,
        help="score each word not in --lexicon costs (0: no lexicon)",
    )
    parser.add_argument(
        "--word_lm", help="word n-gram counts (opuslm.bin.make_lexicon --word_lm) or an ARPA file"
    )
    parser.add_argument(
        "--word_lm_weight",
        type=float,
        default=0.0,
        help="weight of --word_lm's log-probs in the beam (0: no word LM)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    started = time.perf_counter()
    model = load_checkpoint_model(args.checkpoint, args.device)
    tokenizer = load_text_tokenizer(args.text_tokenizer_dir)
    lexicon = None
    if args.lexicon_penalty > 0:
        if args.lexicon is None:
            parser.error("--lexicon_penalty > 0 needs --lexicon")
        try:
            lexicon = Lexicon.load(args.lexicon, tokenizer.surfaces())
        except LexiconError as e:
            parser.error(str(e))
    word_lm = None
    if args.word_lm_weight > 0:
        if args.word_lm is None:
            parser.error("--word_lm_weight > 0 needs --word_lm")
        try:
            word_lm = WordLMScorer(WordNgramLM.load(args.word_lm), tokenizer.surfaces())
        except WordLMError as e:
            parser.error(str(e))
    with torch.inference_mode():
        hyps = transcribe_manifest(
            model,
            Manifest.load(args.manifest),
            tokenizer.decode,
            args.batch_size,
            args.max_frames,
            args.max_len_ratio,
            args.ctc_weight,
            args.ctc_pre_beam,
            args.beam_size,
            lexicon,
            args.lexicon_penalty,
            word_lm,
            args.word_lm_weight,
        )
    lines = [f"{uttid} {text}".rstrip() for uttid, text in sorted(hyps.items())]
    write_text_atomic(Path(args.output), "\n".join(lines) + "\n")
    log.info(
        "%d transcripts -> %s in %.1f s", len(hyps), args.output, time.perf_counter() - started
    )


if __name__ == "__main__":
    run(main)
