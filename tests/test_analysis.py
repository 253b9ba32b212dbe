"""Analysis on a synthetic sweep directory laid out as Tune writes it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from romi.analysis import load_results, paper_numbers, paper_table, summarize_trials
from romi.analysis.claims import Ordering, _paper_value, check_claims
from romi.analysis.plots import discrepancy_by_method, learning_curves, ours_vs_paper
from romi.analysis.tables import FOOTNOTE
from romi.cli import app

# (method, seed) -> final score; the synthetic curve rises linearly to it over 3 evaluations.
FINAL = {("ROMI-BCQ", 0): 120.0, ("ROMI-BCQ", 1): 140.0, ("FOMI-BCQ", 0): 10.0, ("FOMI-BCQ", 1): 20.0,
         ("BCQ", 0): 40.0, ("BCQ", 1): 50.0}
TASK = "maze2d-umaze-sparse"
LOCAL_ID = "local/pointmaze/umaze-v0"


def _trial(root: Path, method: str, seed: int, steps: list[int], final: float, error: bool = False,
           label: str | None = None, discrepancy: float | None = None) -> None:
    trial = root / f"{TASK}_{label or method}_seed{seed}".replace(" ", "")
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({
        "task": TASK, "method": method, "seed": seed, "profile": "quick", "sweep": "synthetic",
        "overrides": {"bcq": {"batch_size": 100}},
    }))
    lines = []
    for step in steps:
        lines.append(json.dumps({
            "task": TASK, "method": method, "seed": seed, "step": step, "score": final * step / 300,
            "score_local": final * step / 300 - 5, "return_mean": step / 10, "return_std": 1.0,
            "discrepancy": discrepancy if discrepancy is not None else 0.1 if method != "FOMI-BCQ" else 0.5,
            "steps_per_second": 30.0, "wall_time": step / 10,
            "train/critic_loss": 1.0 / step, "done_fraction": step / 300,
            "dataset_id": LOCAL_ID, "method_label": label or method,
        }))
    (trial / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    if error:
        (trial / "error.txt").write_text("RuntimeError: boom")
        later = (trial / "result.json").stat().st_mtime + 1  # the failure came after the last report
        os.utime(trial / "error.txt", (later, later))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "synthetic"
    for (method, seed), final in FINAL.items():
        _trial(root, method, seed, [100, 200, 300], final)
    _trial(root, "BCQ", 2, [100], 45.0, error=True)  # failed after one evaluation
    _trial(root, "ROMI-BCQ", 2, [], 0.0)  # never reported
    return root


def test_results_schema_and_values(sweep: Path) -> None:
    frame = load_results(str(sweep))
    assert list(frame.columns[:18]) == ["sweep", "trial", "task", "method", "seed", "profile", "status",
                                        "method_label", "dataset_id", "score_headline", "normalised_with", "step",
                                        "score", "score_local", "return_mean", "return_std", "discrepancy",
                                        "steps_per_second"]
    assert "train/critic_loss" in frame and "config/bcq.batch_size" in frame
    assert len(frame) == 6 * 3 + 1 + 1
    final = frame[(frame["method"] == "ROMI-BCQ") & (frame["seed"] == 1) & (frame["step"] == 300)]
    assert final["score"].item() == pytest.approx(140.0)
    # Local data: the headline is the score on the dataset's own refs, and says so.
    assert final["score_headline"].item() == pytest.approx(135.0)
    assert set(frame.dropna(subset=["score"])["normalised_with"]) == {"local refs"}
    status = frame.groupby(["method", "seed"])["status"].first()
    assert status[("BCQ", 2)] == "failed" and status[("ROMI-BCQ", 2)] == "not started"
    assert status[("ROMI-BCQ", 0)] == "finished"


def test_a_trial_restarted_after_a_failure_is_not_failed(sweep: Path) -> None:
    """Tune restarts a failed trial from its checkpoint (a lost worker, Ray's keepalive) and the old
    error.txt stays: a trial that reported after it is training, not failed."""
    trial = sweep / f"{TASK}_BCQ_seed2"
    earlier = (trial / "result.json").stat().st_mtime - 60
    os.utime(trial / "error.txt", (earlier, earlier))
    status = load_results(str(sweep)).groupby(["method", "seed"])["status"].first()
    assert status[("BCQ", 2)] == "stopped"


def test_summary_and_last_k(sweep: Path) -> None:
    summary = summarize_trials(load_results(str(sweep)), last_k=2)
    row = summary[(summary["method"] == "BCQ") & (summary["seed"] == 0)].iloc[0]
    assert row["final_score"] == pytest.approx(40.0) and row["last_k_score"] == pytest.approx((40.0 + 80 / 3) / 2)
    assert row["headline_score"] == pytest.approx((35.0 + 80 / 3 - 5) / 2) == row["last_k_score_local"]
    # the swing: half the gap between the last two headline scores (std with ddof 0 of two numbers)
    assert row["headline_swing"] == pytest.approx(abs(35.0 - (80 / 3 - 5)) / 2)
    assert summarize_trials(load_results(str(sweep)), last_k=1)["headline_swing"].isna().all()


def test_official_data_headlines_the_d4rl_score(tmp_path: Path) -> None:
    frame = load_results(str(_complete_sweep(tmp_path)))
    frame["dataset_id"] = "D4RL/pointmaze/umaze-v2"
    table = paper_table(frame.drop(columns=["score_headline", "normalised_with"]).pipe(_with_headline), 3)
    shown = table.display("markdown")
    assert shown.loc[TASK, "normalised with"] == "D4RL refs" and shown.loc[TASK, "ROMI-BCQ"] == "**130.0 ± 10.0 (n=2)**"
    assert not any("[D4RL refs]" in column for column in shown.columns)
    assert "'local refs'" not in table.caption


def _complete_sweep(tmp_path: Path) -> Path:
    """Every trial finished, 2 seeds per method: a complete row, which bolds its best."""
    root = tmp_path / "complete"
    for (method, seed), final in FINAL.items():
        _trial(root, method, seed, [100, 200, 300], final)
    return root


def _with_headline(frame):
    from romi.analysis.results import headline

    frame["score_headline"], frame["normalised_with"] = headline(frame["score"], frame["score_local"],
                                                                 frame["dataset_id"])
    return frame


def test_table3_layout_bold_delta_and_paper_numbers(sweep: Path) -> None:
    table = paper_table(load_results(str(sweep)), 3)
    assert list(table.numbers.index) == [TASK]
    shown = table.display("markdown")
    assert list(shown.columns) == ["normalised with", "ROMI-BCQ", "FOMI-BCQ", "BCQ", "ROMI-BCQ [D4RL refs]",
                                   "FOMI-BCQ [D4RL refs]", "BCQ [D4RL refs]", "Delta (D4RL refs)", "paper ROMI-BCQ",
                                   "paper FOMI-BCQ", "paper BCQ", "paper Delta"]
    # Headline: local refs (score_local = score - 5 here); the D4RL-ref numbers stand beside them.
    assert shown.loc[TASK, "normalised with"] == "local refs"
    # Every cell of this row is incomplete († and no bold): ROMI-BCQ's seed 2 never started, FOMI-BCQ has
    # 2 seeds of 3, BCQ's seed 2 failed.
    assert shown.loc[TASK, "ROMI-BCQ"] == "125.0 ± 10.0 (n=2)†"
    assert shown.loc[TASK, "ROMI-BCQ [D4RL refs]"] == "130.0 ± 10.0†"
    assert shown.loc[TASK, "FOMI-BCQ"] == "10.0 ± 5.0 (n=2)†"
    # BCQ seed 2 failed at 10.0 (45 * 100/300 - 5): it is counted with its last evaluation.
    assert shown.loc[TASK, "BCQ"] == "30.0 ± 14.7 (n=3)†"
    assert shown.loc[TASK, "Delta (D4RL refs)"] == "95.0†"
    assert shown.loc[TASK, "paper ROMI-BCQ"] == "139.5 ± 3.6" and shown.loc[TASK, "paper Delta"] == "98.4"
    assert set(table.missing["status"]) == {"failed", "not started"}
    assert "textbf" not in table.to_latex() and "<b>" not in table.to_html()
    assert table.to_markdown().endswith(FOOTNOTE)


def test_complete_rows_bold_the_best_and_show_n(tmp_path: Path) -> None:
    table = paper_table(load_results(str(_complete_sweep(tmp_path))), 3)
    shown = table.display("markdown")
    assert shown.loc[TASK, "ROMI-BCQ"] == "**125.0 ± 10.0 (n=2)**" and shown.loc[TASK, "BCQ"] == "40.0 ± 5.0 (n=2)"
    assert shown.loc[TASK, "Delta (D4RL refs)"] == "85.0"
    assert not table.incomplete and "†" not in table.to_markdown()
    assert r"\textbf{125.0" in table.to_latex() and "<b>125.0" in table.to_html()
    assert table.to_markdown().startswith("Table 3. Ours:") and "'local refs'" in table.caption
    assert "each trial's final score" in table.caption


def test_a_run_off_the_papers_settings_gets_its_own_column(sweep: Path) -> None:
    _trial(sweep, "BCQ", 0, [100, 200, 300], 90.0, label="BCQ (rw)")
    shown = paper_table(load_results(str(sweep)), 3).display("plain")
    assert shown.loc[TASK, "BCQ (rw)"] == "85.0 (n=1)†"  # one seed: no spread to show
    assert shown.loc[TASK, "BCQ (rw) [D4RL refs]"] == "90.0†"  # ... in either refs
    assert shown.loc[TASK, "BCQ"] == "30.0 ± 14.7 (n=3)†", "the uniform baseline's column is untouched"
    assert shown.loc[TASK, "Delta (D4RL refs)"] == "95.0†", "Delta compares with the paper's BCQ, not the variant"


def test_paper_numbers_cover_tables_1_to_4() -> None:
    paper = paper_numbers()
    assert paper.groupby("table")["task"].nunique().to_dict() == {1: 12, 2: 12, 3: 12, 4: 6}
    assert not paper["mean"].isna().any()
    with pytest.raises(ValueError, match="Tables 1-4"):
        paper_table(load_results(), 5)


def test_each_plot_writes_a_non_empty_image(sweep: Path, tmp_path: Path) -> None:
    frame = load_results(str(sweep))
    files = learning_curves(frame, tmp_path / "lc") + discrepancy_by_method(frame, tmp_path / "d")
    files += ours_vs_paper(paper_table(frame, 3), tmp_path / "bars")
    assert len(files) == 6 and all(f.stat().st_size > 1000 for f in files)
    again = learning_curves(frame, tmp_path / "again" / "lc")
    assert [f.read_bytes() for f in again] == [f.read_bytes() for f in files[:2]], "a redraw is byte for byte"
    assert "<!-- ROMI-BCQ (2 seeds) -->" in files[1].read_text(), "the legend counts the seeds"
    one = learning_curves(frame[frame["seed"] == 0], tmp_path / "one" / "lc")
    assert "<!-- ROMI-BCQ (1 seed) -->" in one[1].read_text()


def test_step_ticks_read_in_thousands_and_millions() -> None:
    from romi.analysis.plots import _thousands

    assert [_thousands(v, 0) for v in (0, 500, 20_000, 100_000, 1_000_000, 1_500_000)] == [
        "0", "500", "20k", "100k", "1M", "1.5M"]


def test_report_cli_prints_the_table_and_names_missing_trials(sweep: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(sweep), "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Table 3" in result.output and "139.5 ± 3.6" in result.output
    assert "BCQ seed 2: failed at step 100" in result.output and "ROMI-BCQ seed 2: not started" in result.output
    assert (tmp_path / "out" / "table3.md").exists() and (tmp_path / "out" / "learning_curves.png").exists()
    # what it is reading and drawing, one line each, before the tables
    for line in ("reading the results of", "table 3: ours beside the paper's (md, html, tex, figure)",
                 "drawing the learning curves", "drawing the trajectory discrepancy by method"):
        assert line in result.output


def test_export_keeps_finished_trials_as_run_directories(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept"
    result = CliRunner().invoke(app, ["export", str(sweep), "--out", str(out), "--commit", "abc123"])
    assert result.exit_code == 0, result.output
    assert "6 exported, 0 already there, 2 not finished" in result.output
    # no checkpoints in this synthetic sweep: said, not silently skipped
    assert result.output.count("no checkpoint, so Figure 3 will not show its policy") == 6
    assert not list(out.rglob("policy_episodes.npz"))
    kept = load_results(str(out))
    original = load_results(str(sweep))
    finished = original[original["status"] == "finished"]
    assert set(kept["status"]) == {"finished"} and len(kept) == len(finished) == 18
    merged = kept.merge(finished, on=["task", "method", "seed", "step"], suffixes=("", "_sweep"))
    assert np.allclose(merged["score_headline"], merged["score_headline_sweep"])
    summary = json.loads((out / f"{TASK}_BCQ_seed0" / "summary.json").read_text())
    assert summary["code_commit"] == "abc123" and summary["final_score"] == pytest.approx(40.0)
    config = json.loads((out / f"{TASK}_BCQ_seed0" / "config.json").read_text())
    assert config["bcq"]["batch_size"] == 100 and config["profile"] == "quick"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = CliRunner().invoke(app, ["export", str(sweep), "--out", str(out)])
    assert "0 exported, 6 already there" in again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before, "an export is never rewritten"


def test_report_with_a_missing_models_directory_is_a_clear_error(sweep: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(sweep), "--out", str(tmp_path / "out"),
                                      "--models", str(tmp_path / "nowhere")])
    said = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2 and "is not a directory" in said and "romi export --models" in said
    assert not (tmp_path / "out").exists()


def test_report_on_nothing_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no trials found" in result.output
    assert not (tmp_path / "out").exists()


def test_notebook_runs_top_to_bottom(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jupytext
    import nbclient

    notebook = jupytext.read(Path(__file__).parents[1] / "analysis" / "reproduce_tables.py")
    monkeypatch.setenv("ROMI_SWEEP", str(sweep))
    monkeypatch.setenv("ROMI_REPORT_OUT", str(tmp_path / "nb"))
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert (tmp_path / "nb" / "learning_curves.png").exists()
    shown = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    assert any("Table 3. Ours:" in text and "local refs" in text for text in shown), "the table says its refs"
    assert any("ROMI-BCQ scores above FOMI-BCQ" in text for text in shown), "the claims are checked"
    assert any("diverged_at_step" in str(o.get("data", {})) for o in outputs), "divergence is shown per trial"


def test_report_on_an_interrupted_sweep_lists_every_trial_truthfully(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """9 trials asked for (the quick sweep's grid); one stopped after 1 evaluation, one after 2, 7 never started."""
    from romi.analysis import plots
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import write_manifest

    root = tmp_path / "synthetic"
    spec = load_sweep(Path(__file__).resolve().parents[1] / "tune_configs" / "quick.yaml").model_copy(
        update={"name": "synthetic"})
    write_manifest(spec, str(root))
    _trial(root, "ROMI-BCQ", 0, [100], -23.1)  # headline (local refs) -12.7 at step 100 of 300
    _trial(root, "BCQ", 0, [100, 200], 30.0)
    figures: list = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", str(root), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "9 trial(s) not finished" in text
    assert "ROMI-BCQ seed 0: stopped at step 100 (1 evaluations)" in text
    assert "BCQ seed 0: stopped at step 200 (2 evaluations)" in text
    assert text.count(": not started") == 7 and "running" not in text and "pending" not in text
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 9 and sorted(trials["status"].value_counts().items()) == [("not started", 7),
                                                                                     ("stopped", 2)]
    table = (out / "table3.md").read_text()
    assert "**" not in table, "nothing incomplete is bold"
    assert "-12.7 (n=1)†" in table and "15.0 (n=1)†" in table and "—†" in table and "† incomplete" in table
    curves = [line for fig in figures for ax in fig.axes for line in ax.get_lines()
              if ax.get_xlabel() == "gradient steps"]
    assert curves and all(line.get_marker() == "o" for line in curves), "a one-point curve must be visible"


def test_export_models_copies_finished_models_that_a_store_then_reuses(tmp_path: Path) -> None:
    """The exported models, put back into another sweep's artifacts/, load instead of training again."""
    from romi.artifacts import ArtifactStore
    from romi.models.rollout_policy import UniformRolloutPolicy

    sweep = tmp_path / "sweep"
    store = ArtifactStore(sweep / "artifacts")
    builds: list[str] = []

    def build() -> tuple[UniformRolloutPolicy, dict[str, int]]:
        builds.append("built")
        return UniformRolloutPolicy([-1.0, -1.0], [1.0, 1.0]), {"epochs": 0}

    store.load_or_build("rollout-uniform/abc", empty=lambda: UniformRolloutPolicy([-1.0, -1.0], [1.0, 1.0]),
                        build=build, identity={"seed": 0})
    (sweep / "artifacts" / ".partial" / "dynamics" / "unfinished").mkdir(parents=True)  # an interrupted fit
    out = tmp_path / "models"
    result = CliRunner().invoke(app, ["export", str(sweep), "--out", str(tmp_path / "trials"), "--models", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 models copied, 0 already there" in result.output
    assert [p.relative_to(out).as_posix() for p in out.glob("*/*")] == ["rollout-uniform/abc"]
    again = CliRunner().invoke(app, ["export", str(sweep), "--out", str(tmp_path / "trials"), "--models", str(out)])
    assert "0 models copied, 1 already there" in again.output

    elsewhere = ArtifactStore(tmp_path / "new-machine" / "artifacts")
    shutil.copytree(out, tmp_path / "new-machine" / "artifacts", dirs_exist_ok=True)
    artifact = elsewhere.load_or_build("rollout-uniform/abc", build=build, identity={"seed": 0},
                                       empty=lambda: UniformRolloutPolicy([-1.0, -1.0], [1.0, 1.0]))
    assert not artifact.built and builds == ["built"]


# ------------------------------------------------------------------------------------------------
# The paper's claims (romi.analysis.claims)
# ------------------------------------------------------------------------------------------------


def _claims(root: Path, last_k: int = 1):
    results = load_results(str(root))
    return check_claims(summarize_trials(results, last_k=last_k),
                        {3: paper_table(results, 3, last_k=last_k)}).set_index("claim")


def test_every_ordering_of_table_3_and_figure_3j_is_checked(tmp_path: Path) -> None:
    # ROMI-BCQ 115/135, FOMI-BCQ 5/15, BCQ 35/45 (local refs = final - 5); discrepancy FOMI 0.5, others 0.1
    claims = _claims(_complete_sweep(tmp_path))
    assert set(claims["source"]) == {"Table 3", "Figure 3j"} and set(claims["task"]) == {TASK}
    romi_fomi = claims.loc["ROMI-BCQ scores above FOMI-BCQ (local refs)"]
    assert romi_fomi["paper"] == "139.5 vs 8.1"
    assert romi_fomi["ours"] == "125.0 ± 10.0 (n=2) vs 10.0 ± 5.0 (n=2)"
    assert romi_fomi["seed pairs"] == "4 of 4" and romi_fomi["verdict"] == "holds"
    # The paper's BCQ (41.1) is above its FOMI-BCQ (8.1): that ordering is checked too, in the paper's order.
    assert claims.loc["BCQ scores above FOMI-BCQ (local refs)", "verdict"] == "holds"
    strays = claims.loc["FOMI-BCQ strays further from the data than BCQ"]
    assert strays["ours"] == "0.500 ± 0.000 (n=2) vs 0.100 ± 0.000 (n=2)" and strays["verdict"] == "holds"
    close = claims[claims.index.str.startswith("ROMI-BCQ is about as close to the data as BCQ")].iloc[0]
    assert close["verdict"] == "holds" and close["seed pairs"] == "—"
    assert len(claims) == 6


def test_a_reversed_ordering_and_a_leaning_one_are_told_apart(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    finals = {**FINAL, ("FOMI-BCQ", 0): 150.0, ("FOMI-BCQ", 1): 160.0,  # FOMI above ROMI in every pair
              ("BCQ", 0): 130.0}  # BCQ seed 0 beats ROMI-BCQ seed 0 (120) but not seed 1 (140)
    for (method, seed), final in finals.items():
        _trial(root, method, seed, [100, 200, 300], final)
    claims = _claims(root)
    assert claims.loc["ROMI-BCQ scores above FOMI-BCQ (local refs)", "verdict"] == "reversed"
    above_bcq = claims.loc["ROMI-BCQ scores above BCQ (local refs)"]
    assert above_bcq["seed pairs"] == "3 of 4" and above_bcq["verdict"] == "leans"


def test_romi_as_close_as_bcq_fails_when_its_discrepancy_sits_with_fomis(tmp_path: Path) -> None:
    """The reduced run's case: ROMI-BCQ a little closer than FOMI-BCQ, both three times BCQ's distance."""
    root = tmp_path / "apart"
    for (method, seed), final in FINAL.items():
        _trial(root, method, seed, [100, 200, 300], final,
               discrepancy={"ROMI-BCQ": 0.19, "FOMI-BCQ": 0.2, "BCQ": 0.06}[method])
    claims = _claims(root)
    close = claims[claims.index.str.startswith("ROMI-BCQ is about as close to the data as BCQ")].iloc[0]
    assert close.name.endswith("(its discrepancy is 0.130 from BCQ's, 0.010 from FOMI-BCQ's)")
    assert close["verdict"] == "fails"
    assert claims.loc["FOMI-BCQ strays further from the data than ROMI-BCQ", "verdict"] == "holds"


def test_missing_seeds_mark_the_verdict_incomplete_and_variants_do_not_count(tmp_path: Path) -> None:
    root = _complete_sweep(tmp_path)
    _trial(root, "BCQ", 0, [100, 200, 300], 500.0, label="BCQ (rw)")  # off the paper's settings
    _trial(root, "ROMI-BCQ", 2, [100], 10.0)  # a third seed, stopped after its first evaluation
    claims = _claims(root)
    row = claims.loc["ROMI-BCQ scores above BCQ (local refs)"]
    assert row["verdict"] == "leans (incomplete)" and row["seed pairs"] == "4 of 6"
    assert row["ours"].endswith("vs 40.0 ± 5.0 (n=2)"), "the (rw) variant is not the paper's BCQ"


def test_a_method_run_only_off_the_papers_settings_is_not_run_for_the_claims(tmp_path: Path) -> None:
    root = tmp_path / "variant"
    for seed in (0, 1):
        _trial(root, "ROMI-BCQ", seed, [100, 200, 300], FINAL[("ROMI-BCQ", seed)])
        _trial(root, "BCQ", seed, [100, 200, 300], FINAL[("BCQ", seed)], label="BCQ (rw)")
    row = _claims(root).loc["ROMI-BCQ scores above BCQ (local refs)"]
    assert row["verdict"] == "not run" and row["seed pairs"] == "—"


def test_the_mean_of_the_last_evaluations_is_what_the_table_shows(tmp_path: Path) -> None:
    claims = _claims(_complete_sweep(tmp_path), last_k=2)
    # ROMI-BCQ seed 0: (120 * 2/3 - 5 + 115) / 2 = 95; seed 1: (140 * 2/3 - 5 + 135) / 2 = 111.7
    assert claims.loc["ROMI-BCQ scores above BCQ (local refs)", "ours"].startswith("103.3 ± 8.3 (n=2)")
    assert "each trial's mean score over its last 2 evaluations" in paper_table(
        load_results(str(tmp_path / "complete")), 3, last_k=2).caption


def test_the_papers_baseline_columns_stand_in_for_our_baselines() -> None:
    assert _paper_value(3, TASK, "FOMI-BCQ") == pytest.approx(8.1)
    assert _paper_value(2, "hopper-random", "CQL") == pytest.approx(31.4), "Table 2's MF is CQL here"
    assert _paper_value(2, "walker2d-random", "CQL") is None, "... and BEAR here: no CQL number"
    assert _paper_value(1, TASK, "BCQ") is None


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=5), st.lists(st.floats(-100, 100), min_size=1, max_size=5))
def test_an_ordering_holds_exactly_when_every_pair_is_in_order(above: list[float], below: list[float]) -> None:
    order = Ordering(np.array(above), np.array(below))
    assert (order.verdict() == "holds") == (min(above) > max(below))
    assert 0 <= order.pairs_in_order <= order.pairs == len(above) * len(below)
    flipped = Ordering(np.array(below), np.array(above))
    if order.verdict() == "holds":
        assert flipped.verdict() == "reversed" and flipped.pairs_in_order == 0


def test_report_writes_and_prints_the_claims(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", str(_complete_sweep(tmp_path)), "--out", str(out), "--no-figures"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "The paper's claims" in result.output and "ROMI-BCQ scores above FOMI-BCQ" in result.output
    text = (out / "claims.md").read_text()
    assert text.startswith("The paper's orderings checked on our trials.") and text.count("| holds") == 6


def test_a_report_on_exports_alone_still_knows_which_trials_are_missing(tmp_path: Path) -> None:
    """Seed 0 of each method finished and exported, the other 6 trials of the sweep not: the export keeps the
    sweep's manifest, so its table and claims say incomplete instead of passing one seed off as the row."""
    from romi.tune.spec import load_sweep
    from romi.tune.sweep import write_manifest

    root = tmp_path / "synthetic"
    spec = load_sweep(Path(__file__).resolve().parents[1] / "tune_configs" / "quick.yaml").model_copy(
        update={"name": "synthetic"})
    write_manifest(spec, str(root))
    for method in ("ROMI-BCQ", "FOMI-BCQ", "BCQ"):
        _trial(root, method, 0, [100, 200, 300], FINAL[(method, 0)])
    _trial(root, "BCQ", 1, [100], 30.0)  # still running: not exported
    out = tmp_path / "kept"
    result = CliRunner().invoke(app, ["export", str(root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 exported" in result.output and "kept the sweep's manifest" in result.output
    assert (out / "manifests" / "synthetic" / "romi_sweep.json").is_file()

    results = load_results(str(out))
    status = results.groupby(["method", "seed"])["status"].first()
    assert len(status) == 9 and (status == "finished").sum() == 3, "each trial once: exported or asked for"
    table = paper_table(results, 3)
    assert table.incomplete and table.display("plain").loc[TASK, "ROMI-BCQ"] == "115.0 (n=1)†"
    claims = check_claims(summarize_trials(results), {3: table})
    assert claims["verdict"].str.endswith("(incomplete)").all()
    # exporting again (the sweep went on) keeps the newest manifest and rewrites no trial
    again = CliRunner().invoke(app, ["export", str(root), "--out", str(out)])
    assert "0 exported, 3 already there" in again.output


def test_load_results_refuses_a_path_that_is_not_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an empty frame (which later fails as a missing column): an error naming the path and, for a relative
    one, the directory it was read from (a notebook runs in its own folder)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"results/trials does not exist \\(relative to {tmp_path}\\)"):
        load_results("results/trials")
    with pytest.raises(FileNotFoundError, match="does not exist\n  fix: give a sweep directory"):
        load_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert load_results(tmp_path / "empty").empty  # there but empty: a sweep that has not started


def test_export_refuses_another_run_of_an_exported_trial_before_writing_anything(sweep: Path,
                                                                                   tmp_path: Path) -> None:
    """After `romi sweep --overwrite` the sweep holds a new run of each trial: exporting it onto the old
    export would keep the old trial as "already there" beside the new manifest. Refused, nothing written."""
    out = tmp_path / "kept"
    assert CliRunner().invoke(app, ["export", str(sweep), "--out", str(out)]).exit_code == 0
    result_file = sweep / f"{TASK}_BCQ_seed0" / "result.json"
    lines = [json.loads(line) for line in result_file.read_text().splitlines()]
    result_file.write_text("".join(json.dumps({**r, "score": r["score"] + 1.0}) + "\n" for r in lines))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = CliRunner().invoke(app, ["export", str(sweep), "--out", str(out)], env={"COLUMNS": "300"})
    text = " ".join(again.output.split())
    assert again.exit_code == 2 and "holds another run of" in text and "move those directories away" in text
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "nothing written, manifest included"
    # A leftover directory without a summary is named too, not met as a failed rename of a hidden staging path.
    shutil.rmtree(out)
    (out / f"{TASK}_BCQ_seed1").mkdir(parents=True)
    leftover = CliRunner().invoke(app, ["export", str(sweep), "--out", str(out)], env={"COLUMNS": "300"})
    assert leftover.exit_code == 2 and "holds no finished export" in " ".join(leftover.output.split())


def test_an_exported_trial_whose_evaluations_are_cut_mid_line_is_not_finished(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept"
    assert CliRunner().invoke(app, ["export", str(sweep), "--out", str(out)]).exit_code == 0
    evaluations = out / f"{TASK}_BCQ_seed0" / "evaluations.jsonl"
    text = evaluations.read_text()
    evaluations.write_text(text[: len(text) - 40])  # the last line cut mid-way
    trials = summarize_trials(load_results(str(out))).set_index(["method", "seed"])
    assert trials.loc[("BCQ", 0), "status"] == "stopped" and trials.loc[("BCQ", 0), "steps"] == 200
    assert trials.loc[("BCQ", 1), "status"] == "finished"


def test_a_trial_of_a_sweep_whose_driver_is_alive_is_running_not_stopped(sweep: Path) -> None:
    from romi.locks import exclusive

    _trial(sweep, "ROMI-BCQ", 5, [100], 125.0)  # one evaluation of three so far
    def status() -> str:
        return summarize_trials(load_results(str(sweep))).set_index(["method", "seed"]).loc[("ROMI-BCQ", 5), "status"]

    assert status() == "stopped"
    with exclusive(sweep, f"sweep {sweep}"):  # as `romi sweep` holds it while it runs
        assert status() == "running"
    assert status() == "stopped", "a driver that ended leaves its unfinished trials stopped"
