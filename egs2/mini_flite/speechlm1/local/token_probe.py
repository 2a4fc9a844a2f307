#!/usr/bin/env python3
"""Cheap proxy for the speech tokens' content (issue 8): how well a small bidirectional GRU with a
CTC head reads characters from the token dumps, in a fixed time budget, before any long LM run.

    local/token_probe.py [--streams all|semantic|codec] [--minutes 3 | --steps 400]
    local/token_probe.py --semantic_dir exp/probe/tok_x --steps 400   # a candidate tokenizer
    local/token_probe.py --steps 700 --bpe_size 256 [--normalizer basic]  # output units

Prints held-out CER (greedy CTC) on the test set. Transcripts come from data/<set>/text, lower
cased (or normalised with --normalizer), so the probe does not depend on the text tokenizer; the
CTC targets are their characters, or with --bpe_size the pieces of a BPE model trained here on the
same normalised transcripts of data/train and data/text_train (what stage 3 would read). With
--semantic_dir the probe reads units of that semantic tokenizer (opuslm.bin.train_semantic output)
computed here from dump/raw/<set>/wav.scp, so candidate features / K can be compared before
re-running tokenisation and training. --steps fixes the number of updates, so runs compare fairly
on a shared machine. WER and CER are scored on the lower-cased (normalised) transcripts.
"""

from __future__ import annotations

import argparse
import time

import jiwer
import numpy as np
import torch
from torch import nn

from opuslm.audio import AudioReader
from opuslm.data.ark import ScpTable
from opuslm.eval.normalizer import NORMALIZERS, get_normalizer
from opuslm.tokenizers.semantic import load_semantic_tokenizer
from opuslm.tokenizers.text import train_sentencepiece


def read_texts(data: str, name: str) -> dict[str, str]:
    return dict(line.rstrip("\n").split(" ", 1) for line in open(f"{data}/{name}/text"))


def load(dumps: str, data: str, name: str, streams: slice):
    speech = ScpTable(f"{dumps}/{name}/speech.scp")
    texts = read_texts(data, name)
    items = [(np.asarray(speech[k])[:, streams], texts[k].lower()) for k in speech]
    return items


def load_units(semantic_dir: str, audio: str, data: str, name: str, batch: int = 32):
    """(units [T, 1], text) of every utterance of audio/<name>/wav.scp, units from the tokenizer."""
    tokenizer = load_semantic_tokenizer(semantic_dir)
    reader = AudioReader(f"{audio}/{name}", sample_rate=tokenizer.sample_rate)
    texts = read_texts(data, name)
    uttids = reader.uttids()
    items = []
    for start in range(0, len(uttids), batch):
        chunk = uttids[start : start + batch]
        units = tokenizer.encode_batch([reader.read(u) for u in chunk])
        items += [(np.asarray(x)[:, None], texts[u].lower()) for u, x in zip(chunk, units)]
    return items


class Probe(nn.Module):
    def __init__(
        self,
        vocab_per_stream: int,
        num_streams: int,
        num_units: int,
        hidden: int = 192,
        upsample: int = 1,
    ):
        super().__init__()
        self.upsample = upsample
        self.offsets = torch.arange(num_streams) * vocab_per_stream
        self.embed = nn.EmbeddingBag(vocab_per_stream * num_streams, hidden, mode="sum")
        self.rnn = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, upsample * (num_units + 1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # [B, T, S] -> [B, T * U, C + 1]
        b, t, s = rows.shape
        x = self.embed((rows + self.offsets).reshape(-1, s)).view(b, t, -1)
        return self.out(self.rnn(x)[0]).view(b, t * self.upsample, -1).log_softmax(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", choices=["all", "semantic", "codec"], default="all")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=0, help="> 0: stop after this many updates")
    parser.add_argument("--semantic_dir", help="probe this semantic tokenizer's units instead")
    parser.add_argument(
        "--audio", default="dump/raw", help="<audio>/<set>/wav.scp (--semantic_dir)"
    )
    parser.add_argument("--dumps", default="dump/tokens")
    parser.add_argument("--data", default="data")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--normalizer", choices=NORMALIZERS, help="normalise transcripts (default: lower case)"
    )
    parser.add_argument(
        "--bpe_size", type=int, default=0, help="> 0: CTC targets are BPE pieces, not characters"
    )
    parser.add_argument(
        "--upsample",
        type=int,
        default=1,
        help="CTC outputs per frame (the model's model.ctc_upsample): U > 1 gives CTC U times "
        "the frames to place the characters and blanks in",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    streams = {"all": slice(None), "semantic": slice(0, 1), "codec": slice(1, None)}[args.streams]
    if args.semantic_dir:
        train = load_units(args.semantic_dir, args.audio, args.data, "train")
        test = load_units(args.semantic_dir, args.audio, args.data, "test")
    else:
        train = load(args.dumps, args.data, "train", streams)
        test = load(args.dumps, args.data, "test", streams)
    # load() lower-cases; a normaliser goes further (and is idempotent on its own output).
    normalize = get_normalizer(args.normalizer) if args.normalizer else str.lower
    train = [(r, normalize(t)) for r, t in train]
    test = [(r, normalize(t)) for r, t in test]
    split = list
    if args.bpe_size:
        extra = [normalize(t) for t in read_texts(args.data, "text_train").values()]
        corpus = [t for _, t in train] + extra
        split = train_sentencepiece(corpus, args.bpe_size).processor.encode_as_pieces
    # Output units: characters, or BPE pieces ("\u2581" marks a word start); each training
    # transcript is split once, here.
    train = [(r, split(t)) for r, t in train]
    units = sorted({u for _, t in train for u in t})
    index = {u: i for i, u in enumerate(units)}
    vocab = int(max(r.max() for r, _ in train)) + 1
    model = Probe(vocab, train[0][0].shape[1], len(units), upsample=args.upsample)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    ctc = nn.CTCLoss(blank=len(units), zero_infinity=True)
    rng = np.random.default_rng(0)
    started, step = time.time(), 0
    while (step < args.steps) if args.steps else (time.time() - started < args.minutes * 60):
        batch = [train[i] for i in rng.choice(len(train), args.batch, replace=False)]
        rows = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r, dtype=torch.long) for r, _ in batch], True
        )
        targets = [torch.tensor([index[u] for u in t]) for _, t in batch]
        log_probs = model(rows).transpose(0, 1)
        loss = ctc(
            log_probs,
            torch.cat(targets),
            torch.tensor([len(r) * args.upsample for r, _ in batch]),
            torch.tensor([len(t) for t in targets]),
        )
        optim.zero_grad()
        loss.backward()
        optim.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    hyps, refs = [], []
    with torch.no_grad():
        for rows, text in test:
            best = model(torch.as_tensor(rows, dtype=torch.long)[None])[0].argmax(-1).tolist()
            out, last = [], None
            for k in best:
                if k != last and k != len(units):
                    out.append(units[k])
                last = k
            hyp = "".join(out)
            hyps.append(hyp.replace("\u2581", " ").strip() if args.bpe_size else hyp)
            refs.append(text)
    print(
        f"streams={args.semantic_dir or args.streams} upsample={args.upsample} steps={step} "
        f"({time.time() - started:.0f} s)"
        f" test CER {100 * jiwer.cer(refs, hyps):.1f}% "
        f"WER {100 * jiwer.wer(refs, hyps):.1f}%"
    )
    for r, h in list(zip(refs, hyps))[:3]:
        print(" REF", r, "\n HYP", h)


if __name__ == "__main__":
    main()
