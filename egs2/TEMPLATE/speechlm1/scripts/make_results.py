"""The recipe's summary (RESULTS.md) from the files the stages leave in exp/.

    make_results.py --tag T --model_dir exp/speechlm_T_anneal --base_lm_dir exp/base_lm_T \\
        --test_sets test --text_test_sets text_test --timings exp/timings_T.tsv --output OUT \\
        [--pretrain_dir D --constlr_dir D --anneal_dir D --study_tts_utts N]

Sections: ASR WER/CER; TTS judge-WER of the synthesised audio next to the judge on the reference
audio and on codec copy synthesis; text perplexity of the base LM and of OpusLM; the annealing
study (pre-trained, constant-LR and annealed models side by side, with their teacher-forced
validation losses from train.log.jsonl); the wall time of every stage (the latest run of each, from
the timings file speechlm.sh appends to), the commands that ran them, and the machine. A figure
that is missing is shown as `-` and named on stderr; speechlm.sh calls this after stage 10 or 11.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

MISSING = "-"


class Summary:
    """Reads scores, remembering what was missing, and formats cells."""

    def __init__(self) -> None:
        self.missing: list[str] = []

    def score(self, path: Path) -> dict:
        if not path.is_file():
            self.missing.append(str(path))
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SystemExit(f"make_results.py: {path}: not valid JSON: {e}") from None

    def cell(self, value: object, digits: int = 2) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return MISSING
        return f"{value:.{digits}f}"


def ratio(numerator: object, denominator: object) -> float | None:
    numbers = all(isinstance(v, int | float) for v in (numerator, denominator))
    return numerator / denominator if numbers and denominator else None  # type: ignore[operator]


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def decode_dir(model: Path, task: str, test_set: str, max_utts: int = 0) -> Path:
    return model / (f"decode_{task}_{test_set}" + (f"_first{max_utts}" if max_utts else ""))


# ------------------------------------------------------------------------------ sections
def asr_section(s: Summary, model: Path, test_sets: list[str]) -> list[str]:
    rows = []
    for test_set in test_sets:
        score = s.score(decode_dir(model, "asr", test_set) / "score.json")
        rows.append(
            [
                test_set,
                model.name,
                s.cell(score.get("wer")),
                interval_cell(s, score.get("wer_interval_95")),
                s.cell(score.get("cer")),
                str(score.get("num_utts", MISSING)),
            ]
        )
    headers = ["test set", "model", "WER %", "WER 95% interval", "CER %", "#utts"]
    return [
        "## ASR",
        "",
        "The interval is a bootstrap over the test utterances (`opuslm.eval.bootstrap`): what the "
        "draw of these utterances leaves open.",
        "",
        *table(headers, rows),
    ]


def interval_cell(s: Summary, interval: object) -> str:
    if not isinstance(interval, list) or len(interval) != 2:
        return MISSING
    return f"{s.cell(interval[0])}-{s.cell(interval[1])}"


def paired_asr_lines(runs: list[tuple[str, Path]], test_sets: list[str]) -> list[str]:
    """The annealed model's WER minus each other run's on the same utterances, with a paired
    bootstrap interval, from the decodings' transcripts and dump/raw/<set>/text."""
    # The library, only here: the rest of the summary needs nothing but the score.json files.
    from opuslm.eval.asr_scoring import ScoringError, pair_texts, read_kaldi_text, score_texts
    from opuslm.eval.bootstrap import difference_interval

    annealed, others = runs[-1][1], runs[:-1]  # the annealed run is the last
    lines = []
    for test_set in test_sets:
        counts = {}
        try:
            refs = read_kaldi_text(Path("dump") / "raw" / test_set / "text")
            for _, run in runs:
                hyp_path = decode_dir(run, "asr", test_set) / "text"
                hyps, missing = pair_texts(refs, read_kaldi_text(hyp_path))
                score = score_texts(list(refs), list(refs.values()), hyps, missing=missing)
                counts[run] = score.word_counts()
        except (OSError, ScoringError) as e:
            print(f"make_results.py: WARNING: no paired ASR comparison: {e}", file=sys.stderr)
            return []
        errors, words = counts[annealed]
        for label, run in others:
            low, high = difference_interval(errors, counts[run][0], words)
            difference = 100 * (sum(errors) - sum(counts[run][0])) / sum(words)
            lines.append(
                f"- annealed minus {label}, ASR WER on {test_set} ({len(words)} utterances): "
                f"{difference:+.2f} points, 95% interval {low:+.2f} to {high:+.2f}"
            )
    if not lines:
        return []
    return [
        "Paired bootstrap over the test utterances (`opuslm.eval.bootstrap`): an interval that "
        "excludes 0 is a difference beyond the draw of the utterances.",
        "",
        *lines,
        "",
    ]


def tts_section(s: Summary, model: Path, test_sets: list[str]) -> list[str]:
    rows = []
    judge = "pocketsphinx"
    for test_set in test_sets:
        tts = s.score(decode_dir(model, "tts", test_set) / "score.json")
        copy = s.score(model / f"copy_synthesis_{test_set}" / "score.json")
        judge = str(tts.get("judge", judge))
        reference, copied, synthesised = (
            tts.get("ref_wer"),
            copy.get("wer_resynthesized"),
            tts.get("wer"),
        )
        for label, wer, cer, utts in (
            ("reference audio", reference, tts.get("ref_cer"), tts.get("num_utts")),
            ("codec copy synthesis", copied, None, copy.get("num_utts")),
            (f"TTS ({model.name})", synthesised, tts.get("cer"), tts.get("num_utts")),
        ):
            rows.append(
                [
                    test_set,
                    label,
                    s.cell(wer),
                    s.cell(cer),
                    s.cell(ratio(wer, reference)),
                    s.cell(ratio(wer, copied)),
                    str(utts if utts is not None else MISSING),
                ]
            )
    headers = [
        "test set",
        "audio",
        "judge WER %",
        "judge CER %",
        "/ reference",
        "/ copy synthesis",
        "#utts",
    ]
    return [
        "## TTS: judge WER",
        "",
        f"The judge ({judge}, offline) transcribes the reference audio, the reference audio passed "
        "through the codec alone (encode + decode: the ceiling for TTS with these tokens) and the "
        "synthesised audio; the ratio columns divide each WER by the reference's and by the copy "
        "synthesis'. CER of copy synthesis is not measured.",
        "",
        *table(headers, rows),
    ]


def condition_section(s: Summary, model: Path, test_sets: list[str]) -> list[str]:
    """Stage 10's condition gains of the last model; no section where it measured none."""
    rows = []
    for test_set in test_sets:
        for task, condition, unit in (("asr", "speech", "character"), ("tts", "text", "frame")):
            path = model / "condition_gain" / f"{task}_{test_set}.json"
            if not path.is_file():
                continue  # a task the recipe does not infer
            gain = s.score(path)
            rows.append(
                [
                    test_set,
                    task,
                    s.cell(gain.get("ce_own"), 3),
                    s.cell(gain.get("ce_other"), 3),
                    s.cell(gain.get("gain"), 3),
                    s.cell(gain.get("ctc_gain"), 3),
                    f"{condition} / {unit}",
                ]
            )
    if not rows:
        return []
    headers = ["test set", "task", "CE own", "CE other", "gain", "CTC gain", "swapped / per"]
    return [
        "## Does the model use its condition?",
        "",
        f"Teacher-forced CE of {model.name} (nats) on the test token dumps with each utterance's "
        "own condition and with the next utterance's (`opuslm.bin.condition_gain`): ASR's text "
        "per character with the speech swapped, TTS's semantic stream per frame with the "
        "transcript swapped. A gain near 0 means the model ignores the condition: it guesses "
        "the sentence (ASR) or babbles speech (TTS). CTC gain: the same for the CTC loss of that "
        "direction, where the model trains one; it is large when the CTC head reads the speech.",
        "",
        *table(headers, rows),
    ]


def text_section(s: Summary, model: Path, base_lm_dir: Path, text_sets: list[str]) -> list[str]:
    rows, notes = [], []
    for text_set in text_sets:
        base = s.score(base_lm_dir / f"score_text_{text_set}" / "score.json")
        opus = s.score(model / f"score_text_{text_set}" / "score.json")
        if base and opus and base.get("tokenizer_md5") != opus.get("tokenizer_md5"):
            notes.append(
                f"{text_set}: the two models used different text tokenizers: the "
                "perplexities count different units and are not comparable."
            )
        for label, score in (
            (f"base LM ({base_lm_dir.name}/hf)", base),
            (f"OpusLM ({model.name})", opus),
        ):
            rows.append(
                [
                    text_set,
                    label,
                    s.cell(score.get("ppl"), 3),
                    str(score.get("num_tokens", MISSING)),
                    s.cell(ratio(score.get("ppl"), base.get("ppl")), 3),
                ]
            )
    headers = ["text set", "model", "perplexity", "#tokens", "/ base LM"]
    return [
        "## Text perplexity",
        "",
        "Per token of the recipe's text tokenizer (the same for both models: each line's tokens "
        "and eos after bos). The base LM is the stage-6 text LM exported with its text rows only, "
        "so its probabilities are renormalised over the text ids; OpusLM predicts over the joint "
        "vocabulary, as trained.",
        "",
        *table(headers, rows),
        *[f"Note: {n}" for n in notes],
    ]


def train_log(run: Path) -> tuple[list[dict], list[dict]]:
    """(train records, valid records at the last validated step) of run/train.log.jsonl."""
    path = run / "train.log.jsonl"
    if not path.is_file():
        return [], []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    last = max((r["step"] for r in valid), default=None)
    return train, [r for r in valid if r["step"] == last]


def study_section(
    s: Summary,
    runs: list[tuple[str, Path]],
    test_sets: list[str],
    text_sets: list[str],
    tts_utts: int,
) -> list[str]:
    logs = {}
    for _, run in runs:
        train, valid = train_log(run)
        if not train:
            s.missing.append(str(run / "train.log.jsonl"))
        logs[run] = (train, {f"{r['task']} ({r['dataset']})": r.get("loss") for r in valid})
    # Only the validation sets every run scored (annealing may validate on fewer than
    # pre-training); text perplexity has its own column.
    tasks = [t for t in logs[runs[0][1]][1] if all(t in valid for _, valid in logs.values())]
    rows = []
    for label, run in runs:
        train, valid = logs[run]
        step = str(train[-1]["step"]) if train else MISSING
        lr = f"{train[-1]['lr']:.2e}" if train else MISSING
        row = [label, run.name, step, lr]
        for test_set in test_sets:
            asr = s.score(decode_dir(run, "asr", test_set) / "score.json")
            tts = s.score(decode_dir(run, "tts", test_set, tts_utts) / "score.json")
            row += [s.cell(asr.get("wer")), s.cell(asr.get("cer")), s.cell(tts.get("wer"))]
        for text_set in text_sets:
            row.append(s.cell(s.score(run / f"score_text_{text_set}" / "score.json").get("ppl"), 3))
        row += [s.cell(valid.get(task), 3) for task in tasks]
        rows.append(row)
    subset = f" (first {tts_utts} utts)" if tts_utts else ""
    headers = ["model", "dir", "steps", "last lr"]
    for test_set in test_sets:
        headers += [
            f"ASR WER % {test_set}",
            f"ASR CER % {test_set}",
            f"TTS judge WER % {test_set}{subset}",
        ]
    headers += [f"ppl {t}" for t in text_sets] + [f"valid loss {t}" for t in tasks]
    return [
        "## Annealing study",
        "",
        "The pre-training checkpoint; the same run continued for the annealing steps on the "
        "annealing data at a constant learning rate (the rate pre-training ended at, the "
        "annealing's start); and the annealed model (learning rate decayed linearly to 0). "
        "Valid losses are teacher-forced (weighted per modality, as in training) at each run's "
        "last validation, from train.log.jsonl; `last lr` is the last logged learning rate.",
        "",
        *table(headers, rows),
        *paired_asr_lines(runs, test_sets),
    ]


def timing_section(s: Summary, timings: Path) -> tuple[list[str], list[str]]:
    """(the timing table, the commands of its runs in the order they ran)."""
    latest: dict[int, list[str]] = {}
    if not timings.is_file():
        s.missing.append(str(timings))
    else:
        for lineno, line in enumerate(timings.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split("\t")
            if len(fields) != 5 or not fields[1].isdigit() or not fields[3].isdigit():
                raise SystemExit(
                    f"make_results.py: {timings}:{lineno}: expected 5 tab-separated "
                    "fields: date, stage, title, seconds, command"
                )
            latest[int(fields[1])] = fields
    rows = [[str(n), f[2], f[3], f[0]] for n, f in sorted(latest.items())]
    total = sum(int(f[3]) for f in latest.values())
    rows.append(["all", "", str(total), ""])
    commands: list[str] = []
    for fields in sorted(latest.values(), key=lambda f: f[0]):
        if fields[4] not in commands:
            commands.append(fields[4])
    lines = [
        "## Wall time per stage",
        "",
        "The latest run of each stage (stages run in several invocations are summed as they ran).",
        "",
        *table(["stage", "what", "seconds", "finished"], rows),
    ]
    return lines, commands


def project_commit(directory: Path, max_names: int = 5) -> str:
    """HEAD's short hash, and the tracked files changed since (a run with edited configs is not
    the commit's run), e.g. "1a2b3c4 with uncommitted changes to conf/demo/train.yaml"."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=directory
        ).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        # -z: NUL-terminated "XY path" records, names unquoted; a rename or copy (X or Y of
        # R / C) is followed by one more field, the original path, with no XY in front.
        fields = iter(git("status", "--porcelain", "-z", "--untracked-files=no").split("\0"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = []
    for record in fields:
        if len(record) > 3:
            changed.append(record[3:])
            if {"R", "C"} & set(record[:2]):
                next(fields, None)
    if not changed:
        return commit
    names = ", ".join(changed[:max_names])
    more = f" and {len(changed) - max_names} more" if len(changed) > max_names else ""
    return f"{commit} with uncommitted changes to {names}{more}"


def environment() -> list[str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for module in ("torch", "transformers"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    commit = project_commit(Path(__file__).resolve().parent)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        "## Environment",
        "",
        f"- date: {datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- CPU: {len(os.sched_getaffinity(0))} cores usable ({os.cpu_count()} online), {cpu}; "
        f"load average when written {load}",
        f"- Python {platform.python_version()}, {', '.join(versions)}; project commit {commit}",
        "",
    ]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--model_dir", required=True, type=Path, help="the last trained model")
    parser.add_argument("--base_lm_dir", required=True, type=Path)
    parser.add_argument("--test_sets", required=True, help="space-separated")
    parser.add_argument("--text_test_sets", default="", help="space-separated")
    parser.add_argument("--timings", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--pretrain_dir", type=Path, help="annealing study: pre-training run")
    parser.add_argument("--constlr_dir", type=Path, help="annealing study: constant-LR run")
    parser.add_argument("--anneal_dir", type=Path, help="annealing study: annealed run")
    parser.add_argument("--study_tts_utts", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    study_dirs = (args.pretrain_dir, args.constlr_dir, args.anneal_dir)
    if any(study_dirs) and not all(study_dirs):
        raise SystemExit(
            "make_results.py: the study needs --pretrain_dir, --constlr_dir and --anneal_dir"
        )
    test_sets, text_sets = args.test_sets.split(), args.text_test_sets.split()
    recipe = Path.cwd()
    s = Summary()
    lines = [
        f"# RESULTS: {recipe.parent.name}/{recipe.name}, preset `{args.tag}`",
        "",
        "Written by `egs2/TEMPLATE/speechlm1/scripts/make_results.py` from the score.json files of "
        "stage 10 (error rates in percent, Whisper's English normaliser on both sides). These "
        "figures are what the run measured, however far from good.",
        "",
    ]
    lines += asr_section(s, args.model_dir, test_sets)
    lines += tts_section(s, args.model_dir, test_sets)
    lines += condition_section(s, args.model_dir, test_sets)
    if text_sets:
        lines += text_section(s, args.model_dir, args.base_lm_dir, text_sets)
    if all(study_dirs):
        runs = [
            ("pre-training checkpoint", args.pretrain_dir),
            ("constant-LR continuation", args.constlr_dir),
            ("annealed", args.anneal_dir),
        ]
        lines += study_section(s, runs, test_sets, text_sets, args.study_tts_utts)
    timing, commands = timing_section(s, args.timings)
    lines += timing
    lines += ["## Commands", "", "In the recipe directory, in the order they last ran:", "", "```"]
    lines += [*commands, "```", ""]
    lines += environment()
    text = "\n".join(lines)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, args.output)
    print(text, end="")
    for path in dict.fromkeys(s.missing):
        print(
            f"make_results.py: WARNING: {path} is missing: its figures show as {MISSING}",
            file=sys.stderr,
        )
    print(f"make_results.py: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
