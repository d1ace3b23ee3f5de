"""Correctness does not depend on the engine's resources: a run on one thread under a small
DuckDB memory limit (so large operators spill to disk) publishes the same tables as the
default run. Speed and memory are measured by `make bench`, never here."""

from __future__ import annotations

import duckdb

from pipeline.registry import STAGES
from pipeline.runner import run_stages
from tests.conftest import quiet


def test_a_run_under_a_small_memory_limit_publishes_the_same_tables(
    tmp_path, small_bank, monkeypatch
):
    """One thread, a 192MB memory limit, and scoring and day windows in batches of 97
    customers (one batch of 600 by default) publish the same tables."""
    monkeypatch.setattr("transforms.snapshots.SCORING_BATCH_ROWS", 97)
    monkeypatch.setattr("transforms.day_windows.SLICE_CUSTOMERS", 97)
    bank, _, _ = small_bank
    paths = bank.paths.model_copy(
        update={
            "staging": tmp_path / "staging",
            "warehouse": tmp_path / "warehouse",
            "models": tmp_path / "models",
            "temp": tmp_path / "tmp",
        }
    )
    engine = bank.engine.model_copy(update={"threads": 1, "memory_limit": "192MB"})
    constrained = bank.model_copy(update={"paths": paths, "engine": engine})
    run_stages(constrained, bank.generate.end_on, list(STAGES), quiet())

    published = sorted(
        p.relative_to(bank.paths.warehouse)
        for p in bank.paths.warehouse.glob("*/as_of=*/*.parquet")
        if p.parts[-3] != "run_manifests"
    )
    assert len(published) > 20
    with duckdb.connect() as con:
        for relative in published:
            ours, theirs = bank.paths.warehouse / relative, paths.warehouse / relative
            assert theirs.exists(), relative
            differing = con.execute(
                f"select count(*) from ((from '{ours}' except all from '{theirs}') "
                f"union all (from '{theirs}' except all from '{ours}'))"
            ).fetchall()[0][0]
            assert differing == 0, f"{relative}: {differing} rows differ"


def test_generating_in_worker_processes_writes_the_same_files(tmp_path):
    """Chunks simulated side by side (workers=2) give the same bytes as one after another."""
    import hashlib

    from pipeline.generate import generate_bank
    from tests.conftest import config_for, small_generate

    digests = {}
    for workers in (1, 2):
        root = tmp_path / f"workers_{workers}"
        config = small_generate(
            config_for(root), customers=2_500, workers=workers, file_format="parquet"
        )
        generate_bank(config)
        digests[workers] = {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("landing", "ground_truth")
            for p in sorted((root / folder).rglob("*.*"))
        }
    assert len(digests[1]) > 10
    assert digests[1] == digests[2]
