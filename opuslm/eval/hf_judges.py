"""Judges that are Hugging Face models, loaded from local directories (nothing is downloaded).

- `WhisperJudge`: an ASR judge (`opuslm.eval.judges.AsrJudge`) from any Whisper checkpoint.
- `SpeakerEmbedder`: speaker embeddings (WavLM-style x-vector models, or mean-pooled hidden states
  of any audio encoder) compared by cosine similarity.
- `MOSPredictor`: an audio model with a one-output regression head.

Every model takes mono float32 waveforms `[N]` in [-1, 1] at any sample rate and resamples to the
rate it expects. Kept apart from `opuslm.eval.judges` because it imports torch and transformers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import transformers

from opuslm.eval.judges import AsrJudge, resample


def _load_pretrained(model_class: type, model_dir: str | os.PathLike, what: str):
    """`model_class.from_pretrained(model_dir)` from local files only, with a clear error."""
    try:
        return model_class.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the {what} from local directory {model_dir}: {e}") from e


class WhisperJudge(AsrJudge):
    """A Whisper model (`WhisperForConditionalGeneration` + `WhisperProcessor`) from a local dir.

    language: forced for multilingual checkpoints (English-only ones have no language token).
    """

    name = "whisper"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        batch_size: int = 8,
        language: str = "en",
        max_new_tokens: int = 128,
    ) -> None:
        self.init_args = (model_dir, device, batch_size, language, max_new_tokens)
        self.processor = _load_pretrained(
            transformers.WhisperProcessor, model_dir, "Whisper processor"
        )
        self.model = _load_pretrained(
            transformers.WhisperForConditionalGeneration, model_dir, "Whisper model"
        )
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        # Whisper refuses prompt + new tokens beyond its decoder positions; the prompt is at most
        # 4 tokens (start, language, task, no-timestamps).
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 4)
        self.sample_rate = self.processor.feature_extractor.sampling_rate
        multilingual = getattr(self.model.generation_config, "lang_to_id", None)
        self.generate_options = {"language": language, "task": "transcribe"} if multilingual else {}

    def __reduce__(self):
        # A worker process loads the model from its directory rather than unpickling weights.
        return WhisperJudge, self.init_args

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        return self.transcribe_batch([wav], sample_rate)[0]

    @torch.inference_mode()
    def transcribe_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> list[str]:
        transcripts = []
        for start in range(0, len(wavs), self.batch_size):
            chunk = [
                resample(w, sample_rate, self.sample_rate)
                for w in wavs[start : start + self.batch_size]
            ]
            # Whisper pads every input to 30 s, so batching does not change any transcript.
            features = self.processor.feature_extractor(
                chunk,
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                return_attention_mask=True,
            )
            token_ids = self.model.generate(
                features.input_features.to(self.device),
                attention_mask=features.attention_mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                **self.generate_options,
            )
            decoded = self.processor.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
            transcripts += [text.strip() for text in decoded]
        return transcripts


class _AudioModel:
    """A Hugging Face audio model with its feature extractor, fed one waveform at a time.

    One at a time on purpose: encoders without attention masks (wav2vec2-base style) would see
    the zero padding of a batch and give different outputs.
    """

    def __init__(self, model_dir: str | os.PathLike, model_class: type, what: str, device: str):
        self.feature_extractor = _load_pretrained(
            transformers.AutoFeatureExtractor, model_dir, f"{what} feature extractor"
        )
        self.model = _load_pretrained(model_class, model_dir, what)
        self.model.to(device).eval()
        self.device = device
        self.sample_rate = self.feature_extractor.sampling_rate

    @torch.inference_mode()
    def forward(self, wav: np.ndarray, sample_rate: int):
        inputs = self.feature_extractor(
            resample(wav, sample_rate, self.sample_rate),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )
        return self.model(**{k: v.to(self.device) for k, v in inputs.items()})


class SpeakerEmbedder:
    """Speaker embeddings from a local HF directory, compared by cosine similarity.

    An x-vector head (`WavLMForXVector`, `Wav2Vec2ForXVector`, ...) is used when the checkpoint
    has one; any other audio encoder is mean-pooled over time.
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu") -> None:
        config = _load_pretrained(transformers.AutoConfig, model_dir, "speaker model config")
        self.has_xvector_head = any(
            arch.endswith("ForXVector") for arch in (config.architectures or [])
        )
        model_class = (
            transformers.AutoModelForAudioXVector
            if self.has_xvector_head
            else transformers.AutoModel
        )
        self.audio_model = _AudioModel(model_dir, model_class, "speaker model", device)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """float32 [D] embedding of one waveform [N]."""
        outputs = self.audio_model.forward(wav, sample_rate)
        if self.has_xvector_head:
            embedding = outputs.embeddings[0]
        else:
            embedding = outputs.last_hidden_state[0].mean(dim=0)
        return embedding.float().cpu().numpy()

    def similarity(self, wav_a: np.ndarray, wav_b: np.ndarray, sample_rate: int) -> float:
        """Cosine similarity in [-1, 1] of the speaker embeddings of two waveforms."""
        return cosine_similarity(self.embed(wav_a, sample_rate), self.embed(wav_b, sample_rate))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors [D] (0 when either is all zeros)."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norms) if norms > 0 else 0.0


class MOSPredictor:
    """A MOS predictor: a local HF audio model whose classification head has a single output.

    Any checkpoint loadable by `AutoModelForAudioClassification` with `num_labels=1` plugs in
    (e.g. a wav2vec2/WavLM encoder fine-tuned as a MOS regressor).
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu") -> None:
        self.audio_model = _AudioModel(
            model_dir, transformers.AutoModelForAudioClassification, "MOS model", device
        )
        num_labels = self.audio_model.model.config.num_labels
        if num_labels != 1:
            raise ValueError(
                f"MOS model in {model_dir} has {num_labels} outputs; a MOS predictor needs a "
                f"regression head with exactly one (num_labels=1)"
            )

    def predict(self, wav: np.ndarray, sample_rate: int) -> float:
        """The predicted MOS of one waveform [N]."""
        return float(self.audio_model.forward(wav, sample_rate).logits[0, 0])
