"""Loading a word LM: estimating it from a count file vs reading the same model's ARPA file.

`pack` stores a word LM in the format it was given, and `load_packed` reads it at every load:
a count file is estimated there (interpolated Kneser-Ney, `WordNgramLM.from_counts`), an ARPA
file is parsed (`_read_arpa`). This measures both on one synthetic model of the demo's size
(about 16,000 words and 130,000 trigrams: Zipf-distributed words, 15,000 sentences), the two
loads alternating in one process, and checks that they give the same probabilities.

    python benchmarks/bench_word_lm.py [--sentences 15000] [--words 16000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from opuslm.model.word_lm import WordNgramLM


def synthetic_sentences(count: int, vocabulary: int, seed: int = 0) -> list[list[str]]:
    """Sentences of 4-16 words drawn with Zipf weights (rank r: 1 / r), as text is."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)]
    weights = [1.0 / (rank + 1) for rank in range(vocabulary)]
    return [rng.choices(words, weights, k=rng.randint(4, 16)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=15000)
    parser.add_argument("--words", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lm = WordNgramLM.from_sentences(synthetic_sentences(args.sentences, args.words), 3)
    with tempfile.TemporaryDirectory() as tmp:
        counts, arpa = Path(tmp) / "lm.counts", Path(tmp) / "lm.arpa"
        lm.save(counts)
        lm.save_arpa(arpa)
        lines = {p.suffix: len(p.read_text().splitlines()) for p in (counts, arpa)}
        times: dict[str, list[float]] = {"counts": [], "arpa": []}
        loaded: dict[str, WordNgramLM] = {}
        for _ in range(args.repeats):
            for name, path in (("counts", counts), ("arpa", arpa)):
                start = time.perf_counter()
                loaded[name] = WordNgramLM.load(path)
                times[name].append(time.perf_counter() - start)
        from_arpa, from_counts = loaded["arpa"], loaded["counts"]
    rng = random.Random(1)
    worst = max(
        abs(from_arpa.logprob(w, h) - from_counts.logprob(w, h))
        for w, h in (
            (rng.choice(lm.words), [rng.choice(lm.words), rng.choice(lm.words)])
            for _ in range(2000)
        )
    )
    print(
        f"{len(lm)} words, {lm.num_ngrams} trigrams; count file {lines['.counts']} lines, "
        f"ARPA file {lines['.arpa']} lines; largest log-prob difference {worst:.1e}"
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"load {name:6s}: median {median[name]:.2f} s  ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"ARPA load / count-file estimate: {median['arpa'] / median['counts']:.2f}x")


if __name__ == "__main__":
    main()
