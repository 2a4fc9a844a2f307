"""Build the joint vocabulary token_list.json from the text, semantic and acoustic tokenizers."""

from __future__ import annotations

import argparse
import logging

from opuslm.bin import run
from opuslm.vocab import DEFAULT_SPECIAL_SLOTS, DEFAULT_TASKS, TokenList

log = logging.getLogger("opuslm.make_token_list")


def base_model_rows(base_model_dir: str) -> int:
    """Embedding rows of a local Hugging Face LM (its config's `vocab_size`), weights not loaded."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_model_dir, local_files_only=True)
    config = getattr(config, "text_config", None) or config
    return int(config.vocab_size)


def build_token_list(args: argparse.Namespace) -> TokenList:
    from opuslm.tokenizers.acoustic import load_codec
    from opuslm.tokenizers.semantic import load_semantic_tokenizer
    from opuslm.tokenizers.text import load_text_tokenizer

    text = load_text_tokenizer(args.text_tokenizer_dir)
    rows = base_model_rows(args.base_model_dir) if args.base_model_dir else None
    semantic = load_semantic_tokenizer(args.semantic_dir)
    codec = load_codec(args.codec_dir)
    return TokenList.build(
        text_tokens=text.tokens(),
        num_text_rows=rows,
        num_semantic=semantic.num_clusters,
        num_codebooks=codec.num_codebooks,
        codebook_size=codec.codebook_size,
        tasks=args.tasks,
        special_slots=args.special_slots,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text_tokenizer_dir", required=True)
    parser.add_argument(
        "--base_model_dir",
        help="local Hugging Face model whose embedding rows fix the text block size "
        "(default: the tokenizer's size)",
    )
    parser.add_argument("--semantic_dir", required=True)
    parser.add_argument("--codec_dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--special_slots", type=int, default=DEFAULT_SPECIAL_SLOTS)
    parser.add_argument("--output", required=True, help="path of token_list.json to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token_list = build_token_list(args)
    token_list.save(args.output)
    sizes = ", ".join(f"{m} {token_list.size(m)}" for m in token_list.ranges)
    log.info(
        "wrote %s: %d tokens (%s), %d streams",
        args.output,
        len(token_list),
        sizes,
        token_list.num_streams,
    )
    return 0


if __name__ == "__main__":
    run(main)
