"""Installs the opuslm toolkit: the `opuslm` package and the `opuslm` console command.

Each dependency is listed with the reason it is here. Ranges are permissive on purpose so that
users with their own GPU build of torch keep it; `make install` pins what installs fast on the
CPU machines this project is developed on (see the Makefile and tools/install_cpu_torch.sh).
"""

from setuptools import find_packages, setup

install_requires = [
    # Model, training, distributed (DDP/FSDP through torch.distributed).
    "torch>=2.4",
    # Arrays everywhere; audio comes in as float32 numpy arrays.
    "numpy>=1.24",
    # Text BPE for recipes that pre-train their own small base LM.
    "sentencepiece>=0.1.99",
    # Kaldi ark/scp token dumps, the format ESPnet users already have tooling for.
    "kaldiio>=2.18",
    # WER / CER with alignments (sclite-style reports).
    "jiwer>=3.0",
    # Audio I/O (wav/flac/ogg) without torchaudio, whose PyPI wheels are tied to CUDA torch builds.
    "soundfile>=0.12",
    # Sample-rate conversion from a well-kept library instead of hand-written filters.
    "soxr>=0.3",
    # Base LMs (Llama / Qwen2 / OLMo-2 / GPT-NeoX bodies) from local Hugging Face directories, and
    # Whisper's English text normaliser for scoring.
    "transformers>=4.46",
    # Weights that load without unpickling.
    "safetensors>=0.4",
    # Configs (conf/*.yaml) and packed model configs.
    "PyYAML>=6.0",
    # Progress bars on every long step.
    "tqdm>=4.66",
    # Loss curves and other plots (PNG, Agg backend, no display needed).
    "matplotlib>=3.7",
    # Mel filterbanks, MFCC and Griffin-Lim phase reconstruction for the CPU tokenizers and codec.
    "librosa>=0.10",
    # k-means for semantic tokens and for the residual codebooks of the built-in codec.
    "scikit-learn>=1.3",
    # Caps BLAS/OpenMP threads per tokenisation job so N parallel jobs do not oversubscribe cores.
    "threadpoolctl>=3.1",
    # Whisper's English text normaliser with its spelling table, offline (transformers would fetch
    # that table from the hub).
    "whisper-normalizer>=0.1.15",
    # Offline ASR judge for TTS scoring; ships its own English model.
    "pocketsphinx>=5.0",
    # Bootstrap intervals of error rates (scipy.stats.bootstrap's `rng`) and the MFCC's DCT.
    "scipy>=1.15",
]

extras_require = {
    # ESPnet codec (DAC/SoundStream) and SSL (XEUS/HuBERT) models. Install with
    # tools/install_espnet.sh: a plain `pip install espnet` pins setuptools<74 (against torch 2.13.s
    # setuptools>=77.0.3) and may swap the CPU torch for a multi-GB CUDA build. espnet's gan_codec
    # also imports torchaudio without declaring it; the script installs it beside the CPU torch.
    "espnet": ["espnet>=202412"],
    # Optional only: the PyPI wheels are CUDA-linked to their own torch and fail to import beside a
    # CPU torch. Nothing in opuslm requires it.
    "torchaudio": ["torchaudio"],
    # Tests, property tests and the linter.
    "dev": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "ruff>=0.4", "pytest-timeout>=2"],
}

setup(
    name="opuslm",
    version="0.1.0",
    description="Recipe toolkit for OpusLM-style unified speech language models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["opuslm", "opuslm.*"]),
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={"console_scripts": ["opuslm=opuslm.cli:main"]},
    license="Apache-2.0",
)
