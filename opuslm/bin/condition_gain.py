"""How much a checkpoint uses its condition: teacher-forced CE with each utterance's own condition
against the next utterance's (in manifest order, cyclic).

TTS manifests: the semantic stream's CE per speech frame, with the transcripts swapped (the speaker
prompt stays the utterance's own; an aligned manifest swaps the interleaved transcript too). ASR
manifests: the text CE per transcript token, with the speech swapped. The gain is CE(other) -
CE(own): about 0 for a model that ignores the condition (a speech LM that babbles, or a text LM
that guesses the sentence), and large for one that reads it. Training's validation loss alone
cannot tell those apart. With a CTC head the same is reported for the CTC of that direction
(`model.ctc_weight` for ASR, `model.tts_ctc_weight` for TTS). Its gain is large, in both
directions, when the CTC head reads the speech: for TTS the swapped transcript is also the CTC's
target, so a head that copied the text would gain nothing.

    python -m opuslm.bin.condition_gain --checkpoint exp/speechlm_demo \\
        --manifest exp/manifests/tts_valid/data.json --output exp/speechlm_demo/gain_tts.json
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from opuslm.bin import run
from opuslm.data.dataset import ManifestReader, collate
from opuslm.data.manifest import Manifest, ManifestError
from opuslm.fileio import write_text_atomic
from opuslm.model.lm import MultiStreamLM
from opuslm.packing import load_checkpoint_model
from opuslm.tasks import Example, build_sequence
from opuslm.train.report import MetricSums, summarise

log = logging.getLogger("opuslm.condition_gain")

# task -> (the condition field swapped, the modality whose CE is read, the CTC stat name)
SWAPS = {"tts": ("text", "semantic", "ctc_tts"), "asr": ("speech", "text", "ctc")}


def swapped(examples: list[Example], field: str) -> list[Example]:
    """Each example with the next one's `field` (cyclic).

    An aligned TTS example (`Example.align`) whose transcript is swapped gets the next one's
    alignment too, its starts stretched from that utterance's frames to its own, so the other
    transcript is interleaved with the own speech at the same relative places."""
    out = []
    for i, example in enumerate(examples):
        following = examples[(i + 1) % len(examples)]
        changed = {field: getattr(following, field)}
        if field == "text" and example.align is not None:
            stretch = len(example.speech) / len(following.speech)
            changed["align"] = np.floor(np.asarray(following.align) * stretch).astype(np.int64)
        out.append(replace(example, **changed))
    return out


def mean_losses(
    model: MultiStreamLM, task: str, examples: list[Example], batch_size: int
) -> dict[str, float]:
    """Teacher-forced CE of `examples` per target unit of the task's modality, and per text
    token of its CTC direction when the model trains one: {"ce": ..., ["ctc": ...]}."""
    _, modality, ctc = SWAPS[task]
    token_list = model.token_list
    sums = MetricSums([task])  # as validation sums them
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate([build_sequence(task, e, token_list) for e in chunk], token_list.pad_id)
        on_device = batch.to(model.device)
        sums.add(model(on_device.frames, on_device.loss_mask, on_device.lengths), batch)
    metrics = summarise(dict(sums.values))
    out = {"ce": metrics[f"ce/{modality}"]}
    if f"ce/{ctc}" in metrics:
        out["ctc"] = metrics[f"ce/{ctc}"]
    return out


def condition_gain(
    model: MultiStreamLM,
    manifest: Manifest,
    batch_size: int = 8,
    prompt_source: str = "speaker",
    seed: int = 0,
) -> dict:
    """CE with the own and with the next utterance's condition, and their difference (the gain);
    CTC the same where the model trains that direction. An eval-mode model is assumed."""
    if manifest.task not in SWAPS:
        raise ManifestError(
            f"{manifest.path}: task {manifest.task!r} has no condition to swap (use an asr or "
            "tts manifest)"
        )
    if len(manifest.uttids) < 2:
        raise ManifestError(f"{manifest.path}: swapping conditions needs at least 2 utterances")
    field, modality, _ = SWAPS[manifest.task]
    manifest.require_token_list(model.token_list)
    reader = ManifestReader(manifest, prompt_source, None)
    rng = np.random.default_rng(seed)  # the speaker prompts' choice and crop
    examples = [reader.example(i, rng) for i in range(len(manifest.uttids))]
    own = mean_losses(model, manifest.task, examples, batch_size)
    other = mean_losses(model, manifest.task, swapped(examples, field), batch_size)
    result = {
        "task": manifest.task,
        "manifest": str(manifest.path),
        "swapped": field,
        "unit": f"{modality} target",
        "num_utts": len(examples),
        "ce_own": own["ce"],
        "ce_other": other["ce"],
        "gain": other["ce"] - own["ce"],
    }
    if "ctc" in own:
        result.update(
            ctc_own=own["ctc"], ctc_other=other["ctc"], ctc_gain=other["ctc"] - own["ctc"]
        )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="step dir or experiment dir (latest)")
    parser.add_argument("--manifest", required=True, help="an asr or tts manifest (data.json)")
    parser.add_argument("--output", help="JSON file to write (default: log only)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--prompt_source",
        choices=("auto", "speaker", "self"),
        default="auto",
        help="TTS speaker prompts as in training's data.prompt_source (auto: another utterance "
        "of the speaker where the manifest has utt2spk, else the utterance's own start)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model, step_dir = load_checkpoint_model(args.checkpoint)
    model = model.to(args.device).eval()
    try:
        manifest = Manifest.load(args.manifest)
        prompt_source = args.prompt_source
        if prompt_source == "auto":
            prompt_source = "speaker" if manifest.utt2spk else "self"
        with torch.inference_mode():
            result = condition_gain(model, manifest, args.batch_size, prompt_source)
    except ManifestError as e:
        parser.error(str(e))
    result["checkpoint"] = str(step_dir)
    log.info(
        "%s: CE %.3f with the own %s, %.3f with another utterance's: gain %.3f per %s",
        step_dir,
        result["ce_own"],
        result["swapped"],
        result["ce_other"],
        result["gain"],
        result["unit"],
    )
    if args.output:
        write_text_atomic(Path(args.output), json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run(main)
