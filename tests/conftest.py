"""Shared fixtures. Every test session gets its own empty Minari store, so tests never read or write
the user's datasets, and small datasets are made once per session by the real recipes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_minari_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    store = tmp_path_factory.mktemp("minari") / "datasets"
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    yield store
    if previous is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = previous


@pytest.fixture(scope="session")
def umaze_dataset(isolated_minari_store: Path) -> str:
    """A small local maze2d-umaze dataset (3,000 steps), made once by the real recipe."""
    from romi.data.make import make_dataset

    make_dataset("maze2d-umaze-sparse", steps=3_000, seed=0, ref_episodes=2)
    return "maze2d-umaze-sparse"


@pytest.fixture(scope="session")
def hopper_dataset(isolated_minari_store: Path) -> str:
    """A small local hopper-random dataset (2,000 steps)."""
    from romi.data.make import make_dataset

    make_dataset("hopper-random", steps=2_000, seed=0)
    return "hopper-random"
