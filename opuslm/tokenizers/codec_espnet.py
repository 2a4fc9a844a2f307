"""`ESPnetCodec`: ESPnet gan_codec models (DAC, SoundStream, Encodec) behind the `Codec` protocol.

The codec directory holds an ESPnet training config (`model_config`, the `config.yaml` ESPnet
writes next to its checkpoints) and a state dict (`checkpoint`), plus our `codec.yaml`:

    type: espnet
    model_config: config.yaml
    checkpoint: model.pth
    target_bandwidth: null     # kbps for DAC/SoundStream; null = the largest the model offers

ESPnet is an optional extra, imported only here; install it with tools/install_espnet.sh.
Checkpoints are read with `torch.load(weights_only=True)`, never unpickled.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from opuslm.fileio import atomic_path
from opuslm.tokenizers.acoustic import (
    CodecError,
    check_codes,
    check_waveform,
    num_frames,
    read_codec_config,
    write_codec_config,
)

INSTALL_HINT = "install the optional ESPnet extra with tools/install_espnet.sh"


def _gan_codec_task() -> type:
    try:
        from espnet2.tasks.gan_codec import GANCodecTask
    except ImportError as e:
        raise CodecError(f"the 'espnet' codec needs ESPnet ({e}); {INSTALL_HINT}") from e
    return GANCodecTask


class ESPnetCodec:
    """An ESPnet GAN codec: waveform [N] <-> codes [T, n_q]."""

    codec_type = "espnet"

    def __init__(
        self,
        model_config: str | os.PathLike,
        checkpoint: str | os.PathLike,
        target_bandwidth: float | None = None,
        device: str = "cpu",
    ) -> None:
        task = _gan_codec_task()
        self.model_config = Path(model_config)
        self.checkpoint = Path(checkpoint)
        self.target_bandwidth = target_bandwidth
        self.device = torch.device(device)
        for path in (self.model_config, self.checkpoint):
            if not path.is_file():
                raise CodecError(f"{path}: file not found")
        with open(self.model_config, encoding="utf-8") as f:
            args = yaml.safe_load(f)
        if not isinstance(args, dict) or "codec" not in args:
            raise CodecError(f"{self.model_config}: not an ESPnet gan_codec training config")
        self.model = task.build_model(argparse.Namespace(**args))
        state_dict = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        # Only the generator (encoder, quantizer, decoder) codes audio; a checkpoint stripped of
        # the discriminator is complete for our use.
        missing = [
            k
            for k in self.model.load_state_dict(state_dict, strict=False).missing_keys
            if k.startswith("codec.generator.")
        ]
        if missing:
            raise CodecError(
                f"{self.checkpoint}: {len(missing)} generator weights of the model in "
                f"{self.model_config} are missing, first {missing[0]!r}"
            )
        self.model.to(self.device).eval()
        info = self.model.codec.meta_info()
        self.sample_rate = int(info["fs"])
        self.hop_length = int(info["frame_shift"])
        self.codebook_size = int(info["code_size_per_stream"][0])
        # The number of codebooks depends on the target bandwidth, so it is read off one frame.
        self.num_codebooks = self._encode_padded(np.zeros(self.hop_length, np.float32)).shape[1]

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @torch.no_grad()
    def _encode_padded(self, wav: np.ndarray) -> np.ndarray:
        frames = num_frames(len(wav), self.hop_length)
        padded = np.pad(wav, (0, frames * self.hop_length - len(wav)))
        audio = torch.from_numpy(padded).to(self.device)
        codes = self.model.encode(audio, target_bw=self.target_bandwidth)  # [n_q, 1, T']
        return codes[:, 0, :frames].T.cpu().numpy()

    def encode(self, wav: np.ndarray) -> np.ndarray:
        """float32 [N] -> int32 codes [T, n_q], T = ceil(N / hop_length)."""
        wav = check_waveform(wav)
        codes = self._encode_padded(wav)
        if len(codes) != num_frames(len(wav), self.hop_length):
            raise CodecError(
                f"{self.model_config}: the model gave {len(codes)} frames for {len(wav)} samples "
                f"(expected ceil(N / {self.hop_length}))"
            )
        return codes.astype(np.int32)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int [T, n_q] -> float32 [T * hop_length]."""
        codes = check_codes(codes, self.num_codebooks, self.codebook_size)
        tensor = torch.from_numpy(codes.T[:, None, :]).to(self.device)  # [n_q, 1, T]
        wav = self.model.decode(tensor).reshape(-1).float().cpu().numpy()
        length = len(codes) * self.hop_length
        return np.pad(wav[:length], (0, max(0, length - len(wav)))).astype(np.float32)

    def save(self, directory: str | os.PathLike) -> None:
        """Copy the ESPnet config and checkpoint into `directory` and write codec.yaml."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = {"model_config": "config.yaml", "checkpoint": "model.pth"}
        for key, name in names.items():
            source, target = getattr(self, key), directory / name
            if source.resolve() != target.resolve():
                with atomic_path(target) as tmp:
                    shutil.copyfile(source, tmp)
        write_codec_config(
            directory,
            {"type": self.codec_type, **names, "target_bandwidth": self.target_bandwidth},
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ESPnetCodec:
        _gan_codec_task()  # fail with the install hint before anything else
        config = read_codec_config(directory)
        source = Path(directory) / "codec.yaml"
        for key in ("model_config", "checkpoint"):
            if key not in config:
                raise CodecError(f"{source}: missing key {key!r}")
        return cls(
            Path(directory) / config["model_config"],
            Path(directory) / config["checkpoint"],
            target_bandwidth=config.get("target_bandwidth"),
            device=config.get("device", "cpu"),
        )
