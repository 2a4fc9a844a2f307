"""Fixtures shared by several test modules."""

import pytest
import torch
from tiny_model import TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny packed OpusLM model of `tiny_model.py`, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_opuslm"))


@pytest.fixture
def one_thread_and_restored_determinism():
    """Tiny models run fastest on one thread, and bit-identical runs need the same kernels; the
    trainer's deterministic mode is process-wide, so it is restored after the test."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
