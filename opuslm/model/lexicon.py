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


class Lexicon:
    """A word list as a character trie, read through one tokenizer's token surfaces.

    surfaces[i]: the text that text id i adds to a transcript (`TextTokenizer.surfaces()`).
    """

    def __init__(self, words: Iterable[str], surfaces: Sequence[str]) -> None:
        self.children: list[dict[str, int]] = [{}]
        self.is_word: list[bool] = [False]
        for word in words:
            for part in words_of(word):
                self._add(part)
        self.num_words = sum(self.is_word)
        self.surfaces = [s.lower() for s in surfaces]
        # (node, text id) -> (node after the id's characters, words charged on the way)
        self._moves: dict[tuple[int, int], tuple[int, int]] = {}

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

    def _end_word(self, node: int) -> int:
        """Words charged when the word at `node` ends."""
        return int(node > ROOT and not self.is_word[node])

    def move(self, node: int, text_id: int) -> tuple[int, int]:
        """(node after appending text id `text_id` to a hypothesis at `node`, words charged)."""
        key = (node, text_id)
        found = self._moves.get(key)
        if found is not None:
            return found
        charged = 0
        # Text rows past the tokenizer's ids (a base LM's padded embedding rows) add no text.
        surface = self.surfaces[text_id] if text_id < len(self.surfaces) else ""
        for char in surface:
            if not is_word_char(char):
                charged += self._end_word(node)
                node = ROOT
            elif node != OUT:
                child = self.children[node].get(char)
                charged += child is None
                node = OUT if child is None else child
        self._moves[key] = (node, charged)
        return node, charged


class LexiconState:
    """The lexicon node of each hypothesis of a decoding batch [H]."""

    def __init__(self, lexicon: Lexicon, num_hyps: int) -> None:
        self.lexicon = lexicon
        self.nodes = [ROOT] * num_hyps

    def charges(self, scored: torch.Tensor) -> torch.Tensor:
        """Words charged [H, C] if hypothesis h appends text id c, where `scored` [H, C] (other
        entries, e.g. banned ids, are left 0)."""
        charges = torch.zeros(scored.shape, dtype=torch.float32)
        hyps, text_ids = scored.nonzero(as_tuple=True)
        if len(hyps):
            move, nodes = self.lexicon.move, self.nodes
            counts = [move(nodes[h], i)[1] for h, i in zip(hyps.tolist(), text_ids.tolist())]
            charges[hyps, text_ids] = torch.tensor(counts, dtype=torch.float32)
        return charges.to(scored.device)

    def end_charges(self) -> torch.Tensor:
        """Words charged [H] if each hypothesis ends now (a last word that is only a prefix)."""
        return torch.tensor([self.lexicon._end_word(n) for n in self.nodes], dtype=torch.float32)

    def advance(self, text_ids: Sequence[int]) -> None:
        """Append one id per hypothesis (-1: not a text id, e.g. eos or pad: no change)."""
        move = self.lexicon.move
        self.nodes = [node if i < 0 else move(node, i)[0] for node, i in zip(self.nodes, text_ids)]

    def select(self, index: torch.Tensor) -> None:
        """Keep hypotheses index [H'] (beam search's parents), in that order."""
        self.nodes = [self.nodes[i] for i in index.tolist()]
