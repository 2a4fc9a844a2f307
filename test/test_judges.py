"""Judges for synthesised speech: pocketsphinx on flite speech, HF models from tiny random dirs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from opuslm.eval.judges import (
    MOSPredictor,
    PocketsphinxJudge,
    SpeakerEmbedder,
    WhisperJudge,
    cosine_similarity,
    load_judge,
    resample,
)
from opuslm.eval.normalizer import normalize_english

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "please call me when you get home tonight",
    "the weather is nice and sunny today",
    "we will meet at the station at noon",
]


def flite_wav(path: Path, text: str, voice: str = "slt") -> Path:
    """Speech for `text` from Debian's flite (16 kHz mono wav)."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def pocketsphinx_judge() -> PocketsphinxJudge:
    return PocketsphinxJudge()


def test_pocketsphinx_transcribes_flite_speech(tmp_path, pocketsphinx_judge):
    wavs = []
    for i, text in enumerate(SENTENCES):
        wav, sr = sf.read(flite_wav(tmp_path / f"{i}.wav", text), dtype="float32")
        wavs.append(wav)
    hyps = pocketsphinx_judge.transcribe_batch(wavs, sr)
    assert jiwer.wer(SENTENCES, [normalize_english(h) for h in hyps]) < 0.5


def test_pocketsphinx_resamples_other_rates(tmp_path, pocketsphinx_judge):
    wav, sr = sf.read(flite_wav(tmp_path / "x.wav", SENTENCES[0]), dtype="float32")
    at_16k = pocketsphinx_judge.transcribe(wav, sr)
    at_24k = pocketsphinx_judge.transcribe(resample(wav, sr, 24000), 24000)
    assert jiwer.wer(at_16k, at_24k) < 0.3


def test_pocketsphinx_silence_gives_no_real_words(pocketsphinx_judge):
    # pocketsphinx may hallucinate a filler word on silence, never the sentence.
    hyp = pocketsphinx_judge.transcribe(np.zeros(16000, np.float32), 16000)
    assert len(hyp.split()) <= 2


def test_resample_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((10, 2), np.float32), 16000, 8000)


def test_resample_changes_length_by_rate():
    assert resample(np.zeros(16000, np.float32), 16000, 8000).shape == (8000,)


def test_load_judge_errors():
    with pytest.raises(ValueError, match="--judge_dir"):
        load_judge("whisper")
    with pytest.raises(ValueError, match="unknown judge 'kaldi'"):
        load_judge("kaldi")


def test_cosine_similarity_golden():
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(2**-0.5)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([-2.0, 0.0])) == pytest.approx(-1.0)
    assert cosine_similarity(np.zeros(2), np.array([1.0, 0.0])) == 0.0


# --------------------------------------------------------------------------- tiny random HF dirs
TINY_ENCODER = dict(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    conv_dim=(8, 8),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def save_audio_model(model: transformers.PreTrainedModel, path: Path) -> Path:
    model.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return path


def tiny_whisper_dir(path: Path) -> Path:
    """A random Whisper model with a byte-level tokenizer built offline (no merges)."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    tokenizer = transformers.WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|startoftranscript|>", "<|notimestamps|>"]}
    )
    end_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=32,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=end_id,
        bos_token_id=end_id,
        eos_token_id=end_id,
    )
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(path)
    feature_extractor = transformers.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    transformers.WhisperProcessor(feature_extractor, tokenizer).save_pretrained(path)
    return path


def noise(num_samples: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(num_samples) * 0.1).astype(np.float32)


def test_whisper_judge_from_tiny_random_dir(tmp_path):
    judge = WhisperJudge(tiny_whisper_dir(tmp_path / "whisper"), batch_size=2, max_new_tokens=6)
    assert judge.max_new_tokens == 6
    wavs = [noise(8000, 0), noise(3000, 1), noise(5000, 2)]
    transcripts = judge.transcribe_batch(wavs, 8000)
    assert len(transcripts) == 3 and all(isinstance(t, str) for t in transcripts)
    # Whisper pads to 30 s, so batching must not change a transcript.
    assert judge.transcribe(wavs[2], 8000) == transcripts[2]


def test_whisper_judge_caps_new_tokens_at_decoder_positions(tmp_path):
    judge = WhisperJudge(tiny_whisper_dir(tmp_path / "whisper"), max_new_tokens=1000)
    assert judge.max_new_tokens == 32 - 4


def test_missing_model_dir_names_it(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nothing")):
        SpeakerEmbedder(tmp_path / "nothing")


@pytest.mark.parametrize("xvector", [True, False])
def test_speaker_embedder(tmp_path, xvector):
    torch.manual_seed(0)
    if xvector:
        config = transformers.WavLMConfig(
            **TINY_ENCODER,
            tdnn_dim=(8, 8, 16),
            tdnn_kernel=(5, 3, 1),
            tdnn_dilation=(1, 2, 1),
            xvector_output_dim=8,
        )
        model, dim = transformers.WavLMForXVector(config), 8
    else:
        model, dim = transformers.WavLMModel(transformers.WavLMConfig(**TINY_ENCODER)), 16
    embedder = SpeakerEmbedder(save_audio_model(model, tmp_path / "spk"))
    assert embedder.has_xvector_head == xvector
    wav = noise(8000, 0)
    embedding = embedder.embed(wav, 16000)
    assert embedding.shape == (dim,) and embedding.dtype == np.float32
    # The feature extractor normalises loudness, so a quieter copy is the same speaker.
    assert embedder.similarity(wav, 0.5 * wav, 16000) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= embedder.similarity(wav, noise(9000, 1), 16000) <= 1.0


def test_mos_predictor_needs_one_output(tmp_path):
    def classifier(num_labels: int) -> transformers.PreTrainedModel:
        torch.manual_seed(0)
        config = transformers.Wav2Vec2Config(
            **TINY_ENCODER, num_labels=num_labels, classifier_proj_size=8
        )
        return transformers.Wav2Vec2ForSequenceClassification(config)

    predictor = MOSPredictor(save_audio_model(classifier(1), tmp_path / "mos"))
    score = predictor.predict(noise(8000, 0), 16000)
    assert isinstance(score, float) and np.isfinite(score)
    assert predictor.predict(noise(8000, 0), 16000) == score
    with pytest.raises(ValueError, match="3 outputs"):
        MOSPredictor(save_audio_model(classifier(3), tmp_path / "mos3"))
