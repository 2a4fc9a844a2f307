"""Export the text LM inside a trainer checkpoint as a plain Hugging Face causal-LM directory.

The checkpoint (a step directory, or a run / checkpoints directory followed through `latest`)
holds a MultiStreamLM over the joint vocabulary. The export keeps only the text rows
`[0, V_text)` of the input embedding and of the head (the token list's text range), so the result
is a causal LM over the text tokenizer's ids, saved with `save_pretrained` (safetensors) and
loadable with `AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)`.

Its logits on a text sequence equal the MultiStreamLM's stream-0 logits of the text ids when the
text is read as the `textlm` task (text in stream 0, pad in the S-1 other streams): a frame's
embedding is the sum of its stream embeddings, so the S-1 pad embeddings are folded into every
text row of the exported input embedding. The softmax of the export runs over the text ids only,
i.e. the probabilities are the MultiStreamLM's renormalised to the text block.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import transformers

from opuslm.bin import run
from opuslm.fileio import write_directory_atomic
from opuslm.packing import PackError, load_checkpoint_model
from opuslm.train.checkpoint import (
    TOKEN_LIST,
)

logger = logging.getLogger("opuslm.export_hf")


class ExportError(ValueError):
    """A checkpoint that cannot be exported as a text-only causal LM."""


def text_only_lm(checkpoint: str | os.PathLike) -> transformers.PreTrainedModel:
    """The checkpoint's body as a causal LM over the text ids `[0, V_text)` (see module doc)."""
    try:
        model, step_dir = load_checkpoint_model(checkpoint)
    except PackError as e:
        raise ExportError(str(e)) from None
    token_list = model.token_list
    start, num_text = token_list.ranges["text"]
    if start != 0 or num_text == 0:
        raise ExportError(
            f"{step_dir / TOKEN_LIST}: the text block must start at id 0 and be non-empty"
        )
    body = model.body
    embedding = body.get_input_embeddings()
    head = body.get_output_embeddings()
    pad = token_list.pad_id
    input_rows = embedding.weight.detach()[:num_text].clone()
    # embedding_bag skips padding_idx; any other pad row is part of every textlm frame's sum.
    if embedding.padding_idx != pad:
        input_rows += (token_list.num_streams - 1) * embedding.weight.detach()[pad]
    head_rows = head.weight.detach()[:num_text]
    head_bias = getattr(head, "bias", None)

    config = body.config.__class__.from_dict(body.config.to_dict())
    config.vocab_size = num_text
    # A tied head would repeat the folded input rows: keep the head's own rows instead.
    config.tie_word_embeddings = bool(
        getattr(config, "tie_word_embeddings", False) and torch.equal(input_rows, head_rows)
    )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= num_text:
            setattr(config, name, None)
    exported = transformers.AutoModelForCausalLM.from_config(config)
    # Same class as the body, so every name lines up; only the vocabulary rows change.
    state = body.state_dict()
    replacements = [
        (exported.get_output_embeddings().weight, head_rows),
        (exported.get_input_embeddings().weight, input_rows),  # wins where tied
    ]
    if head_bias is not None:
        replacements.append((exported.get_output_embeddings().bias, head_bias.detach()[:num_text]))
    for parameter, rows in replacements:
        for name, candidate in exported.named_parameters(remove_duplicate=False):
            if candidate is parameter:
                state[name] = rows
    try:
        exported.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(
            f"{step_dir}: the body's weights do not fit the text-only model: {e}"
        ) from None
    logger.info(
        "%s: the text rows [0, %d) of %d ids, with the pad rows of the %d other streams",
        step_dir,
        num_text,
        len(token_list),
        token_list.num_streams - 1,
    )
    return exported.eval()


def export_hf(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    text_tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the text-only LM to output_dir (atomically: a temp sibling, then a rename).

    text_tokenizer_dir: if given, its bos / eos ids go into the config (for `generate`).
    """
    model = text_only_lm(checkpoint)
    if text_tokenizer_dir is not None:
        from opuslm.tokenizers.text import load_text_tokenizer

        tokenizer = load_text_tokenizer(text_tokenizer_dir)
        model.config.bos_token_id = getattr(tokenizer, "bos_id", None)
        model.config.eos_token_id = getattr(tokenizer, "eos_id", None)
        if model.generation_config is not None:
            model.generation_config.bos_token_id = model.config.bos_token_id
            model.generation_config.eos_token_id = model.config.eos_token_id
    return write_directory_atomic(
        output_dir, lambda tmp: model.save_pretrained(str(tmp), safe_serialization=True)
    )


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="step directory, or a run directory"
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument(
        "--text_tokenizer_dir", type=Path, help="the text tokenizer: its bos / eos ids"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        output = export_hf(args.checkpoint, args.output_dir, args.text_tokenizer_dir)
    except (ExportError, OSError) as e:
        logger.error("%s", e)
        return 1
    logger.info("Hugging Face causal LM -> %s", output)
    return 0


if __name__ == "__main__":
    run(main)
