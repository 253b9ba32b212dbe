"""`romi imagine`: the reverse-vs-forward imagination view, with models shared through the artifact store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from romi.cli import app

SMALL = ["--set", "dynamics.max_epochs=2", "--set", "dynamics.batches_per_epoch=5", "--set", "dynamics.hidden_dim=32"]


def test_imagine_draws_both_directions_and_reuses_the_models(umaze_dataset: str, tmp_path: Path) -> None:
    args = ["imagine", umaze_dataset, "--artifacts", str(tmp_path / "artifacts"), "--out", str(tmp_path / "fig"),
            *SMALL]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert "dynamics (reverse): trained" in first.output and "dynamics (forward): trained" in first.output
    for name in (f"imagination_{umaze_dataset}", f"model_accuracy_{umaze_dataset}"):
        for suffix in (".png", ".svg"):
            assert (tmp_path / "fig" / f"{name}{suffix}").stat().st_size > 1000
    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "dynamics (reverse): loaded" in again.output
    assert "trained" not in again.output


def test_imagine_refuses_a_task_without_a_maze2d_map(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["imagine", "hopper-random", "--out", str(tmp_path / "fig")])
    assert result.exit_code == 2 and "maze2d" in result.output
    assert not (tmp_path / "fig").exists()


def test_imagine_measures_what_the_buffers_hold(umaze_dataset: str, tmp_path: Path) -> None:
    args = ["imagine", umaze_dataset, "--artifacts", str(tmp_path / "artifacts"), "--out", str(tmp_path / "fig"),
            *SMALL]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    table = (tmp_path / "fig" / f"imagined_{umaze_dataset}.md").read_text()
    assert table.startswith(f"What the model buffers hold, {umaze_dataset}, models of seed 0:")
    assert all(f"| {row}" in table for row in ("dataset", "reverse imagination", "forward imagination"))
    assert "reverse imagination" in result.output
