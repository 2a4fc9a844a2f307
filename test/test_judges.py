"""Judges of synthesised speech (pocketsphinx on flite speech, HF models from tiny random
dirs) and score_tts end to end."""

from __future__ import annotations

import json
import pickle
import subprocess
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from opuslm.audio import AudioReader
from opuslm.bin import score_tts
from opuslm.eval.asr_scoring import ScoringError, read_kaldi_text
from opuslm.eval.hf_judges import MOSPredictor, SpeakerEmbedder, WhisperJudge, cosine_similarity
from opuslm.eval.judges import AsrJudge, PocketsphinxJudge, load_judge, resample
from opuslm.eval.normalizer import normalize_english
from opuslm.eval.tts_scoring import group_samples

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
    # Total stride 320 (50 frames/s) like the real models: attention over every 10th sample
    # would make WavLM's relative-position attention dominate the test time.
    conv_dim=(8, 8, 8),
    conv_stride=(10, 8, 4),
    conv_kernel=(10, 8, 4),
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


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    return tiny_whisper_dir(tmp_path_factory.mktemp("whisper"))


def test_whisper_judge_from_tiny_random_dir(whisper_dir):
    judge = WhisperJudge(whisper_dir, batch_size=2, max_new_tokens=6)
    assert judge.max_new_tokens == 6
    wavs = [noise(8000, 0), noise(3000, 1), noise(5000, 2)]
    transcripts = judge.transcribe_batch(wavs, 8000)
    assert len(transcripts) == 3 and all(isinstance(t, str) for t in transcripts)
    # Whisper pads to 30 s, so batching (here 2 + 1) must not change a transcript.
    assert judge.transcribe(wavs[0], 8000) == transcripts[0]


def test_judges_pickle_by_rebuilding(whisper_dir):
    # transcribe_all's workers get judges by pickle: each rebuilds its model from its options.
    whisper = WhisperJudge(whisper_dir, batch_size=2, max_new_tokens=6)
    copy = pickle.loads(pickle.dumps(whisper))
    assert copy is not whisper and (copy.batch_size, copy.max_new_tokens) == (2, 6)
    wavs = [noise(8000, 0), noise(3000, 1)]
    assert copy.transcribe_batch(wavs, 8000) == whisper.transcribe_batch(wavs, 8000)
    pocketsphinx = pickle.loads(pickle.dumps(PocketsphinxJudge(lw=7.0)))
    assert pocketsphinx.decoder_options == {"lw": 7.0} and pocketsphinx.decoder.config["lw"] == 7.0


def test_whisper_judge_caps_new_tokens_at_decoder_positions(whisper_dir):
    judge = WhisperJudge(whisper_dir, max_new_tokens=1000)
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


# --------------------------------------------------------------------------- score_tts
@pytest.fixture(scope="module")
def tts_data(tmp_path_factory) -> dict[str, Path]:
    """3 flite reference utterances, their text, and a silent 'synthesis' of each."""
    root = tmp_path_factory.mktemp("tts")
    texts = SENTENCES[:3]
    ref_lines, silence_lines = [], []
    for i, text in enumerate(texts):
        ref_lines.append(f"utt{i} {flite_wav(root / f'ref{i}.wav', text)}")
        sf.write(root / f"silence{i}.wav", np.zeros(16000, np.float32), 16000)
        silence_lines.append(f"utt{i} {root / f'silence{i}.wav'}")
    files = {
        "text": [f"utt{i} {t}" for i, t in enumerate(texts)],
        "wav.scp": ref_lines,
        "silence.scp": silence_lines,
    }
    for name, lines in files.items():
        (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return {name: root / name for name in files} | {"root": root}


class LookupJudge(AsrJudge):
    """A stand-in judge that knows the transcript of each reference waveform, "" for the rest.

    It keeps the tests of sample choice and CLI wiring fast and exact; pocketsphinx itself is
    exercised end to end by the two tests before.
    """

    name = "lookup"

    def __init__(self, data: dict[str, Path]) -> None:
        reader = AudioReader(data["wav.scp"])
        texts = read_kaldi_text(data["text"])
        self.transcripts = {self.fingerprint(reader.read(u)): texts[u] for u in reader.uttids()}

    @staticmethod
    def fingerprint(wav: np.ndarray) -> bytes:
        return np.round(wav * 32767).astype(np.int16).tobytes()

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        return self.transcripts.get(self.fingerprint(wav), "")


@pytest.fixture()
def lookup_judge(monkeypatch, tts_data) -> None:
    judge = LookupJudge(tts_data)
    monkeypatch.setattr(score_tts, "load_judge", lambda *args: judge)


def run_score_tts(data: dict[str, Path], syn_scp: Path, out: Path, *options: str) -> dict:
    args = ["--ref_text", str(data["text"]), "--ref_wav_scp", str(data["wav.scp"])]
    args += ["--syn_wav_scp", str(syn_scp), "--output_dir", str(out), *options]
    assert score_tts.main(args) == 0
    return json.loads((out / "score.json").read_text())


def test_score_tts_synthesis_equal_to_reference(tts_data, tmp_path):
    score = run_score_tts(tts_data, tts_data["wav.scp"], tmp_path / "same")
    assert score["task"] == "tts" and score["judge"] == "pocketsphinx"
    assert score["num_utts"] == 3 and score["num_missing_syn"] == 0
    assert score["wer"] == score["ref_wer"] < 50
    assert score["duration_ratio"] == 1.0
    assert score["wer_ratio"] in (1.0, None)  # None only if the judge made no error at all
    assert "best_of_n" not in score and "speaker_similarity" not in score and "mos" not in score
    judge_text = (tmp_path / "same" / "judge_text").read_text()
    assert judge_text == (tmp_path / "same" / "judge_ref_text").read_text()
    assert judge_text.startswith("utt0 ") and len(judge_text.splitlines()) == 3
    assert (tmp_path / "same" / "result.txt").read_text().startswith("id: (utt0)\n")


def test_score_tts_silence_is_all_errors(tts_data, tmp_path):
    score = run_score_tts(tts_data, tts_data["silence.scp"], tmp_path / "silence")
    assert score["wer"] >= 100.0 and score["ref_wer"] < 50
    assert score["duration_ratio"] < 0.6


@pytest.mark.usefixtures("lookup_judge")
def test_score_tts_first_sample_unless_best_of_n(tts_data, tmp_path):
    # Sample 0 is silence, sample 1 the reference audio: only best-of-2 may pick sample 1.
    ref_paths = read_kaldi_text(tts_data["wav.scp"])
    lines = []
    for uttid, silence in read_kaldi_text(tts_data["silence.scp"]).items():
        lines += [f"{uttid}_sample0 {silence}", f"{uttid}_sample1 {ref_paths[uttid]}"]
    syn_scp = tmp_path / "samples.scp"
    syn_scp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    first = run_score_tts(tts_data, syn_scp, tmp_path / "first")
    assert (first["wer"], first["ref_wer"], first["judge"]) == (100.0, 0.0, "lookup")
    assert first["duration_ratio"] < 0.6 and "best_of_n" not in first
    best = run_score_tts(tts_data, syn_scp, tmp_path / "best", "--best_of_n", "2")
    assert (best["best_of_n"], best["wer"], best["duration_ratio"]) == (2, 0.0, 1.0)
    chosen = (tmp_path / "best" / "best_sample").read_text().split()
    assert chosen == ["utt0", "utt0_sample1", "utt1", "utt1_sample1", "utt2", "utt2_sample1"]


@pytest.mark.usefixtures("lookup_judge")
def test_score_tts_speaker_and_mos_when_configured(tts_data, tmp_path):
    torch.manual_seed(0)
    spk = save_audio_model(
        transformers.WavLMModel(transformers.WavLMConfig(**TINY_ENCODER)), tmp_path / "spk"
    )
    config = transformers.Wav2Vec2Config(**TINY_ENCODER, num_labels=1, classifier_proj_size=8)
    mos = save_audio_model(transformers.Wav2Vec2ForSequenceClassification(config), tmp_path / "mos")
    options = ["--spk_model_dir", str(spk), "--mos_model_dir", str(mos)]
    score = run_score_tts(tts_data, tts_data["wav.scp"], tmp_path / "out", *options)
    assert score["speaker_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert score["mos"] == score["ref_mos"]
    assert (score["spk_model_dir"], score["mos_model_dir"]) == (str(spk), str(mos))


@pytest.mark.usefixtures("lookup_judge")
def test_score_tts_missing_synthesis_counts_as_deletions(tts_data, tmp_path):
    syn_scp = tmp_path / "partial.scp"
    syn_scp.write_text(tts_data["wav.scp"].read_text().splitlines()[0] + "\n", encoding="utf-8")
    score = run_score_tts(tts_data, syn_scp, tmp_path / "out")
    words = [len(t.split()) for t in read_kaldi_text(tts_data["text"]).values()]
    assert score["num_missing_syn"] == 2
    assert score["wer"] == pytest.approx(100 * sum(words[1:]) / sum(words), abs=1e-4)
    assert (
        "Missing hypotheses (scored as all deletions): 2\n  utt1\n  utt2\n"
        in (tmp_path / "out" / "result.txt").read_text()
    )


@pytest.mark.usefixtures("lookup_judge")
def test_score_tts_unknown_synthesis_key_is_an_error(tts_data, tmp_path, caplog):
    syn_scp = tmp_path / "bad.scp"
    syn_scp.write_text(f"nosuch_utt {tts_data['root'] / 'ref0.wav'}\n", encoding="utf-8")
    args = ["--ref_text", str(tts_data["text"]), "--ref_wav_scp", str(tts_data["wav.scp"])]
    args += ["--syn_wav_scp", str(syn_scp), "--output_dir", str(tmp_path / "out")]
    assert score_tts.main(args) == 1
    assert f"{syn_scp}: keys that are neither a reference uttid nor" in caplog.text
    assert "nosuch_utt" in caplog.text


class CountingJudge(LookupJudge):
    """LookupJudge that counts the waveforms it is asked to transcribe."""

    calls = 0

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        self.calls += 1
        return super().transcribe(wav, sample_rate)


def test_score_tts_reference_judge_cache(tts_data, tmp_path, monkeypatch):
    judge = CountingJudge(tts_data)
    monkeypatch.setattr(score_tts, "load_judge", lambda *args: judge)
    cache = tmp_path / "cache" / "judge_ref.json"
    wav_scp = tmp_path / "wav.scp"  # a copy: rewritten below
    wav_scp.write_text(tts_data["wav.scp"].read_text(), encoding="utf-8")

    def first_lines(name: str, n: int) -> Path:
        path = tmp_path / f"{name}{n}"
        lines = tts_data[name].read_text(encoding="utf-8").splitlines(True)[:n]
        path.write_text("".join(lines), encoding="utf-8")
        return path

    def run(out: str, n: int = 3) -> tuple[int, bytes]:
        before = judge.calls
        args = ["--ref_text", str(first_lines("text", n)), "--ref_wav_scp", str(wav_scp)]
        args += ["--syn_wav_scp", str(first_lines("silence.scp", n))]
        args += ["--output_dir", str(tmp_path / out), "--ref_judge_cache", str(cache)]
        assert score_tts.main(args) == 0
        return judge.calls - before, (tmp_path / out / "score.json").read_bytes()

    # Two of three utterances first (a stage-10 subset), then all three: one reference is new.
    assert run("first2", 2)[0] == 2 + 2
    assert sorted(json.loads(cache.read_text())["utts"]) == ["utt0", "utt1"]
    calls, cached_score = run("all")
    assert calls == 1 + 3
    assert sorted(json.loads(cache.read_text())["utts"]) == ["utt0", "utt1", "utt2"]
    assert run("again")[0] == 3  # the syntheses only
    # The same figures as judging everything afresh (no cache).
    fresh = tmp_path / "fresh"
    run_score_tts(tts_data, tts_data["silence.scp"], fresh)
    assert (fresh / "score.json").read_bytes() == cached_score
    # Rewritten reference audio (wav.scp written again) or a broken cache: judged afresh.
    time.sleep(0.01)
    wav_scp.write_text(wav_scp.read_text(), encoding="utf-8")
    assert run("rewritten")[0] == 3 + 3
    assert run("rewritten_again")[0] == 3
    cache.write_text("{not json", encoding="utf-8")
    assert run("unreadable")[0] == 3 + 3


def test_group_samples_orders_by_index():
    refs = {"a": "", "b_sample1": ""}
    keys = ["a_sample10", "a_sample2", "a", "b_sample1"]
    assert group_samples(keys, refs, "x") == {
        "a": ["a", "a_sample2", "a_sample10"],
        "b_sample1": ["b_sample1"],
    }
    with pytest.raises(ScoringError, match="x: utterance a has two keys for the same sample"):
        group_samples(["a", "a_sample0"], refs, "x")
