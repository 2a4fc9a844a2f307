"""Decode a test set with a packed model: ASR / textlm text, TTS / audiolm audio (stage 9)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from opuslm.audio import AudioReader, write_wav
from opuslm.bin import collection_paused, run
from opuslm.dump import DumpError, python_module_argv, run_jobs, split_for_job, write_text_atomic

log = logging.getLogger("opuslm.infer")

TASKS = ("asr", "tts", "audiolm", "textlm")
SPEECH_OUTPUT = ("tts", "audiolm")
PARTS = "parts"  # OUT/parts/job.<J>.jsonl: one record per finished utterance (resume state)


class InferError(ValueError):
    """Bad command-line input: a missing entry, an unreadable file."""


# ------------------------------------------------------------------------------ output tables
def main_table(task: str) -> str:
    return "wav.scp" if task in SPEECH_OUTPUT else "text"


def sample_tables(task: str, nbest: int) -> list[str]:
    """Output table of sample k (k = 0 is the plain output).

    Text: `text`, and with nbest > 1 `nbest/text.<k>` for every k (text.0 == text).
    Audio: sample 0 is `wav.scp` -> `wav/<uttid>.wav`; samples k >= 1 are `wav.scp.<k>` with keys
    `<uttid>_sample<k>` -> `wav/<uttid>_sample<k>.wav`, and `wav_nbest.scp` lists all samples
    (the input of `score_tts --best_of_n`).
    """
    if task in SPEECH_OUTPUT:
        return ["wav.scp"] + [f"wav.scp.{k}" for k in range(1, nbest)]
    return ["text"] if nbest == 1 else [f"nbest/text.{k}" for k in range(nbest)]


def read_table_lines(path: Path) -> dict[str, str]:
    """{key: whole line} of a Kaldi table (empty when the file does not exist)."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split(maxsplit=1)[0]: line for line in lines if line.strip()}


def read_records(parts_dir: Path) -> Iterator[dict]:
    """Finished-utterance records of every job; a torn last line (a killed job) is ignored."""
    for path in sorted(parts_dir.glob("job.*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.endswith("\n"):
                yield json.loads(line)


def drop_torn_tail(path: Path) -> None:
    """Cut a record file after its last complete line, so that appending starts a new line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def finished_uttids(output_dir: Path, task: str) -> set[str]:
    done = set(read_table_lines(output_dir / main_table(task)))
    done.update(r["uttid"] for r in read_records(output_dir / PARTS))
    return done


def merge_outputs(output_dir: Path) -> None:
    """Fold the job records into the output tables (sorted by key, written atomically)."""
    parts_dir = output_dir / PARTS
    tables: dict[str, dict[str, str]] = {}
    for record in read_records(parts_dir):
        for name, line in record["lines"].items():
            table = tables.setdefault(name, read_table_lines(output_dir / name))
            table[line.split(maxsplit=1)[0]] = line
    for name, table in tables.items():
        (output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / name, "".join(table[k] + "\n" for k in sorted(table)))
    if any(name.startswith("wav.scp") for name in tables):
        samples = {}
        for name in sorted(p.name for p in output_dir.glob("wav.scp*")):
            samples.update(read_table_lines(output_dir / name))
        if len(samples) > len(read_table_lines(output_dir / "wav.scp")):
            lines = "".join(samples[k] + "\n" for k in sorted(samples))
            write_text_atomic(output_dir / "wav_nbest.scp", lines)
    for path in parts_dir.glob("job.*.jsonl"):
        path.unlink()


# ------------------------------------------------------------------------------ inputs
def read_kaldi_text(path: Path) -> dict[str, str]:
    """{uttid: text} of a Kaldi `text` file; an utterance without words is an error."""
    texts = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise InferError(f"{path}:{lineno}: utterance {parts[0]} has no text")
            if parts[0] in texts:
                raise InferError(f"{path}:{lineno}: duplicate uttid {parts[0]}")
            texts[parts[0]] = parts[1]
    return texts


def load_decode_settings(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InferError(f"{path}: cannot read the decoding config: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InferError(f"{path}: expected a mapping of decoding settings")
    return data


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


# ------------------------------------------------------------------------------ decoding
class Decoder:
    """Runs one task over batches of utterances and turns outputs into table lines."""

    def __init__(self, args: argparse.Namespace) -> None:
        with collection_paused():
            from opuslm.api import OpusLM

        self.args = args
        self.model = OpusLM.from_pretrained(args.model_dir, device=args.device)
        self.config = self.model.decoding(args.task, load_decode_settings(args.decode_config))
        self.own_prefix = args.own_prefix
        if self.own_prefix is None:
            self.own_prefix = self.model.packed.config.prompt_source == "self"
        self.audio = None
        self.speakers = None
        if args.task in ("asr", "audiolm"):
            self.audio = AudioReader(
                args.wav_scp, sample_rate=self.model.sample_rate, allow_pipes=args.allow_pipes
            )
            self.inputs = {u: None for u in self.audio.uttids()}
        else:
            self.inputs = read_kaldi_text(args.text)
        if args.prompt_scp is not None:
            self.speakers = AudioReader(
                args.prompt_scp, sample_rate=self.model.sample_rate, allow_pipes=args.allow_pipes
            )
            missing = sorted(set(self.inputs) - set(self.speakers.uttids()))
            if missing:
                raise InferError(
                    f"{args.prompt_scp}: no speaker prompt for utterance {missing[0]} "
                    f"({len(missing)} utterances without one)"
                )

    def prompts(self, uttids: list[str]) -> list[torch.Tensor]:
        """Decoding prompts [T_i, S] of a batch of utterances."""
        task, model, rate = self.args.task, self.model, self.model.sample_rate
        if task in ("asr", "audiolm"):
            audios = [(self.audio.read(u), rate) for u in uttids]
            build = model.asr_prompts if task == "asr" else model.continuation_prompts
            return build(audios, uttids)
        if task == "textlm":
            return [model.textlm_prompt(self.inputs[u], u) for u in uttids]
        prompts = []
        for uttid in uttids:
            speaker = None if self.speakers is None else (self.speakers.read(uttid), rate)
            prompts.append(model.tts_prompt(self.inputs[uttid], speaker, self.own_prefix, uttid))
        return prompts

    def output_lines(self, uttid: str, samples: list[torch.Tensor]) -> dict[str, str]:
        """Table name -> line for every sample of one utterance (audio written here)."""
        args, model = self.args, self.model
        lines = {}
        for k, (table, frames) in enumerate(zip(sample_tables(args.task, args.nbest), samples)):
            if args.task not in SPEECH_OUTPUT:
                lines[table] = f"{uttid} {model.decode_text(frames)}".rstrip()
                continue
            if len(frames) == 0:
                # Left out of the scp (scorers count it as missing) rather than failing the job.
                log.warning("utterance %s: sample %d generated no speech frames", uttid, k)
                continue
            key = uttid if k == 0 else f"{uttid}_sample{k}"
            path = args.output_dir / "wav" / f"{key}.wav"
            wav, sample_rate = model.decode_audio(frames)
            write_wav(path, wav, sample_rate)
            lines[table] = f"{key} {path}"
        if args.task not in SPEECH_OUTPUT and args.nbest > 1:
            lines["text"] = lines[sample_tables(args.task, args.nbest)[0]]
        return lines

    def run(self, uttids: list[str], record_path: Path) -> None:
        args = self.args
        record_path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(record_path)
        batches = [uttids[i : i + args.batch_size] for i in range(0, len(uttids), args.batch_size)]
        bar = tqdm(total=len(uttids), desc=f"{args.task} decoding", unit="utt")
        with open(record_path, "a", encoding="utf-8") as records:
            for index, batch in enumerate(batches):
                prompts = self.prompts(batch)
                seed = None if args.seed is None else args.seed + index
                outputs = self.model.generate(args.task, prompts * args.nbest, self.config, seed)
                for i, uttid in enumerate(batch):
                    samples = outputs[i :: len(batch)]
                    record = {"uttid": uttid, "lines": self.output_lines(uttid, samples)}
                    records.write(json.dumps(record, ensure_ascii=False) + "\n")
                    records.flush()
                bar.update(len(batch))
        bar.close()


def write_decode_config(args: argparse.Namespace, decoder: Decoder) -> None:
    """OUT/decode_config.yaml: the settings that shaped the outputs (shown in RESULTS.md).

    Only the sampling settings of the modalities the task generates are listed.
    """
    config = decoder.config
    modalities = ("semantic", "acoustic") if config.target == "speech" else ("text",)
    settings: dict = {"task": args.task, "nbest": args.nbest, "seed": args.seed}
    settings.update({m: dataclasses.asdict(getattr(config, m)) for m in modalities})
    settings.update(min_frames=config.min_frames, max_frames=config.max_frames)
    settings["max_len_ratio"] = config.max_len_ratio
    if config.target == "text":
        settings.update(
            ctc_weight=config.ctc_weight,
            ctc_pre_beam=config.ctc_pre_beam,
            beam_size=config.beam_size,
            lexicon_penalty=config.lexicon_penalty,
            word_lm_weight=config.word_lm_weight,
        )
        if config.lexicon is not None:
            settings["lexicon_words"] = len(config.lexicon)
        if config.word_lm is not None:
            settings["word_lm_words"] = len(config.word_lm.lm)
            settings["word_lm_order"] = config.word_lm.lm.order
    if config.target == "speech":
        settings["interleave_text"] = config.interleave_text
        settings["advance_penalty"] = config.advance_penalty
    if args.task == "tts":
        settings["prompt"] = "prompt_scp" if args.prompt_scp is not None else "default"
        settings["own_prefix"] = decoder.own_prefix
    write_text_atomic(
        args.output_dir / "decode_config.yaml", yaml.safe_dump(settings, sort_keys=False)
    )


# ------------------------------------------------------------------------------ main
EPILOG = """outputs:
  asr, textlm   OUT/text (uttid words); with --nbest N also OUT/nbest/text.<k>, k = 0..N-1
  tts, audiolm  OUT/wav.scp -> OUT/wav/<uttid>.wav (16-bit); with --nbest N samples k >= 1 in
                OUT/wav.scp.<k> (keys <uttid>_sample<k>) and all samples in OUT/wav_nbest.scp
  always        OUT/decode_config.yaml: the decoding settings used
Utterances already in OUT are skipped (resume after a crash); delete OUT to decode again.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, type=Path, help="packed model directory")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--wav_scp", type=Path, help="input audio (asr, audiolm)")
    parser.add_argument("--text", type=Path, help="Kaldi text: uttid words (tts, textlm)")
    parser.add_argument(
        "--prompt_scp",
        type=Path,
        help="tts speaker prompts `uttid path` (default: the packed default prompt)",
    )
    parser.add_argument(
        "--own_prefix",
        type=str2bool,
        default=None,
        help="tts: the prompt is the start of the utterance (default: as the model was trained)",
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--decode_config", type=Path, help="YAML decoding settings")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--nbest", type=int, default=1, help="samples per utterance")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="sampling seed; batch b of a job uses seed + b, so samples depend on --batch_size",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs")
    parser.add_argument("--job", type=int, help=argparse.SUPPRESS)  # set by the parent process
    parser.add_argument("--allow_pipes", action="store_true", help="run `cmd |` wav.scp entries")
    args = parser.parse_args(argv)
    needed = "wav_scp" if args.task in ("asr", "audiolm") else "text"
    if getattr(args, needed) is None:
        parser.error(f"--task {args.task} needs --{needed}")
    if args.prompt_scp is not None and args.task != "tts":
        parser.error("--prompt_scp is only used by --task tts")
    for name in ("batch_size", "nbest", "nj"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = args.output_dir / PARTS
    try:
        if args.nj > 1 and args.job is None:
            decoder = Decoder(args)
            write_decode_config(args, decoder)
            del decoder
            job_argv = python_module_argv("opuslm.bin.infer", [*argv, "--job", "JOB"])
            run_jobs(job_argv, args.nj, args.output_dir / "log" / "infer.JOB.log")
            merge_outputs(args.output_dir)
            return 0
        decoder = Decoder(args)
        done = finished_uttids(args.output_dir, args.task)
        uttids = split_for_job(sorted(decoder.inputs), args.job or 1, args.nj)
        todo = [u for u in uttids if u not in done]
        if len(todo) < len(uttids):
            log.info("%d of %d utterances already decoded", len(uttids) - len(todo), len(uttids))
        decoder.run(todo, parts_dir / f"job.{args.job or 1}.jsonl")
        if args.job is None:
            write_decode_config(args, decoder)
            merge_outputs(args.output_dir)
    except (ValueError, DumpError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
