"""Score text skills: perplexity on held-out text and MMLU-style multiple-choice accuracy."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from opuslm.bin import collection_paused, run
from opuslm.dump import write_text_atomic
from opuslm.eval.text_scoring import (
    HFTokenScorer,
    OpusLMTokenScorer,
    multiple_choice,
    perplexity,
    read_lines,
    read_questions,
)

log = logging.getLogger("opuslm.score_text")


def load_scorer(args: argparse.Namespace):
    """(scorer, text tokenizer, model path, tokenizer path): a packed OpusLM or an HF base LM."""
    from opuslm.tokenizers.text import load_text_tokenizer

    if args.model_dir is not None:
        with collection_paused():
            from opuslm.packing import TEXT_TOKENIZER, load_packed
        packed = load_packed(args.model_dir, args.device)
        tokenizer_dir = args.model_dir / TEXT_TOKENIZER
        return OpusLMTokenScorer(packed.model), packed.text_tokenizer, args.model_dir, tokenizer_dir
    tokenizer_dir = args.text_tokenizer_dir or args.hf_model_dir
    return (
        HFTokenScorer.from_pretrained(args.hf_model_dir, args.device),
        load_text_tokenizer(tokenizer_dir),
        args.hf_model_dir,
        tokenizer_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model_dir", type=Path, help="packed OpusLM directory (textlm scoring)")
    model.add_argument("--hf_model_dir", type=Path, help="a local Hugging Face causal LM")
    parser.add_argument(
        "--text_tokenizer_dir",
        type=Path,
        help="with --hf_model_dir: its tokenizer if not in the model directory",
    )
    parser.add_argument("--text", type=Path, help="held-out text, one passage per line")
    parser.add_argument(
        "--text_format",
        choices=("plain", "kaldi"),
        default="plain",
        help="kaldi: each line starts with an utterance id, which is not scored",
    )
    parser.add_argument("--test_set", help="name of the held-out set, for RESULTS.md tables")
    parser.add_argument(
        "--mmlu",
        type=Path,
        help='JSON lines {"question": .., "choices": [..], "answer": index or letter}',
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.text is None and args.mmlu is None:
        parser.error("give --text, --mmlu or both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        scorer, tokenizer, model_path, tokenizer_path = load_scorer(args)
        score: dict = {"task": "text", "model": str(model_path)}
        if args.test_set:
            score["test_set"] = args.test_set
        if args.text is not None:
            lines = read_lines(args.text)
            if args.text_format == "kaldi":
                lines = [line.split(maxsplit=1)[1] if " " in line.strip() else "" for line in lines]
            result = perplexity(scorer, tokenizer, lines, args.batch_size)
            score.update(
                # Each line's tokens and eos are scored, after bos; the checksum of the token
                # strings tells whether two perplexities count the same units.
                unit="text tokenizer token",
                tokenizer=str(tokenizer_path),
                tokenizer_md5=hashlib.md5("\n".join(tokenizer.tokens()).encode()).hexdigest(),
                ppl=result.ppl,
                nll_per_token=result.nll_per_token,
                num_tokens=result.num_tokens,
                num_lines=result.num_lines,
            )
        if args.mmlu is not None:
            questions = read_questions(args.mmlu)
            choice = multiple_choice(scorer, tokenizer, questions, args.batch_size)
            score.update(mmlu_accuracy=100.0 * choice.accuracy, mmlu_num_questions=len(questions))
    except (ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output_dir / "score.json", json.dumps(score, indent=1) + "\n")
    log.info("%s", json.dumps(score))
    return 0


if __name__ == "__main__":
    run(main)
