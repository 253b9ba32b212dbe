"""Bad input and interruptions, as a new user meets them: every one is refused with exit code 2, a message
naming the problem and the fix, and the file tree as it was (README, "Bad input")."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import socket
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from romi.cli import app
from romi.config import build_run_config, parse_overrides
from romi.data.minari_io import dataset_dir, datasets_root
from romi.errors import PreflightError
from romi.tasks import TASKS
from romi.tune.preflight import ClusterResources, check_resources
from romi.tune.spec import load_sweep

runner = CliRunner()
TUNE_CONFIGS = Path(__file__).resolve().parents[1] / "tune_configs"
QUICK = str(TUNE_CONFIGS / "quick.yaml")
UNWRITABLE = "/sys/romi-cannot-write-here"  # sysfs: read-only even for root, unlike a chmod-ed directory
TINY = ["--profile", "quick", "--set", "gradient_steps=60", "--set", "eval.every=30", "--set", "eval.episodes=1",
        "--set", "bcq.actor_hidden=[32,32]", "--set", "bcq.critic_hidden=[32,32]", "--set", "bcq.vae.hidden_dim=32",
        "--set", "bcq.batch_size=32"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under `root`, with a digest of each file's content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (default output paths such as runs/ land here, inside the snapshot)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(args: list[str], *needles: str, roots: tuple[Path, ...]) -> str:
    """Run `romi args`; assert exit 2, an error and a fix naming `needles`, and no file changed under `roots`."""
    before = [snapshot(root) for root in roots]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, result.output
    assert "error:" in text and "fix:" in text, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    assert [snapshot(root) for root in roots] == before, "the file tree changed"
    return text


def _store() -> Path:
    return datasets_root()


# --- raw tracebacks before ----------------------------------------------------------------


def test_corrupt_checkpoint_is_named_with_how_to_start_over(scratch: Path) -> None:
    run = scratch / "run"
    run.mkdir()
    config = build_run_config("maze2d-umaze-sparse", "BCQ", 0, "quick", parse_overrides(
        [a for a in TINY[2:] if a != "--set"]))
    (run / "config.json").write_text(config.to_json())
    (run / "run.pt").write_bytes(b"PK\x03\x04 truncated")
    refused(["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", *TINY, "--out", str(run),
             "--artifacts", str(scratch / "artifacts")],
            f"checkpoint {run / 'run.pt'} is corrupt or truncated", "delete", "start this run over",
            roots=(scratch,))


@pytest.mark.parametrize("bad", [UNWRITABLE + "/run", "inside-a-file/run"])
@pytest.mark.parametrize("option", ["train --out", "train --artifacts", "report --out", "sweep --storage"])
def test_unwritable_directories_are_refused_before_anything_starts(scratch: Path, option: str, bad: str) -> None:
    import ray

    (scratch / "inside-a-file").write_text("a file, not a directory")
    command, flag = option.split()
    if command == "train":
        args = ["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--out", str(scratch / "run"),
                "--artifacts", str(scratch / "artifacts"), flag, bad]
    elif command == "report":
        sweep = scratch / "sweep" / "maze2d-umaze-sparse_BCQ_seed0"
        sweep.mkdir(parents=True)
        (sweep / "params.json").write_text(json.dumps({"task": "maze2d-umaze-sparse", "method": "BCQ", "seed": 0}))
        args = ["report", str(scratch / "sweep"), flag, bad]
    else:
        args = ["sweep", QUICK, flag, bad]
    problem = "is a file, not a directory" if bad.startswith("inside") else "is not writable"
    refused(args, f"{flag} ", problem, f"{flag}", roots=(scratch,))
    assert not ray.is_initialized(), "Ray was started before the check"


@pytest.mark.parametrize(("target", "problem"), [("missing-dir", "does not exist"),
                                                 ("a-file.json", "is a file, not a sweep directory")])
def test_report_needs_an_existing_directory(scratch: Path, target: str, problem: str) -> None:
    (scratch / "a-file.json").write_text("{}")
    refused(["report", str(scratch / target), "--out", str(scratch / "out")], problem, "give",
            roots=(scratch,))


def test_unusable_devices_are_refused(scratch: Path) -> None:
    import torch

    base = ["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--out", str(scratch / "run"),
            "--artifacts", str(scratch / "a")]
    refused([*base, "--set", "device=tpu9"], "device", "tpu9", "use cpu, cuda", roots=(scratch,))
    refused([*base, "--set", "precision=fp16"], "precision", "'fp32' or 'bf16'", "fix", roots=(scratch,))
    if not torch.cuda.is_available():
        refused([*base, "--set", "device=cuda"], "no usable CUDA GPU", "device=cpu", roots=(scratch,))


@pytest.mark.parametrize(("seeds", "needle"), [(0, "at least 1"), (-2, "at least 1"), ([], "non-empty"),
                                               ([0, -1], "seeds in [0, 4294967295]"), ([1, 1], "repeat a seed")])
def test_sweep_seed_counts_that_make_no_trial_are_refused(scratch: Path, seeds: object, needle: str) -> None:
    path = scratch / "seeds.yaml"
    path.write_text(yaml.safe_dump({"tasks": ["maze2d-umaze-sparse"], "methods": ["BCQ"], "seeds": seeds}))
    refused(["sweep", str(path), "--storage", str(scratch / "sweeps")], "seeds", needle, roots=(scratch,))


def test_unreachable_address_fails_within_seconds(scratch: Path) -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    refused(["sweep", QUICK, "--storage", str(scratch / "sweeps"), "--address", f"127.0.0.1:{port}"],
            f"no Ray cluster answers at --address 127.0.0.1:{port}", "ray start --head", roots=(scratch,))
    assert time.perf_counter() - started < 15
    refused(["sweep", QUICK, "--storage", str(scratch / "sweeps"), "--address", "headnode"], "not host:port",
            roots=(scratch,))


# --- hangs before -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_cpus", ["0", "-1"])
def test_num_cpus_below_one_is_refused(scratch: Path, num_cpus: str) -> None:
    refused(["sweep", QUICK, "--storage", str(scratch / "s"), "--num-cpus", num_cpus],
            f"--num-cpus {num_cpus}", "--num-cpus 1 or more", roots=(scratch,))
    refused(["sweep", QUICK, "--storage", str(scratch / "s"), "--num-cpus", "2", "--address", "127.0.0.1:1"],
            "--num-cpus 2 with --address", "drop --num-cpus", roots=(scratch,))


def test_trials_bigger_than_the_cluster_are_refused_or_fitted() -> None:
    two_cores = ClusterResources(total_cpu=2, total_gpu=0, max_node_cpu=2, max_node_gpu=0)
    notes: list[str] = []
    # The shipped tables (1 CPU + 2 rollout actors) on the README's 2-core machine: actors fitted to 0.
    for name in ("table1", "table2", "table3", "table4"):
        spec = load_sweep(TUNE_CONFIGS / f"{name}.yaml")
        assert spec.resources.cpu + spec.resources.rollout_workers > 2
        fitted = check_resources(spec, two_cores, local=True, log=notes.append)
        assert fitted.resources.rollout_workers == 0 and fitted.resources.cpu == spec.resources.cpu
    assert "rollout_workers set to 0" in notes[0] and "same buffer" in notes[0]
    quick = load_sweep(TUNE_CONFIGS / "quick.yaml")
    assert check_resources(quick, two_cores, local=True, log=notes.append) == quick
    big = quick.model_copy(update={"resources": quick.resources.model_copy(update={"cpu": 3.0})})
    with pytest.raises(PreflightError, match=r"resources.cpu = 3 .* largest node has 2") as info:
        check_resources(big, two_cores, local=True)
    assert "set resources.cpu to at most 2" in (info.value.hint or "")
    gpu = quick.model_copy(update={"resources": quick.resources.model_copy(update={"gpu": 1.0})})
    with pytest.raises(PreflightError, match=r"resources\.gpu = 1") as info:
        check_resources(gpu, two_cores, local=True)
    assert "resources.gpu: 0" in (info.value.hint or "")
    # A remote cluster may grow (autoscaler): warned with the setting to change, not refused.
    warnings: list[str] = []
    assert check_resources(gpu, two_cores, local=False, log=warnings.append) == gpu
    assert "autoscaler" in warnings[0] and "resources.gpu: 0" in warnings[0]


# --- accepted silently before -------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_config_values_are_refused(scratch: Path, value: str) -> None:
    refused(["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--set", f"bcq.learning_rate={value}",
             "--out", str(scratch / "run")], "bcq.learning_rate", "finite number", roots=(scratch,))
    path = scratch / "inf.yaml"
    path.write_text(f"tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\nresources: {{cpu: {value}}}\n")
    refused(["sweep", str(path), "--storage", str(scratch / "s")], "resources.cpu", "finite number",
            roots=(scratch,))


def test_a_diverging_run_stops_naming_the_step_and_loss(umaze_dataset: str, scratch: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from romi.agents.bcq import BCQ

    update = BCQ.update

    def diverge_at_40(self: BCQ, batch: object) -> dict[str, float]:
        metrics = update(self, batch)  # type: ignore[arg-type]
        return {**metrics, "critic_loss": math.nan} if self.step == 40 else metrics

    monkeypatch.setattr(BCQ, "update", diverge_at_40)
    run = scratch / "run"
    result = runner.invoke(app, ["train", "--task", umaze_dataset, "--method", "BCQ", *TINY, "--out", str(run),
                                 "--artifacts", str(scratch / "a")], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "diverged at gradient step 40: loss critic_loss = nan" in text and "fix: lower the learning rate" in text
    assert "done" not in text and not (run / "summary.json").exists(), "no score from a diverged policy"
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in evaluations.jsonl"))["step"]
            for line in lines] == [30]


def _truncated_copy(umaze_dataset: str, store: Path) -> None:
    """The session's umaze dataset copied to `store` with its data file cut in half."""
    source = dataset_dir(TASKS[umaze_dataset].local_id)
    relative = source.relative_to(datasets_root())
    shutil.copytree(datasets_root() / relative.parts[0], store / relative.parts[0])
    data = store / relative / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def test_truncated_dataset_fails_data_info_and_the_sweep_preflight(umaze_dataset: str, scratch: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    store = scratch / "store"
    _truncated_copy(umaze_dataset, store)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    fix = f"romi data make {umaze_dataset} --overwrite"
    refused(["data", "info", umaze_dataset], "corrupt or truncated", fix, roots=(scratch,))
    text = refused(["sweep", QUICK, "--storage", str(scratch / "sweeps")], "1 of 1 datasets are damaged",
                   "corrupt or truncated", fix, roots=(scratch,))
    assert "--resume" not in text
    assert not ray.is_initialized()


def test_data_info_checks_a_good_dataset(umaze_dataset: str) -> None:
    result = runner.invoke(app, ["data", "info", umaze_dataset], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "checked: 3,000 finite transitions" in result.output


def test_an_existing_sweep_needs_resume_or_overwrite(scratch: Path) -> None:
    trial = scratch / "sweeps" / "quick" / "maze2d-umaze-sparse_BCQ_seed0"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    (trial / "result.json").write_text('{"step": 10000}\n')
    refused(["sweep", QUICK, "--storage", str(scratch / "sweeps")], "sweep 'quick' already exists",
            "--resume to continue", "--overwrite", roots=(scratch,))
    refused(["sweep", QUICK, "--storage", str(scratch / "sweeps"), "--resume", "--overwrite"],
            "contradict", roots=(scratch,))


def test_a_failed_train_writes_nothing(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(scratch / "empty-store"))
    args = ["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", *TINY, "--out", str(scratch / "run"),
            "--artifacts", str(scratch / "artifacts")]
    refused(args, "no dataset for task 'maze2d-umaze-sparse'", "romi data make maze2d-umaze-sparse",
            roots=(scratch,))
    assert not (scratch / "run").exists(), "a config.json left here would refuse the corrected command"


# --- misleading messages before ---------------------------------------------------------------


def test_yaml_syntax_errors_are_shown_whole_with_a_fix(scratch: Path) -> None:
    path = scratch / "broken.yaml"
    path.write_text("tasks: [maze2d-umaze-sparse\nmethods: [BCQ]\n")
    refused(["sweep", str(path), "--storage", str(scratch / "s")], "not valid YAML", "expected ',' or ']'",
            "fix the YAML syntax", roots=(scratch,))


@pytest.mark.parametrize(("text", "valid", "invalid"), [
    ("resources: {cpus: 2}", "cpu, gpu, rollout_workers", "tasks"),
    ("overrides: {bcq: {batchsize: 3}}", "actor_hidden", "tasks"),
])
def test_a_nested_key_typo_lists_the_keys_of_its_own_level(scratch: Path, text: str, valid: str,
                                                           invalid: str) -> None:
    path = scratch / "typo.yaml"
    path.write_text(f"tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\n{text}\n")
    message = refused(["sweep", str(path), "--storage", str(scratch / "s")], "unknown key", valid,
                      roots=(scratch,))
    assert f"valid keys here: {invalid}" not in message


def test_train_ctrl_c_says_that_rerunning_resumes(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import romi.train

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(romi.train, "train_run", interrupted)
    result = runner.invoke(app, ["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ",
                                 "--out", str(scratch / "run")], env={"COLUMNS": "300"})
    assert result.exit_code == 130
    assert "rerun the same command to resume" in " ".join(result.output.split())


@pytest.mark.parametrize(("make", "needles"), [
    (lambda root: root / "missing", ("exported trials directory", "does not exist", "romi export --out")),
    (lambda root: _file(root / "a-file"), ("is a file, not a directory",)),
    (lambda root: _foreign_export(root), ("run with another config", "model_share: 0.5 -> 0.7", "move that")),
])
def test_sweep_exported_directories_that_cannot_be_used_are_refused(scratch: Path, make, needles) -> None:
    import ray

    exported = make(scratch)
    refused(["sweep", "reduced", "--storage", str(scratch / "sweeps"), "--exported", str(exported)], *needles,
            roots=(scratch,))
    assert not ray.is_initialized(), "Ray was started before the check"


def _file(path: Path) -> Path:
    path.write_text("not a directory")
    return path


def _foreign_export(root: Path) -> Path:
    """The reduced sweep's ROMI-BCQ seed 0, exported from a run with another model share."""
    config = build_run_config("maze2d-umaze-sparse", "ROMI-BCQ", 0, "reduced", {"model_share": 0.5})
    folder = root / "kept" / "maze2d-umaze-sparse_ROMI-BCQ_seed0"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config.to_json())
    (folder / "summary.json").write_text(json.dumps({"steps": 100_000}))
    return root / "kept"


def test_export_of_a_sweep_with_a_corrupt_manifest_is_refused_and_writes_nothing(scratch: Path) -> None:
    sweep = scratch / "sweep"
    sweep.mkdir()
    (sweep / "romi_sweep.json").write_text('{"spec": ')  # cut short
    out = scratch / "kept"
    refused(["export", str(sweep), "--out", str(out)], "manifest", "is corrupt", "move it away",
            roots=(scratch,))
    assert not out.exists()


# --- a busy machine -------------------------------------------------------------------------------


def test_train_runs_on_the_threads_it_is_given_and_says_so(umaze_dataset: str, scratch: Path) -> None:
    """One thread by default (more than the free cores wait on each other); the run's log line names it."""
    import torch

    previous = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["train", "--task", umaze_dataset, "--method", "BCQ", *TINY, "--out",
                                     str(scratch / "run"), "--artifacts", str(scratch / "a")], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        assert "compute: 1 torch thread(s)" in " ".join(result.output.split())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    for command in (["train", "--task", umaze_dataset, "--method", "BCQ"], ["imagine", umaze_dataset],
                    ["data", "make", umaze_dataset]):
        result = runner.invoke(app, [*command, "--threads", "0"], env={"COLUMNS": "300"})
        assert result.exit_code == 2 and "--threads" in result.output, result.output


# --- sizes and numbers that cannot work -----------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--seed", str(2**64)], "--seed"),
    (["data", "make", "maze2d-umaze-sparse", "--seed", str(2**32)], "--seed"),
    (["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--set", "bcq.actor_hidden=[0]"], "actor_hidden"),
    (["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", "--set", "bcq.critic_hidden=[]"], "critic_hidden"),
    (["train", "--task", "maze2d-umaze-sparse", "--method", "CQL", "--set", "cql.hidden=[64,-1]"], "hidden"),
    (["sweep", QUICK, "--max-concurrent", "0"], "--max-concurrent"),
    (["sweep", QUICK, "--max-concurrent", "-3"], "--max-concurrent"),
    (["report", "runs/sweeps/quick", "--last-k", "0"], "--last-k"),
    (["report", "runs/sweeps/quick", "--last-k", "-1"], "--last-k"),
])
def test_numbers_that_cannot_work_are_refused_up_front(scratch: Path, args: list[str], needle: str) -> None:
    before = snapshot(scratch)
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()) and "Traceback" not in result.output
    assert snapshot(scratch) == before


def test_report_refuses_a_last_k_no_trial_has(scratch: Path) -> None:
    sweep = scratch / "sweep" / "maze2d-umaze-sparse_BCQ_seed0"
    sweep.mkdir(parents=True)
    (sweep / "params.json").write_text(json.dumps({"task": "maze2d-umaze-sparse", "method": "BCQ", "seed": 0,
                                                   "profile": "quick", "overrides": {}}))
    (sweep / "result.json").write_text("".join(json.dumps(
        {"step": step, "score": 1.0, "score_local": 1.0, "done_fraction": step / 3}) + "\n" for step in (1, 2, 3)))
    refused(["report", str(scratch / "sweep"), "--last-k", "50", "--out", str(scratch / "out")],
            "--last-k 50", "at most 3", "--last-k 3 or less", roots=(scratch,))


@pytest.mark.parametrize(("text", "needle"), [
    ("tasks: [maze2d-umaze-sparse, maze2d-umaze-sparse]\nmethods: [BCQ]\n",
     "maze2d-umaze-sparse listed more than once"),
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ, ROMI-BCQ, BCQ]\n", "BCQ listed more than once"),
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\nseeds: 3\nseeds: [0]\n", "'seeds' appears twice"),
    ("tasks: [maze2d-umaze-sparse]\nmethods: [BCQ]\nseeds: [0, 4294967296]\n", "seeds in [0, 4294967295]"),
])
def test_sweep_files_that_say_a_thing_twice_are_refused(scratch: Path, text: str, needle: str) -> None:
    path = scratch / "twice.yaml"
    path.write_text(text)
    refused(["sweep", str(path), "--plan"], needle, roots=(scratch,))


@pytest.mark.parametrize("refs", [{"ref_min_score": 5.0, "ref_max_score": 5.0}, {"ref_max_score": None},
                                  {"ref_max_score": "NaN"}, {"ref_min_score": "missing"}])
def test_a_dataset_whose_refs_cannot_normalise_is_refused_by_info_and_train(
        umaze_dataset: str, scratch: Path, monkeypatch: pytest.MonkeyPatch, refs: dict[str, object]) -> None:
    """Equal, null, NaN or missing reference returns: no score could be normalised with them."""
    store = scratch / "store"
    source = dataset_dir(TASKS[umaze_dataset].local_id)
    relative = source.relative_to(datasets_root())
    shutil.copytree(source, store / relative)
    meta_path = store / relative / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for key, value in refs.items():
        if value == "missing":
            meta.pop(key)
        else:
            meta[key] = value
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    refused(["data", "info", umaze_dataset], "reference scores", "romi data make", roots=(store,))
    refused(["train", "--task", umaze_dataset, "--method", "BCQ", *TINY, "--out", str(scratch / "run")],
            "reference scores", roots=(store,))
    assert not (scratch / "run").exists()


def test_a_minari_store_that_is_a_file_is_named_at_once(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = scratch / "store.txt"
    store.write_text("not a directory")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    for args in (["data", "list"], ["data", "make", "maze2d-umaze-sparse", "--steps", "100"],
                 ["train", "--task", "maze2d-umaze-sparse", "--method", "BCQ", *TINY, "--out", str(scratch / "r")]):
        refused(args, "is a file, not a directory", "MINARI_DATASETS_PATH", roots=(scratch,))


def test_a_dataset_too_small_for_a_model_is_named_before_any_learning(scratch: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`data make --steps 1` makes a valid one-step dataset; a ROMI run on it says why it cannot fit a model."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(scratch / "store"))
    made = runner.invoke(app, ["data", "make", "maze2d-umaze-sparse", "--steps", "1", "--ref-episodes", "1"])
    assert made.exit_code == 0, made.output
    refused(["train", "--task", "maze2d-umaze-sparse", "--method", "ROMI-BCQ", *TINY, "--out", str(scratch / "run"),
             "--artifacts", str(scratch / "a")], "at least 2", "romi data make", roots=(scratch / "store",))


# --- two writers at once ---------------------------------------------------------------------------


def test_a_second_writer_of_a_run_directory_or_a_dataset_is_refused_with_its_holder(
        umaze_dataset: str, scratch: Path) -> None:
    from romi.locks import exclusive

    run = scratch / "run"
    with exclusive(run, f"run directory {run}"):  # as a first `romi train --out run` would hold it
        text = refused(["train", "--task", umaze_dataset, "--method", "BCQ", *TINY, "--out", str(run),
                        "--artifacts", str(scratch / "a")], "is being written by another romi process", "pid",
                       roots=(scratch,))
        assert "wait for it to finish" in text
    target = dataset_dir(TASKS[umaze_dataset].local_id)
    with exclusive(target, "dataset"):
        refused(["data", "make", umaze_dataset, "--steps", "100", "--overwrite"], "being written", roots=(scratch,))


def test_a_lock_left_by_a_killed_writer_is_recognised_as_stale(scratch: Path) -> None:
    import signal
    import subprocess
    import sys

    from romi.locks import exclusive

    target = scratch / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from romi.locks import exclusive\n"
        f"with exclusive(Path({str(target)!r}), 'x'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="being written"), exclusive(target, "run directory"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive(target, "run directory"):  # the killed holder's lock went with it
        pass


def test_a_model_buffer_that_cannot_fit_in_memory_is_refused_before_any_model_trains(umaze_dataset: str,
                                                                                      scratch: Path) -> None:
    text = refused(["train", "--task", umaze_dataset, "--method", "ROMI-BCQ", *TINY, "--set",
                    "imagination.buffer_size=20000000000", "--out", str(scratch / "run"),
                    "--artifacts", str(scratch / "a")],
                   "20,000,000,000 transitions needs about", "GB available", "lower imagination.buffer_size",
                   roots=(scratch,))
    assert "dynamics" not in text, "refused before the dynamics model trains"


# --- a full disk -----------------------------------------------------------------------------------


def _disk_with(free: int):
    """A `shutil.disk_usage` whose every disk has `free` bytes left."""
    real = shutil.disk_usage

    def usage(path):
        total, used, _ = real(path)
        return type(real(path))(total, used, free)

    return usage


@pytest.mark.parametrize("args", [
    ["data", "make", "maze2d-umaze-sparse", "--steps", "100000", "--overwrite"],
    ["train", "--task", "maze2d-umaze-sparse", "--method", "ROMI-BCQ", "--profile", "quick"],
    ["sweep", QUICK, "--storage", "runs/sweeps"],
])
def test_a_disk_too_small_for_what_a_command_writes_is_refused_up_front(
        umaze_dataset: str, scratch: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(shutil, "disk_usage", _disk_with(1_000_000))  # 1 MB left everywhere
    text = refused(args, "needs about", "MB free", "free space there", roots=(scratch, datasets_root()))
    assert "Traceback" not in text


def test_a_write_that_runs_out_of_space_is_one_romi_error_and_leaves_nothing(
        umaze_dataset: str, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import minari
    import torch

    def full_disk_save(obj, handle, *args, **kwargs):
        handle.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed (No space left on device)")

    monkeypatch.setattr(torch, "save", full_disk_save)
    run = scratch / "run"
    refused(["train", "--task", umaze_dataset, "--method", "BCQ", *TINY, "--out", str(run), "--artifacts",
             str(scratch / "a")], "no space left on the disk of", "run.pt", roots=())
    assert not list(run.glob(".*.tmp")), "the partial checkpoint is removed"
    monkeypatch.undo()

    def full_disk_create(**kwargs):
        part = Path(datasets_root()) / kwargs["dataset_id"] / "data"
        part.mkdir(parents=True)
        (part / "main_data.hdf5").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", full_disk_create)
    before = snapshot(datasets_root().parent)
    refused(["data", "make", "maze2d-umaze-sparse", "--steps", "300", "--recipe", "minari",
             "--ref-episodes", "1"], "no space left while writing dataset", "partial copy is removed", roots=())
    assert snapshot(datasets_root().parent) == before, "no staging directory is left"


def test_a_sweep_trial_that_failed_for_lack_of_space_gets_one_line_with_the_fix() -> None:
    from types import SimpleNamespace

    from romi.tune.sweep import trial_statuses

    spec = load_sweep(QUICK)
    config = spec.trial_configs()[0]
    error = RuntimeError("ray::romi_trainable() ... romi.io.DiskFullError: no space left on the disk of "
                         "/s/quick/.../run.pt while writing it")
    grid = [SimpleNamespace(config=config.model_dump() | {"overrides": {}}, error=error, metrics={"step": 2500})]
    rows = {(r.method, r.seed): r for r in trial_statuses(spec, grid)}
    failed = rows[(config.method, config.seed)]
    assert failed.status == "failed" and "free space there" in failed.reason and "--resume" in failed.reason
    assert all(not r.reason for key, r in rows.items() if key != (config.method, config.seed))
