"""Write home-made datasets into the Minari store, atomically: into a staging directory beside the store,
renamed into place only when complete, so an interrupted `romi data make` never leaves a dataset
that looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from romi.data.minari_io import _META, dataset_dir, datasets_root
from romi.errors import DatasetExistsError
from romi.io import DiskFullError, _no_space, free_bytes


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari at another store for the duration (Minari reads the variable at call time)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def write_dataset(
    dataset_id: str,
    episodes: Sequence[Any],
    *,
    env_id: str,
    eval_env: Any,
    ref_min_score: float,
    ref_max_score: float,
    description: str,
    extra_metadata: dict[str, Any],
    overwrite: bool = False,
    algorithm_name: str = "romi",
) -> Path:
    """Write Minari `EpisodeBuffer`s as dataset `dataset_id`, atomically; returns its directory.

    The dataset is built in a staging store beside the real one and renamed into place only when
    complete, so an interrupted write leaves nothing under `dataset_id`; one that runs out of space says so
    (`DiskFullError`) and leaves nothing either.
    """
    final = dataset_dir(dataset_id)
    if final.exists() and not overwrite:
        raise DatasetExistsError(f"dataset {dataset_id!r} already exists at {final}", "pass --overwrite to replace it")
    staging_root = datasets_root().parent / f".romi-staging-{uuid.uuid4().hex[:12]}"
    try:
        _write(dataset_id, episodes, staging_root, final, env_id=env_id, eval_env=eval_env,
               ref_min_score=ref_min_score, ref_max_score=ref_max_score, description=description,
               extra_metadata=extra_metadata, overwrite=overwrite, algorithm_name=algorithm_name)
    except Exception as err:
        if not _no_space(err):
            raise
        raise DiskFullError(f"no space left while writing dataset {dataset_id!r} under {datasets_root()} (the "
                            f"partial copy is removed; {free_bytes(datasets_root().parent) / 1e6:,.0f} MB free now)",
                            "free space there, or point MINARI_DATASETS_PATH at a disk with room, then rerun") from None
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return final


def _write(dataset_id: str, episodes: Sequence[Any], staging_root: Path, final: Path, *, env_id: str, eval_env: Any,
           ref_min_score: float, ref_max_score: float, description: str, extra_metadata: dict[str, Any],
           overwrite: bool, algorithm_name: str) -> None:
    import minari

    with _minari_root(staging_root), warnings.catch_warnings():
        # Minari nags about author/e-mail/permalink; provenance is in our description and metadata.
        warnings.filterwarnings("ignore", message=r"`(code_permalink|author|author_email)` is set to None")
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=list(episodes),
            env=env_id,
            eval_env=eval_env,
            algorithm_name=algorithm_name,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            description=description,
            data_format="hdf5",
        )
    metadata_path = staging_root / dataset_id / "data" / _META
    metadata = json.loads(metadata_path.read_text())
    metadata.update(extra_metadata)
    metadata_path.write_text(json.dumps(metadata, default=str))
    final.parent.mkdir(parents=True, exist_ok=True)
    _ensure_namespace_metadata(dataset_id)
    if final.exists() and not overwrite:  # made meanwhile by someone who did not hold romi's lock
        raise DatasetExistsError(f"dataset {dataset_id!r} appeared at {final} while this one was being made",
                                 "pass --overwrite to replace it, or keep the one there")
    if final.exists():
        trash = final.with_name(final.name + f".old-{uuid.uuid4().hex[:8]}")
        final.rename(trash)
        (staging_root / dataset_id).rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        (staging_root / dataset_id).rename(final)


def _ensure_namespace_metadata(dataset_id: str) -> None:
    """Minari lists namespaces by their metadata file; create it as Minari would if missing."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is None:
        return
    with contextlib.suppress(ValueError):
        if namespace not in list_local_namespaces():
            create_namespace(namespace)
