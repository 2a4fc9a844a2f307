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


# Whole-recipe runs take most of the suite's time; collected first, each starts at once on its own
# pytest-xdist worker (`make test` runs two) while the short tests share the other worker.
LONG_RUNNING = (
    "test_recipe_data.py::test_mini_flite_smoke_preset_runs_every_stage",
    "test_recipe_librispeech.py::test_librispeech_recipe_stages_1_to_8_on_a_fake_corpus",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.endswith(LONG_RUNNING))
