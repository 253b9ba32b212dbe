"""Atomic writers (`romi.io`): a crash mid-write leaves the previous content, and no debris."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from romi.io import atomic_dir, atomic_save_npz


def test_atomic_dir_replaces_a_directory_whole(tmp_path: Path) -> None:
    final = tmp_path / "policy"
    atomic_dir(final, lambda d: (d.mkdir(), (d / "a").write_text("old")))
    atomic_dir(final, lambda d: (d.mkdir(), (d / "b").write_text("new")))
    assert sorted(p.name for p in final.iterdir()) == ["b"]


def test_atomic_dir_interrupted_keeps_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "policy"
    atomic_dir(final, lambda d: (d.mkdir(), (d / "a").write_text("old")))

    def half_written(d: Path) -> None:
        d.mkdir()
        (d / "b").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(final, half_written)
    assert (final / "a").read_text() == "old" and not (final / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]  # no staging directory left


def test_atomic_save_npz_round_trips(tmp_path: Path) -> None:
    arrays = {"rewards": np.arange(5.0), "episode_ids": np.array([0, 0, 1, 1, 1])}
    atomic_save_npz(tmp_path / "chunk.npz", arrays)
    with np.load(tmp_path / "chunk.npz") as loaded:
        assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())
    assert [p.name for p in tmp_path.iterdir()] == ["chunk.npz"]


def test_figures_are_written_whole_in_both_formats(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from romi.analysis.plots import _save

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    written = _save(fig, tmp_path / "curve")
    assert [p.name for p in written] == ["curve.png", "curve.svg"]
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "curve.svg").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "curve.svg"]  # no temporary files left
