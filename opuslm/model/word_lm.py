"""A word n-gram LM for character-level text decoding, scored one token at a time (look-ahead).

A character-level LM trained on a few thousand sentences knows spelling but little about which
words follow which: the demo's text LM spends about 1.6 nats per character, some 9 nats per
word, where a word trigram of the same text spends fewer. Beam search can add a word LM's score
(shallow fusion) without waiting for a word to end, by the look-ahead of Hori et al. (2018,
"End-to-end speech recognition with word-based RNN language models"): with `S(p | h)` the
probability mass of the vocabulary words that start with prefix p after history h,

    a character c that extends prefix p scores   log S(p + c | h) - log S(p | h)
    the end of word w (space, punctuation, eos)   log P(w | h) - log S(w | h)
    eos after the last word                       log P(</s> | h')

so a word's characters add up to exactly `log P(w | h)` and a hypothesis is never scored on a
word it has not finished. The vocabulary is kept sorted, so the words with a prefix are one
index range and `S` is a difference of cumulative sums at each order.

The model is an interpolated Kneser-Ney n-gram (Chen & Goodman 1998, one discount per order)
over a closed vocabulary: the words of its training text, split like the lexicon's
(`opuslm.model.lexicon.words_of`). A word outside it costs `unk_logprob`, the uniform floor
below the unigrams (log 1 / (V + 1)), once, where it leaves the vocabulary.

    lm = WordNgramLM.from_sentences(words_of(line) for line in lines)  # or opuslm.bin.make_lexicon
    lm.save("data/word_lm.counts")
    scorer = WordLMScorer(WordNgramLM.load("data/word_lm.counts"), text_tokenizer.surfaces())
    config = GenerationConfig(target="text", beam_size=8, word_lm=scorer, word_lm_weight=0.5)
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from opuslm.fileio import write_text_atomic
from opuslm.model.lexicon import CACHE_LIMIT, SurfaceScorer, is_word_char

BOS, EOS = "<s>", "</s>"
UNK = -1  # history id of a word outside the vocabulary: no context holds it, so the LM backs off
AFTER_ALL = "\U0010ffff"  # sorts after every character: words with prefix p lie in [p, p + this)


class WordLMError(ValueError):
    """A word LM file that cannot be read."""


class _Context:
    """One history's continuations at one order: sorted word ids, the cumulative discounted
    probability `max(a(h, w) - D, 0) / total` over them, and the back-off weight gamma(h)."""

    __slots__ = ("ids", "cumulative", "gamma")

    def __init__(self, counts: dict[int, float], discount: float) -> None:
        total = sum(counts.values())
        self.ids = sorted(counts)
        self.cumulative = [0.0]
        for word in self.ids:
            self.cumulative.append(self.cumulative[-1] + max(counts[word] - discount, 0) / total)
        self.gamma = 1.0 - self.cumulative[-1]

    def mass(self, lo: int, hi: int) -> float:
        """Discounted probability of the continuations with ids in [lo, hi)."""
        return (
            self.cumulative[bisect_left(self.ids, hi)] - self.cumulative[bisect_left(self.ids, lo)]
        )


class WordNgramLM:
    """An interpolated Kneser-Ney LM from n-gram counts of the highest order.

    counts: {(w_1, ..., w_n): count} for n = order, sentences padded with order - 1 `<s>` and one
    `</s>` (what `from_sentences` counts). Word ids are the vocabulary's sorted positions; `</s>`
    is id V (after every word, so in no prefix range) and `<s>` id V + 1.
    """

    def __init__(self, counts: dict[tuple[str, ...], int], order: int) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        self.counts = counts
        self.words = sorted({w for gram in counts for w in gram} - {BOS, EOS})
        self.index = {w: i for i, w in enumerate(self.words)}
        self.eos, self.bos = len(self.words), len(self.words) + 1
        self.index[EOS], self.index[BOS] = self.eos, self.bos
        self.uniform = 1.0 / (len(self.words) + 1)  # below the unigrams: words and </s>
        self.unk_logprob = math.log(self.uniform)
        self.contexts: list[dict[tuple[int, ...], _Context]] = self._estimate(counts)
        self._masses: dict[tuple[tuple[int, ...], int, int], float] = {}

    def _estimate(
        self, counts: dict[tuple[str, ...], int]
    ) -> list[dict[tuple[int, ...], _Context]]:
        """Contexts of each order n = 1..order (index n - 1). Below the top order the counts are
        Kneser-Ney continuation counts (the number of distinct words seen before the n-gram),
        except for n-grams that start with <s>: nothing precedes those, so their raw counts."""
        top = {tuple(self.index[w] for w in gram): float(c) for gram, c in counts.items()}
        adjusted: list[dict[tuple[int, ...], float]] = [{} for _ in range(self.order)]
        adjusted[-1] = top
        for n in range(self.order - 1, 0, -1):  # order n from order n + 1
            lower: dict[tuple[int, ...], float] = defaultdict(float)
            for gram in adjusted[n]:
                if gram[1] != self.bos:
                    lower[gram[1:]] += 1.0
            for gram, count in top.items():
                suffix = gram[self.order - n :]
                if suffix[0] == self.bos:
                    lower[suffix] += count
            adjusted[n - 1] = dict(lower)
        contexts = []
        for grams in adjusted:
            discount = _discount(grams.values())
            by_context: dict[tuple[int, ...], dict[int, float]] = defaultdict(dict)
            for gram, count in grams.items():
                by_context[gram[:-1]][gram[-1]] = count
            contexts.append({h: _Context(c, discount) for h, c in by_context.items()})
        return contexts

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]], order: int = 3) -> WordNgramLM:
        """Counts the n-grams of word lists (one per sentence)."""
        counts: Counter[tuple[str, ...]] = Counter()
        for words in sentences:
            padded = [BOS] * (order - 1) + list(words) + [EOS]
            for end in range(order, len(padded) + 1):
                counts[tuple(padded[end - order : end])] += 1
        if not counts:
            raise ValueError("no sentences to count")
        return cls(dict(counts), order)

    def save(self, path: str | os.PathLike) -> None:
        """SRILM-style count file: `w_1 ... w_n<TAB>count` per line (order n throughout)."""
        lines = [" ".join(gram) + f"\t{count}" for gram, count in sorted(self.counts.items())]
        write_text_atomic(Path(path), "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordNgramLM:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise WordLMError(f"{path}: cannot read the word LM: {e}") from None
        counts: dict[tuple[str, ...], int] = {}
        order = None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            gram, _, count = line.rpartition("\t")
            words = tuple(gram.split())
            if order is None:
                order = len(words)
            if not words or len(words) != order or not count.strip().isdigit():
                raise WordLMError(
                    f"{path}:{number}: expected {order or 'n'} words, a tab and a count, got "
                    f"{line!r}"
                )
            counts[words] = counts.get(words, 0) + int(count)
        if order is None:
            raise WordLMError(f"{path}: the word LM has no counts")
        return cls(counts, order)

    def __len__(self) -> int:
        return len(self.words)

    def word_range(self, prefix: str) -> tuple[int, int]:
        """Ids [lo, hi) of the vocabulary words that start with `prefix` ("": every word)."""
        if not prefix:
            return 0, len(self.words)
        return bisect_left(self.words, prefix), bisect_left(self.words, prefix + AFTER_ALL)

    def mass(self, history: tuple[int, ...], lo: int, hi: int) -> float:
        """S: the probability that the word after `history` (its last order - 1 ids) has an id in
        [lo, hi)."""
        key = (history, lo, hi)
        found = self._masses.get(key)
        if found is None:
            found = (hi - lo) * self.uniform
            for n in range(1, self.order + 1):
                context = self.contexts[n - 1].get(history[len(history) - n + 1 :] if n > 1 else ())
                if context is not None:
                    found = context.mass(lo, hi) + context.gamma * found
            if len(self._masses) >= CACHE_LIMIT:
                self._masses.clear()
            self._masses[key] = found
        return found

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """log P(word | history) (word `</s>` for the end of the sentence; `<s>` fills a short
        history); a word outside the vocabulary gets `unk_logprob`."""
        ids = self.history_ids(history)
        if word != EOS and word not in self.index:
            return self.unk_logprob
        i = self.index[word]
        return math.log(self.mass(ids, i, i + 1))

    def history_ids(self, history: Sequence[str]) -> tuple[int, ...]:
        padded = [BOS] * (self.order - 1) + list(history)
        keep = padded[len(padded) - self.order + 1 :] if self.order > 1 else []
        return tuple(self.index.get(w, UNK) if w != BOS else self.bos for w in keep)


def _discount(counts: Iterable[float]) -> float:
    """Ney's absolute discount from the numbers of n-grams seen once and twice."""
    counts = list(counts)
    once = sum(1 for c in counts if c == 1)
    twice = sum(1 for c in counts if c == 2)
    if once == 0:
        return 0.5
    return min(max(once / (once + 2 * twice), 0.1), 0.9)


# A hypothesis' word-LM state: (history ids, the letters of the word being spelt); the letters
# are None once that word has left the vocabulary (it was charged as unknown then).
WordState = tuple[tuple[int, ...], "str | None"]


class WordLMScorer(SurfaceScorer):
    """Look-ahead scores of a word LM through one tokenizer's token surfaces
    (`TextTokenizer.surfaces()`); its values are log-probs.
    """

    def __init__(self, lm: WordNgramLM, surfaces: Sequence[str]) -> None:
        super().__init__(surfaces)
        self.lm = lm
        self.start: WordState = (lm.history_ids(()), "")

    def _log_mass(self, history: tuple[int, ...], prefix: str) -> float:
        """log S(prefix | history); 0 for the empty prefix (every word, and the end)."""
        return math.log(self.lm.mass(history, *self.lm.word_range(prefix))) if prefix else 0.0

    def _end_word(self, state: WordState) -> tuple[WordState, float]:
        """(state after the word being spelt ends, its score)."""
        history, prefix = state
        if prefix == "":
            return state, 0.0
        word = UNK if prefix is None else self.lm.index.get(prefix, UNK)
        score = 0.0
        if prefix is not None:  # an unfinished vocabulary prefix ends as an unknown word
            whole = (
                self.lm.unk_logprob
                if word == UNK
                else math.log(self.lm.mass(history, word, word + 1))
            )
            score = whole - self._log_mass(history, prefix)
        history = (history + (word,))[1:] if history else history
        return (history, ""), score

    def step(self, state: WordState, char: str) -> tuple[WordState, float]:
        """(state after `char`, the log-prob it adds)."""
        history, prefix = state
        if not is_word_char(char):
            return self._end_word(state)
        if prefix is None:  # inside an unknown word, which has paid already
            return state, 0.0
        longer = prefix + char
        lo, hi = self.lm.word_range(longer)
        before = self._log_mass(history, prefix)
        if lo == hi:  # leaves the vocabulary: an unknown word, charged once
            return (history, None), self.lm.unk_logprob - before
        return (history, longer), math.log(self.lm.mass(history, lo, hi)) - before

    def end(self, state: WordState) -> float:
        """The log-prob that ending the hypothesis adds: its last word, then </s>."""
        state, score = self._end_word(state)
        eos = self.lm.eos
        return score + math.log(self.lm.mass(state[0], eos, eos + 1))
