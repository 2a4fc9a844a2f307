"""Fixtures shared by several test modules."""

import pytest
from tiny_model import TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny packed OpusLM model of `tiny_model.py`, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_opuslm"))
