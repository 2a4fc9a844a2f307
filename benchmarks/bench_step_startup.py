"""Wall and CPU time of short recipe steps: garbage collection paused while a step imports
(`python -m opuslm.bin.<name>`, as the recipes run them) vs collection left as Python starts it.

The baseline runs the same module in the same code through `runpy` from `python -c`, where
argv[0] is not "-m", so opuslm/bin/__init__.py leaves collection alone (the behaviour before
it paused). Each step runs `--rounds` times per mode, alternating, on the mini recipe's model
size (random weights: only the time matters), one torch thread:

- `infer --task asr` on the 8 flite utterances of bench_decode.py (imports the model late);
- `score_text` of that model on 8 sentences;
- `score_tts` with the pocketsphinx judge, the utterances against themselves (no torch).

    .venv/bin/python benchmarks/bench_step_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
import bench_decode  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

SENTENCES = [
    "the river ran quietly past the mill",
    "a bell rang from the old tower",
    "he hoped there would be stew for dinner",
    "the lamp lit a warm corner of the room",
    "she loved stories of old castles",
    "it was the best of times",
    "the coach rolled on through the night",
    "a tale of two cities",
]


def run_step(module: str, args: list[str], paused: bool) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one step run."""
    if paused:
        command = [sys.executable, "-m", module, *args]
    else:
        code = (
            "import runpy, sys\n"
            f"sys.argv = [{module!r}] + sys.argv[1:]\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        )
        command = [sys.executable, "-c", code, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        voices = ("slt", "rms", "awb", "kal16")
        sentences = bench_decode.SENTENCES
        spoken = {f"utt{i}": (voices[i % 4], text) for i, text in enumerate(sentences)}
        spec = dataclasses.replace(bench_decode.MINI, utterances=spoken)
        tiny = build_tiny_model(root / "model", spec)
        text = root / "text.txt"
        text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
        steps = {
            "infer --task asr (8 utts)": (
                "opuslm.bin.infer",
                lambda out: [
                    "--model_dir", str(tiny.packed_dir), "--task", "asr",
                    "--wav_scp", str(tiny.wav_scp), "--output_dir", str(out),
                ],
            ),
            "score_text (8 sentences)": (
                "opuslm.bin.score_text",
                lambda out: [
                    "--model_dir", str(tiny.packed_dir), "--text", str(text),
                    "--output_dir", str(out),
                ],
            ),
            "score_tts, pocketsphinx (8 utts)": (
                "opuslm.bin.score_tts",
                lambda out: [
                    "--ref_text", str(tiny.text), "--ref_wav_scp", str(tiny.wav_scp),
                    "--syn_wav_scp", str(tiny.wav_scp), "--output_dir", str(out),
                ],
            ),
        }  # fmt: skip
        print("| step | collection | wall (s) | CPU (s) | / baseline (wall) |")
        print("|---|---|---|---|---|")
        for name, (module, make_args) in steps.items():
            times = {True: [], False: []}
            for r in range(args.rounds):
                for paused in (False, True):
                    out = root / f"out_{module}_{paused}_{r}"
                    times[paused].append(run_step(module, make_args(out), paused))
            mean = {p: [sum(x) / len(x) for x in zip(*t, strict=True)] for p, t in times.items()}
            for paused in (False, True):
                wall, cpu = mean[paused]
                label = "paused while importing" if paused else "as Python starts it"
                ratio = wall / mean[False][0]
                print(f"| {name} | {label} | {wall:.2f} | {cpu:.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
