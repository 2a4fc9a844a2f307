"""A word lexicon for text decoding: a penalty for each word of a hypothesis that is not in it.

Kaldi and ESPnet decoders can restrict a transcript to a lexicon's words. Here the constraint is
soft: beam search (or greedy decoding) adds `-penalty` to a hypothesis' score once per word that
is not in the list, so an unknown word still wins where the audio and the LM agree on it. A small
model spells many words it has heard only a few times as near-misses ("carponter"); the penalty
moves the beam towards a known spelling.

Words are maximal runs of word characters (letters, digits, apostrophes), lower-cased; any other
character (space, punctuation, hyphen) ends a word. A word is charged at the first token that
makes it no prefix of any lexicon word (so the beam can drop it at once), or where it ends
(boundary or eos) if it is a prefix but not a whole word.

    lexicon = Lexicon.load("data/lexicon.txt", text_tokenizer.surfaces())
    config = GenerationConfig(target="text", beam_size=8, lexicon=lexicon, lexicon_penalty=2.0)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

# Remembered answers per scorer: a word LM's states carry their history, so a long decoding run
# keeps meeting new ones; past this many the memory is dropped and rebuilt (about 100 MB).
CACHE_LIMIT = 500_000
ROOT = 0  # trie node of an empty word (between words)
OUT = -1  # state of a word that already left the lexicon (and was charged for it)


class LexiconError(ValueError):
    """A lexicon file that cannot be read."""


def is_word_char(char: str) -> bool:
    return char.isalnum() or char == "'"


def words_of(text: str) -> list[str]:
    """The lexicon's words of a text: "It's a Well-known fact." -> ["it's", "a", "well",
    "known", "fact"]."""
    words, current = [], []
    for char in text.lower():
        if is_word_char(char):
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


class SurfaceScorer:
    """A word-level scorer of hypotheses read one character at a time through a tokenizer's token
    surfaces (surfaces[i]: the text that text id i adds to a transcript).

    Subclasses define `start` (the state of an empty hypothesis), `step(state, char) -> (state,
    value)` and `end(state) -> value` (what ending the hypothesis there adds); `move` walks a
    text id's characters and remembers the answer per (state, text id), which the hypotheses of a
    beam mostly share.
    """

    start: object

    def __init__(self, surfaces: Sequence[str]) -> None:
        self.surfaces = [s.lower() for s in surfaces]
        self._moves: dict[tuple, tuple] = {}

    def step(self, state, char: str) -> tuple:
        raise NotImplementedError

    def end(self, state) -> float:
        raise NotImplementedError

    def move(self, state, text_id: int) -> tuple:
        """(state after appending text id `text_id` to a hypothesis at `state`, the value added)."""
        key = (state, text_id)
        found = self._moves.get(key)
        if found is None:
            value = 0
            # Text rows past the tokenizer's ids (a base LM's padded embedding rows) add no text.
            for char in self.surfaces[text_id] if text_id < len(self.surfaces) else "":
                state, added = self.step(state, char)
                value += added
            if len(self._moves) >= CACHE_LIMIT:
                self._moves.clear()
            self._moves[key] = found = (state, value)
        return found


class Lexicon(SurfaceScorer):
    """A word list as a character trie, read through one tokenizer's token surfaces; its values
    are words charged.

    surfaces[i]: the text that text id i adds to a transcript (`TextTokenizer.surfaces()`).
    """

    start = ROOT

    def __init__(self, words: Iterable[str], surfaces: Sequence[str]) -> None:
        super().__init__(surfaces)
        self.children: list[dict[str, int]] = [{}]
        self.is_word: list[bool] = [False]
        for word in words:
            for part in words_of(word):
                self._add(part)
        self.num_words = sum(self.is_word)

    def _add(self, word: str) -> None:
        node = ROOT
        for char in word:
            child = self.children[node].get(char)
            if child is None:
                child = len(self.children)
                self.children[node][char] = child
                self.children.append({})
                self.is_word.append(False)
            node = child
        self.is_word[node] = True

    @classmethod
    def load(cls, path: str | os.PathLike, surfaces: Sequence[str]) -> Lexicon:
        """A lexicon file: one word per line, optionally followed by fields (a count) that are
        ignored; blank lines are skipped."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise LexiconError(f"{path}: cannot read the lexicon: {e}") from None
        words = []
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if words_of(fields[0]) != [fields[0].lower()]:
                raise LexiconError(
                    f"{path}:{number}: {fields[0]!r} is not one word (letters, digits and "
                    "apostrophes)"
                )
            words.append(fields[0])
        if not words:
            raise LexiconError(f"{path}: the lexicon has no words")
        return cls(words, surfaces)

    def __len__(self) -> int:
        return self.num_words

    def end(self, node: int) -> int:
        """Words charged when the word at `node` ends (at a boundary, or the hypothesis' end)."""
        return int(node > ROOT and not self.is_word[node])

    def step(self, node: int, char: str) -> tuple[int, int]:
        """(node after `char`, words charged): a word is charged at the character that makes it
        no prefix of a lexicon word, or where it ends as a prefix only."""
        if not is_word_char(char):
            return ROOT, self.end(node)
        if node == OUT:
            return OUT, 0
        child = self.children[node].get(char)
        return (OUT, 1) if child is None else (child, 0)


class HypothesisStates:
    """One word-level scorer's state for each hypothesis of a decoding batch [H].

    The scorer (a `Lexicon`, or a `opuslm.model.word_lm.WordLMScorer`) has `start`, `move(state,
    text_id) -> (state, value)` and `end(state) -> value`: words charged, or log-probs gained.
    """

    def __init__(self, scorer, num_hyps: int) -> None:
        self.scorer = scorer
        self.states = [scorer.start] * num_hyps

    def scores(self, scored: torch.Tensor) -> torch.Tensor:
        """Values [H, C] of hypothesis h appending text id c, where `scored` [H, C] (other
        entries, e.g. banned ids, are left 0)."""
        values = torch.zeros(scored.shape, dtype=torch.float32)
        hyps, text_ids = scored.nonzero(as_tuple=True)
        if len(hyps):
            move, states = self.scorer.move, self.states
            found = [move(states[h], i)[1] for h, i in zip(hyps.tolist(), text_ids.tolist())]
            values[hyps, text_ids] = torch.tensor(found, dtype=torch.float32)
        return values.to(scored.device)

    def end_scores(self) -> torch.Tensor:
        """Values [H] of each hypothesis ending now."""
        return torch.tensor([self.scorer.end(s) for s in self.states], dtype=torch.float32)

    def advance(self, text_ids: Sequence[int]) -> None:
        """Append one id per hypothesis (-1: not a text id, e.g. eos or pad: no change)."""
        move = self.scorer.move
        self.states = [s if i < 0 else move(s, i)[0] for s, i in zip(self.states, text_ids)]

    def select(self, index: torch.Tensor) -> None:
        """Keep hypotheses index [H'] (beam search's parents), in that order."""
        self.states = [self.states[i] for i in index.tolist()]
