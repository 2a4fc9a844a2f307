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
below the unigrams (log 1 / (V + 1)), once, where it leaves the vocabulary. An ARPA back-off
file (`save_arpa`, or SRILM / KenLM output) is read into the same form, with its `<unk>`
probability as `unk_logprob`.

    lm = WordNgramLM.from_sentences(words_of(line) for line in lines)  # or opuslm.bin.make_lexicon
    lm.save("data/word_lm.counts")  # the counts; lm.save_arpa("word_lm.arpa"): the estimate
    scorer = WordLMScorer(WordNgramLM.load("data/word_lm.counts"), text_tokenizer.surfaces())
    config = GenerationConfig(target="text", beam_size=8, word_lm=scorer, word_lm_weight=0.5)
"""

from __future__ import annotations

import logging
import math
import os
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path

from opuslm.fileio import write_text_atomic
from opuslm.model.lexicon import CACHE_LIMIT, SurfaceScorer, is_word_char, words_of

BOS, EOS = "<s>", "</s>"
UNK = -1  # history id of a word outside the vocabulary: no context holds it, so the LM backs off
AFTER_ALL = "\U0010ffff"  # sorts after every character: words with prefix p lie in [p, p + this)
UNK_WORD = "<unk>"  # an ARPA file's word for everything outside its vocabulary
NEVER = "-99"  # log10 of probability 0 in ARPA files (the <s> unigram)
LN10 = math.log(10.0)
MIN_MASS = 1e-300


logger = logging.getLogger(__name__)


class WordLMError(ValueError):
    """A word LM file that cannot be read."""


class _Context:
    """One history's continuations at one order: sorted word ids, the cumulative discounted
    probability over them (Kneser-Ney: `max(a(h, w) - D, 0) / total`), and the back-off weight
    gamma(h) that the lower orders' probabilities are scaled by."""

    __slots__ = ("ids", "cumulative", "gamma")

    def __init__(self, discounted: dict[int, float], gamma: float) -> None:
        self.ids = sorted(discounted)
        self.cumulative = [0.0, *accumulate(map(discounted.__getitem__, self.ids))]
        self.gamma = gamma

    @classmethod
    def from_counts(cls, counts: dict[int, float], discount: float) -> _Context:
        total = sum(counts.values())
        discounted = {w: max(c - discount, 0) / total for w, c in counts.items()}
        return cls(discounted, 1.0 - sum(discounted.values()))

    def mass(self, lo: int, hi: int) -> float:
        """Discounted probability of the continuations with ids in [lo, hi)."""
        return (
            self.cumulative[bisect_left(self.ids, hi)] - self.cumulative[bisect_left(self.ids, lo)]
        )


class WordNgramLM:
    """An interpolated n-gram LM: `P(w | h) = d(h, w) + gamma(h) P(w | h')` at each order, with
    `h'` the history less its oldest word, over a uniform distribution below the unigrams.

    Estimated from counts (`from_sentences`, `load` of a count file: interpolated Kneser-Ney) or
    read from an ARPA back-off file (`load`, from SRILM, KenLM or `save_arpa`), whose `P(w | h) =
    p(h, w)` if listed else `bow(h) P(w | h')` is the same form with `d = p - bow P(w | h')` and
    `gamma = bow`. Word ids are the vocabulary's sorted positions; `</s>` is id V (after every
    word, so in no prefix range) and `<s>` id V + 1.

    words: the sorted vocabulary; contexts[n - 1]: {history ids (n - 1 of them): _Context} of
    order n; unk_logprob: what a word outside the vocabulary costs (default log 1 / (V + 1), the
    uniform floor below the unigrams); counts: the top-order n-gram counts it was estimated
    from, if any (what `save` writes).
    """

    def __init__(
        self,
        words: list[str],
        contexts: list[dict[tuple[int, ...], _Context]],
        unk_logprob: float | None = None,
        counts: dict[tuple[str, ...], int] | None = None,
    ) -> None:
        if not contexts:
            raise ValueError("a word LM needs at least the unigram order")
        self.order = len(contexts)
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.eos, self.bos = len(words), len(words) + 1
        self.index[EOS], self.index[BOS] = self.eos, self.bos
        self.uniform = 1.0 / (len(words) + 1)  # below the unigrams: words and </s>
        self.unk_logprob = math.log(self.uniform) if unk_logprob is None else unk_logprob
        self.contexts = contexts
        self.counts = counts
        self._masses: dict[tuple[tuple[int, ...], int, int], float] = {}

    @classmethod
    def from_counts(cls, counts: dict[tuple[str, ...], int], order: int) -> WordNgramLM:
        """Interpolated Kneser-Ney from n-gram counts of the highest order: {(w_1, ..., w_n):
        count} for n = order, sentences padded with order - 1 `<s>` and one `</s>` (what
        `from_sentences` counts)."""
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        words = sorted({w for gram in counts for w in gram} - {BOS, EOS})
        index = {w: i for i, w in enumerate(words)}
        index[EOS], index[BOS] = len(words), len(words) + 1
        top = {tuple(index[w] for w in gram): float(c) for gram, c in counts.items()}
        return cls(words, _kneser_ney(top, order, index[BOS]), counts=counts)

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
        return cls.from_counts(dict(counts), order)

    def save(self, path: str | os.PathLike) -> None:
        """SRILM-style count file: `w_1 ... w_n<TAB>count` per line (order n throughout)."""
        if self.counts is None:
            raise ValueError("this word LM was read from an ARPA file and has no counts: save_arpa")
        lines = [" ".join(gram) + f"\t{count}" for gram, count in sorted(self.counts.items())]
        write_text_atomic(Path(path), "\n".join(lines) + "\n")

    def save_arpa(self, path: str | os.PathLike) -> None:
        """The estimated model as an ARPA back-off file (log10 probabilities and back-off
        weights), which `load` reads without estimating again and other LM tools read too."""
        names = [*self.words, EOS, BOS]
        sections = []
        for n, contexts in enumerate(self.contexts, 1):
            lines = []
            if n == 1:
                lines.append(f"{self.unk_logprob / LN10:.7f}\t{UNK_WORD}")
                lines.append(f"{NEVER}\t{BOS}{self._arpa_backoff((self.bos,))}")
            for history, context in sorted(contexts.items()):
                for word in context.ids:
                    if word == self.bos:
                        continue  # <s> is never predicted; its unigram line is above
                    p = self._mass(history, word, word + 1, n)
                    gram = " ".join(names[i] for i in (*history, word))
                    lines.append(
                        f"{math.log10(p):.7f}\t{gram}{self._arpa_backoff((*history, word))}"
                    )
            # A back-off history that is no n-gram of its own (the <s> <s> of a trigram's first
            # word) is listed with probability 0 (log10 -99), so its weight has a line to sit on.
            if n < self.order:
                listed = {(*h, w) for h, c in contexts.items() for w in c.ids}
                for history in sorted(set(self.contexts[n]) - listed):
                    if len(history) == n and history != (self.bos,):
                        gram = " ".join(names[i] for i in history)
                        lines.append(f"{NEVER}\t{gram}{self._arpa_backoff(history)}")
            sections.append(lines)
        header = ["", "\\data\\"] + [
            f"ngram {n}={len(lines)}" for n, lines in enumerate(sections, 1)
        ]
        body = []
        for n, lines in enumerate(sections, 1):
            body += ["", f"\\{n}-grams:", *lines]
        write_text_atomic(Path(path), "\n".join([*header, *body, "", "\\end\\", ""]))

    def _arpa_backoff(self, history: tuple[int, ...]) -> str:
        """The `\tlog10 bow` field of an n-gram that is a history of the next order ("" if none)."""
        if len(history) >= self.order:
            return ""
        context = self.contexts[len(history)].get(history)
        if context is None:
            return ""
        return f"\t{math.log10(context.gamma) if context.gamma > 0 else float(NEVER):.7f}"

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordNgramLM:
        """A count file (`save`, estimated here) or an ARPA file (`save_arpa`, SRILM, KenLM)."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise WordLMError(f"{path}: cannot read the word LM: {e}") from None
        if _starts_arpa(lines):
            return _read_arpa(path, lines)
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
        return cls.from_counts(counts, order)

    @property
    def num_ngrams(self) -> int:
        """How many n-grams of the highest order the model lists."""
        return sum(len(c.ids) for c in self.contexts[-1].values())

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
            found = self._mass(history, lo, hi, self.order)
            if len(self._masses) >= CACHE_LIMIT:
                self._masses.clear()
            self._masses[key] = found
        return found

    def _mass(self, history: tuple[int, ...], lo: int, hi: int, top: int) -> float:
        """S over orders 1..top, with `history` the last top - 1 ids (or more)."""
        found = (hi - lo) * self.uniform
        for n in range(1, top + 1):
            context = self.contexts[n - 1].get(history[len(history) - n + 1 :] if n > 1 else ())
            if context is not None:
                found = context.mass(lo, hi) + context.gamma * found
        # A pruned ARPA model's d can be negative; its sums are not, but may round below zero.
        return max(found, MIN_MASS)

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


def _kneser_ney(
    top: dict[tuple[int, ...], float], order: int, bos: int
) -> list[dict[tuple[int, ...], _Context]]:
    """Contexts of each order n = 1..order (index n - 1) from the top-order counts. Below the
    top order the counts are Kneser-Ney continuation counts (the number of distinct words seen
    before the n-gram), except for n-grams that start with <s>: nothing precedes those, so
    their raw counts."""
    adjusted: list[dict[tuple[int, ...], float]] = [{} for _ in range(order)]
    adjusted[-1] = top
    for n in range(order - 1, 0, -1):  # order n from order n + 1
        lower: dict[tuple[int, ...], float] = defaultdict(float)
        for gram in adjusted[n]:
            if gram[1] != bos:
                lower[gram[1:]] += 1.0
        for gram, count in top.items():
            suffix = gram[order - n :]
            if suffix[0] == bos:
                lower[suffix] += count
        adjusted[n - 1] = dict(lower)
    contexts = []
    for grams in adjusted:
        discount = _discount(grams.values())
        by_context: dict[tuple[int, ...], dict[int, float]] = defaultdict(dict)
        for gram, count in grams.items():
            by_context[gram[:-1]][gram[-1]] = count
        contexts.append({h: _Context.from_counts(c, discount) for h, c in by_context.items()})
    return contexts


def _starts_arpa(lines: Iterable[str]) -> bool:
    """Whether the first line with text is ARPA's \\data\\."""
    return next((line.strip() for line in lines if line.strip()), "") == "\\data\\"


def is_arpa(path: str | os.PathLike) -> bool:
    """Whether a word LM file is an ARPA file (else a count file)."""
    try:
        with open(path, encoding="utf-8") as f:
            return _starts_arpa(f)
    except (OSError, UnicodeDecodeError) as e:
        raise WordLMError(f"{path}: cannot read the word LM: {e}") from None


def _read_arpa(path: Path, lines: list[str]) -> WordNgramLM:
    """An ARPA back-off file as a WordNgramLM. Words are lower-cased, as the decoder spells them
    (`words_of`); an n-gram with a word the decoder cannot spell as one word ("new-york") can
    never be scored, so it is skipped and counted."""
    declared: dict[int, int] = {}
    grams: list[list[tuple[int, tuple[str, ...], float, float | None]]] = []
    section = 0  # 0: the header, n: the n-grams, -1: after \end\
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or section == -1:
            continue
        if line == "\\data\\":
            continue
        if line == "\\end\\":
            section = -1
            continue
        if line.startswith("\\") and line.endswith("-grams:"):
            n = line[1:-7]
            if not n.isdigit() or int(n) != len(grams) + 1:
                raise WordLMError(
                    f"{path}:{number}: expected the \\{len(grams) + 1}-grams: section"
                )
            section = int(n)
            grams.append([])
            continue
        if section == 0:
            key, _, value = line.partition("=")
            if not key.startswith("ngram ") or not value.strip().isdigit():
                raise WordLMError(f"{path}:{number}: expected 'ngram N=COUNT', got {raw!r}")
            declared[int(key[6:])] = int(value)
            continue
        fields = line.lower().split()  # words as the decoder spells them; <UNK> is <unk>
        try:
            if len(fields) not in (section + 1, section + 2):
                raise ValueError
            logp = float(fields[0])
            bow = float(fields[section + 1]) if len(fields) == section + 2 else None
        except ValueError:
            raise WordLMError(
                f"{path}:{number}: expected log10 p, {section} words and maybe a log10 back-off, "
                f"got {raw!r}"
            ) from None
        grams[-1].append((number, tuple(fields[1 : section + 1]), logp, bow))
    if not grams:
        raise WordLMError(f"{path}: an ARPA file without n-grams")
    for n, listed in enumerate(grams, 1):
        if declared.get(n) != len(listed):
            raise WordLMError(
                f"{path}: the header declares {declared.get(n)} {n}-grams, the file lists "
                f"{len(listed)}"
            )
    unk_logprob = None
    vocabulary = set()
    for number, (word,), logp, _ in grams[0]:
        if word == UNK_WORD:
            unk_logprob = logp * LN10
        elif word not in (BOS, EOS) and words_of(word) == [word]:
            if word in vocabulary:
                raise WordLMError(f"{path}:{number}: {word!r} is listed twice (after lower-casing)")
            vocabulary.add(word)
    lm = WordNgramLM(sorted(vocabulary), [{} for _ in grams], unk_logprob)
    index = lm.index.get
    skipped = 0
    probs: dict[tuple[int, ...], float] = {}  # listed n-gram ids -> P(last | the others)
    backoffs: dict[tuple[int, ...], float] = {}  # history ids -> bow

    def backed_off(ids: tuple[int, ...]) -> float:
        """P(ids[-1] | ids[:-1]) by the back-off rule, from the orders read so far."""
        scale = 1.0
        while len(ids) > 1 and ids not in probs:
            scale *= backoffs.get(ids[:-1], 1.0)
            ids = ids[1:]
        return scale * probs.get(ids, 0.0)

    for n, listed in enumerate(grams, 1):
        discounted: dict[tuple[int, ...], dict[int, float]] = defaultdict(dict)
        for _, gram, logp, bow in listed:
            ids = tuple(map(index, gram))
            if None in ids:
                skipped += gram != (UNK_WORD,)
                continue
            if bow is not None and n < len(grams):
                backoffs[ids] = 10.0**bow
            if ids[-1] == lm.bos:
                continue  # <s> is never predicted
            p = probs[ids] = 10.0**logp
            history = ids[:-1]
            # below the unigrams nothing (gamma 0): they are the whole vocabulary
            below = backoffs.get(history, 1.0) * backed_off(ids[1:]) if n > 1 else 0.0
            discounted[history][ids[-1]] = p - below
        if n > 1:  # a history with a back-off weight but no continuations listed
            for history in backoffs:
                if len(history) == n - 1:
                    discounted.setdefault(history, {})
        lm.contexts[n - 1] = {
            h: _Context(d, backoffs.get(h, 1.0) if n > 1 else 0.0) for h, d in discounted.items()
        }
    if skipped:
        logger.warning(
            "%s: skipped %d n-grams with <unk> or words the decoder cannot spell as one word",
            path,
            skipped,
        )
    return lm


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
