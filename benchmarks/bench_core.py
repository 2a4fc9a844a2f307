"""Multi-stream LM core vs its plain causal-LM body: decoding speed and training throughput.

Both sides use the same Llama body (the joint vocabulary's embedding and head), CPU float32:

- decoding: seconds per generated frame of the 9-stream delayed decoder (prompt forward and the
  S-1 flush rows included) / seconds per token of transformers `generate()` with its KV cache,
  same prompt length and number of new positions, greedy. Target <= 1.15.
- training: positions per second of MultiStreamLM loss + backward / the body's own causal-LM loss
  + backward on the same number of positions. Target >= 0.85. Two batches: every row a speech
  target (all 9 streams predicted: the most head work), and ASR (speech condition, text target).

Sides are measured interleaved, best of `--repeats`, to damp the noise of a shared machine.
Usage: python benchmarks/bench_core.py [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import transformers

from opuslm.model.generate import GenerationConfig, generate
from opuslm.model.lm import MultiStreamLM
from opuslm.tasks import Example, build_sequence
from opuslm.vocab import TokenList


def build_model(seed: int = 0) -> MultiStreamLM:
    token_list = TokenList.build(
        [f"t{i}" for i in range(1000)], num_semantic=256, num_codebooks=8, codebook_size=256
    )
    config = transformers.LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
    )
    torch.manual_seed(seed)
    return MultiStreamLM.from_base(config, token_list)


def random_speech(rng: np.random.Generator, num_frames: int, token_list: TokenList) -> np.ndarray:
    """Raw dump rows [T, S]: semantic units and codec codes."""
    units = rng.integers(0, token_list.size("semantic"), (num_frames, 1))
    codes = rng.integers(0, token_list.codebook_size, (num_frames, token_list.num_codebooks))
    return np.concatenate([units, codes], 1)


def best_of(functions: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Run each function once to warm up, then `repeats` interleaved rounds; best seconds each."""
    for fn in functions.values():
        fn()
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_decoding(model: MultiStreamLM, prompt_frames: int, new_frames: int, repeats: int):
    token_list = model.token_list
    rng = np.random.default_rng(0)
    prompt = torch.from_numpy(
        token_list.encode_frames(random_speech(rng, prompt_frames, token_list))
    )
    config = GenerationConfig(target="speech", min_frames=new_frames, max_frames=new_frames)
    input_ids = torch.from_numpy(rng.integers(0, 1000, (1, prompt_frames)))

    def ours() -> None:
        frames = generate(model, [prompt], config)[0]
        assert len(frames) == new_frames

    def baseline() -> None:
        with torch.no_grad():
            out = model.body.generate(
                input_ids,
                max_new_tokens=new_frames,
                min_new_tokens=new_frames,
                do_sample=False,
                use_cache=True,
                pad_token_id=token_list.pad_id,
            )
        assert out.shape[1] == prompt_frames + new_frames

    best = best_of({"ours": ours, "baseline": baseline}, repeats)
    return best["ours"] / new_frames, best["baseline"] / new_frames


def training_batch(
    model: MultiStreamLM, task: str, batch: int, num_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T, S] frames, [B, T] loss mask, [B] lengths of `batch` same-length examples."""
    token_list = model.token_list
    rng = np.random.default_rng(1)
    if task == "speech":
        frames = [token_list.encode_frames(random_speech(rng, num_frames, token_list))]
        masks = [np.ones(num_frames, dtype=bool)]
        frames, masks = frames * batch, masks * batch
    else:
        text_len = num_frames // 5
        speech_len = num_frames - text_len - (token_list.num_streams - 1) - 5
        frames, masks = [], []
        for _ in range(batch):
            example = Example(
                "utt",
                text=rng.integers(0, 1000, text_len),
                speech=random_speech(rng, speech_len, token_list),
            )
            sequence = build_sequence("asr", example, token_list)
            frames.append(sequence.frames)
            masks.append(sequence.loss_mask)
    frames = torch.from_numpy(np.stack(frames))
    masks = torch.from_numpy(np.stack(masks))
    return frames, masks, torch.full((batch,), frames.shape[1])


def bench_training(model: MultiStreamLM, task: str, batch: int, num_frames: int, repeats: int):
    frames, loss_mask, lengths = training_batch(model, task, batch, num_frames)
    positions = frames.shape[1] + model.num_streams - 2  # rows the body sees per example
    input_ids = torch.randint(0, 1000, (batch, positions))
    model.train()

    def ours() -> None:
        model.zero_grad(set_to_none=True)
        model(frames, loss_mask, lengths).loss.backward()

    def baseline() -> None:
        model.zero_grad(set_to_none=True)
        model.body(input_ids=input_ids, labels=input_ids).loss.backward()

    best = best_of({"ours": ours, "baseline": baseline}, repeats)
    model.eval()
    return batch * positions / best["ours"], batch * positions / best["baseline"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt_frames", type=int, default=64)
    parser.add_argument("--new_frames", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--train_frames", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model().eval()
    print(f"torch threads {args.threads}, {sum(p.numel() for p in model.parameters())} params")
    print("| benchmark | ours | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    ours, baseline = bench_decoding(model, args.prompt_frames, args.new_frames, args.repeats)
    print(
        f"| decoding, {args.prompt_frames}-frame prompt + {args.new_frames} frames (s/frame vs "
        f"HF generate s/token) | {ours * 1e3:.2f} ms | {baseline * 1e3:.2f} ms | "
        f"{ours / baseline:.3f} | <= 1.15 |"
    )
    for task in ("speech", "asr"):
        ours, baseline = bench_training(model, task, args.batch, args.train_frames, args.repeats)
        print(
            f"| training step, {task} targets, {args.batch} x {args.train_frames} frames "
            f"(positions/s vs HF causal-LM loss) | {ours:.0f} | {baseline:.0f} | "
            f"{ours / baseline:.3f} | >= 0.85 |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
