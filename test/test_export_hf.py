"""opuslm.bin.export_hf: the text LM of a trainer checkpoint as a plain Hugging Face model."""

from __future__ import annotations

import torch
import transformers

from opuslm.bin import export_hf
from opuslm.model.delay import delay
from opuslm.packing import build_model, read_weights
from opuslm.train.checkpoint import load_checkpoint_config
from opuslm.vocab import TokenList


def stream0_text_logits(checkpoint_dir, text_ids: torch.Tensor) -> torch.Tensor:
    """The MultiStreamLM's stream-0 logits of the text ids [B, L, V_text], text read as textlm."""
    token_list = TokenList.load(checkpoint_dir / "token_list.json")
    config = load_checkpoint_config(checkpoint_dir)["model"]
    model = build_model(
        config, token_list, read_weights(checkpoint_dir / "model.safetensors"), checkpoint_dir
    )
    pad = token_list.pad_id
    frames = torch.full((*text_ids.shape, token_list.num_streams), pad)
    frames[..., 0] = text_ids
    with torch.no_grad():
        hidden, _ = model.hidden_states(delay(frames, pad)[:, : text_ids.shape[1]])
        logits = model.stream0_logits(hidden)
    return logits[..., : token_list.size("text")]


def test_exported_logits_are_the_stream0_text_logits(tiny, tmp_path):
    output = tmp_path / "hf"
    status = export_hf.main(
        [
            "--checkpoint", str(tiny.root / "exp"),  # the run dir, followed through `latest`
            "--output_dir", str(output),
            "--text_tokenizer_dir", str(tiny.text_tokenizer_dir),
        ]
    )  # fmt: skip
    assert status == 0
    assert (output / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".hf.*"))  # the temp directory was renamed into place
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(output), local_files_only=True)
    token_list = TokenList.load(tiny.checkpoint_dir / "token_list.json")
    num_text = token_list.size("text")
    assert hf.get_input_embeddings().num_embeddings == num_text
    assert hf.config.bos_token_id == 1 and hf.config.eos_token_id == 2  # sentencepiece's
    generator = torch.Generator().manual_seed(0)
    text_ids = torch.randint(0, num_text, (2, 7), generator=generator)
    with torch.no_grad():
        exported = hf(input_ids=text_ids).logits
    expected = stream0_text_logits(tiny.checkpoint_dir, text_ids)
    assert exported.shape == expected.shape == (2, 7, num_text)
    torch.testing.assert_close(exported, expected, rtol=1e-5, atol=1e-5)


def test_without_folding_the_pad_rows_the_logits_differ(tiny, tmp_path):
    """The pad rows of the other streams matter: the check above would catch their omission."""
    hf = export_hf.text_only_lm(tiny.checkpoint_dir)
    token_list = TokenList.load(tiny.checkpoint_dir / "token_list.json")
    pad_row = read_weights(tiny.checkpoint_dir / "model.safetensors")[
        "body.model.embed_tokens.weight"
    ][token_list.pad_id]
    with torch.no_grad():
        hf.get_input_embeddings().weight -= (token_list.num_streams - 1) * pad_row
        text_ids = torch.tensor([[3, 4, 5, 6]])
        unfolded = hf(input_ids=text_ids).logits
    expected = stream0_text_logits(tiny.checkpoint_dir, text_ids)
    assert not torch.allclose(unfolded, expected, atol=1e-3)


def test_not_a_checkpoint_is_a_one_line_error(tmp_path, caplog):
    status = export_hf.main(["--checkpoint", str(tmp_path), "--output_dir", str(tmp_path / "o")])
    assert status == 1
    assert f"{tmp_path}: not a checkpoint directory" in caplog.text
    assert not (tmp_path / "o").exists()
