"""CTC prefix scoring for joint CTC / LM decoding (Watanabe et al. 2017, as ESPnet decodes).

For a hypothesis g (a label prefix) and frame posteriors y_t over C labels + blank, the CTC
prefix probability psi(g) is the probability that the collapsed CTC output *starts with* g. One
decoding step scores each candidate c by psi(g + c) (and eos by the probability of g as the whole
output); a decoder adds psi(g + c) - psi(g) to its own log-probabilities, which rules out
transcripts the audio does not support (loops, runaway length).

Per hypothesis the state is, over the T frames (written in probability space here, kept in log
space in the code),

    r^n_t(g): frames 0..t collapse to g, and frame t is g's last label,
    r^b_t(g): frames 0..t collapse to g, and frame t is blank,

and psi(g). With phi_t = r^n_t(g) + r^b_t(g) (only r^b_t(g) when c repeats g's last label: two
equal labels are only told apart through a blank),

    psi(g + c) = [g empty] y_0(c) + sum_{t >= 1} phi_{t-1} y_t(c),

which needs no recursion: `score` is one vectorised pass over [T, B, K]. Only the chosen
candidate's r^n, r^b are built, by `advance`, with the recursion

    r^n_t(h) = (r^n_{t-1}(h) + phi_{t-1}) y_t(c),
    r^b_t(h) = (r^n_{t-1}(h) + r^b_{t-1}(h)) y_t(blank).

Frames at or past an example's length are made "certain blank" (blank log-prob 0, labels -inf),
so they emit nothing and carry the last real frame's totals to frame T - 1.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


class CTCPrefixScorer:
    """Batched CTC prefix scores of one hypothesis per example.

    log_probs: [B, T, C + 1] frame log-posteriors, blank = the last class.
    lengths: [B] valid frames per example; frames beyond are ignored.
    Hypotheses start empty; `score` candidates, then `advance` with the chosen labels.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        if log_probs.dim() != 3 or log_probs.shape[-1] < 2:
            raise ValueError(
                f"log_probs must be [B, T, C + 1] with C >= 1, got {tuple(log_probs.shape)}"
            )
        batch, num_frames, classes = log_probs.shape
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must be [{batch}], got {tuple(lengths.shape)}")
        if bool(((lengths < 0) | (lengths > num_frames)).any()):
            raise ValueError(f"lengths must be in [0, {num_frames}], got {lengths.tolist()}")
        device = log_probs.device
        self.blank = classes - 1
        if num_frames == 0:  # one padded frame: every sum below then has a first term
            log_probs = log_probs.new_zeros(batch, 1, classes)
            num_frames = 1
        padded = torch.arange(num_frames, device=device)[None, :] >= lengths.to(device)[:, None]
        certain_blank = torch.full((classes,), NEG_INF, device=device, dtype=log_probs.dtype)
        certain_blank[self.blank] = 0.0
        log_probs = torch.where(padded[..., None], certain_blank, log_probs)
        self.labels = log_probs[..., : self.blank].transpose(0, 1)  # [T, B, C]
        self.blanks = log_probs[..., self.blank].transpose(0, 1)  # [T, B]
        # The empty hypothesis: nothing emitted, every frame so far blank.
        self.r_label = torch.full_like(self.blanks, NEG_INF)  # r^n [T, B]
        self.r_blank = self.blanks.cumsum(0)  # r^b [T, B]
        self.prefix_score = torch.zeros(batch, device=device, dtype=log_probs.dtype)  # psi(g)
        self.last = torch.full((batch,), -1, dtype=torch.long, device=device)  # -1: g empty
        self._scored: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        """C: the labels, blank excluded."""
        return self.blank

    def score(self, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate labels [B, K] in [0, C) -> (log psi(g + c) [B, K], log P(g is the whole
        output) [B]): the scores of extending each hypothesis by c, and of ending it (eos)."""
        if candidates.dim() != 2 or candidates.shape[0] != len(self.last):
            raise ValueError(
                f"candidates must be [{len(self.last)}, K], got {tuple(candidates.shape)}"
            )
        if bool(((candidates < 0) | (candidates >= self.num_classes)).any()):
            raise ValueError(f"candidate labels must be in [0, {self.num_classes})")
        num_frames = len(self.blanks)
        label_scores = self._candidate_scores(candidates)  # y_t(c) [T, B, K]
        phi = self._phi(candidates)  # [T, B, K]
        first = torch.where(self.last[:, None] < 0, label_scores[0], NEG_INF)  # [B, K]
        later = phi[: num_frames - 1] + label_scores[1:]  # [T-1, B, K]
        prefix = torch.logsumexp(torch.cat([first[None], later]), dim=0)
        self._scored = (candidates, prefix)
        whole = torch.logaddexp(self.r_label[-1], self.r_blank[-1])
        return prefix, whole

    def advance(self, chosen: torch.Tensor) -> None:
        """Extend each hypothesis by its chosen label [B] (one of the last scored candidates);
        -1 keeps a hypothesis as it is (an ended example, or eos)."""
        if self._scored is None:
            raise RuntimeError("advance needs a score() of the candidates first")
        candidates, prefix = self._scored
        self._scored = None
        extend = chosen >= 0
        match = candidates == chosen[:, None]  # [B, K]
        if bool((extend & ~match.any(1)).any()):
            raise ValueError(
                f"chosen labels {chosen.tolist()} are not all among the scored candidates"
            )
        if not bool(extend.any()):
            return
        label = chosen.clamp(min=0)
        column = match.int().argmax(1)  # [B]
        label_scores = self._candidate_scores(label[:, None])[..., 0]  # [T, B]
        phi = self._phi(label[:, None])[..., 0]  # [T, B]
        r_label = torch.full_like(self.r_label, NEG_INF)
        r_blank = torch.full_like(self.r_blank, NEG_INF)
        r_label[0] = torch.where(self.last < 0, label_scores[0], NEG_INF)
        for t in range(1, len(self.blanks)):
            r_label[t] = torch.logaddexp(r_label[t - 1], phi[t - 1]) + label_scores[t]
            r_blank[t] = torch.logaddexp(r_label[t - 1], r_blank[t - 1]) + self.blanks[t]
        self.r_label = torch.where(extend, r_label, self.r_label)
        self.r_blank = torch.where(extend, r_blank, self.r_blank)
        chosen_prefix = prefix.gather(1, column[:, None])[:, 0]
        self.prefix_score = torch.where(extend, chosen_prefix, self.prefix_score)
        self.last = torch.where(extend, label, self.last)

    def select(self, index: torch.Tensor) -> None:
        """Keep hypotheses `index` [B] (each row becomes a copy of row index[i]; beam search
        reorders its hypotheses with it), the last scored candidates included."""
        self.labels, self.blanks = self.labels[:, index], self.blanks[:, index]
        self.r_label, self.r_blank = self.r_label[:, index], self.r_blank[:, index]
        self.prefix_score, self.last = self.prefix_score[index], self.last[index]
        if self._scored is not None:
            self._scored = (self._scored[0][index], self._scored[1][index])

    def _candidate_scores(self, candidates: torch.Tensor) -> torch.Tensor:
        """y_t(c) of candidates [B, K] -> [T, B, K]."""
        index = candidates[None].expand(len(self.labels), -1, -1)
        return self.labels.gather(2, index)

    def _phi(self, candidates: torch.Tensor) -> torch.Tensor:
        """phi_t(g, c) [T, B, K]: paths of g through frame t that c may follow at frame t + 1."""
        total = torch.logaddexp(self.r_label, self.r_blank)  # [T, B]
        repeat = candidates == self.last[:, None]  # [B, K]
        return torch.where(repeat[None], self.r_blank[..., None], total[..., None])
