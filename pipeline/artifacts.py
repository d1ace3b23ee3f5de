"""Fitted-model artifacts and the context a model stage runs in.

Layout: <paths.models>/<stage>/<version>/model.pkl + metadata.json, where the version starts
with the training as-of date (so versions sort by time) and ends with the config hash the model
was trained under. A version is written to a temporary folder and renamed into place, so a
killed run never leaves half an artifact. Models are read back only by this pipeline (pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any


def settings_hash(artifact_format: int, *settings: Any) -> str:
    """What a saved model depends on, as 12 hex digits: its stage's artifact format (bumped when
    the saved object changes shape) and the settings it was trained under (pydantic blocks or
    plain JSON values). An artifact is reused only under the same hash."""
    payload = json.dumps(
        [
            artifact_format,
            *(s.model_dump(mode="json") if hasattr(s, "model_dump") else s for s in settings),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Artifact:
    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def trained_on(self) -> date:
        return date.fromisoformat(self.metadata["trained_on"])

    def load(self) -> Any:
        with (self.path / "model.pkl").open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 - our own artifact


class ArtifactStore:
    def __init__(self, folder: Path):
        self.folder = folder

    def versions(self) -> list[Artifact]:
        if not self.folder.is_dir():
            return []
        found = []
        for meta in sorted(self.folder.glob("*/metadata.json")):
            found.append(Artifact(meta.parent.name, meta.parent, json.loads(meta.read_text())))
        return found

    def latest(self, on_or_before: date, config_hash: str | None = None) -> Artifact | None:
        """The newest artifact trained on or before the date (and under that config, if given)."""
        usable = [
            a
            for a in self.versions()
            if a.trained_on <= on_or_before
            and (config_hash is None or a.metadata.get("config_hash") == config_hash)
        ]
        return max(usable, key=lambda a: (a.trained_on, a.version)) if usable else None

    def reusable(self, as_of: date, config_hash: str, retrain_every_days: int) -> Artifact | None:
        """The artifact to reuse on `as_of`: the newest trained under `config_hash` fewer than
        retrain_every_days before it; None when the model is due to be (re)trained."""
        artifact = self.latest(on_or_before=as_of, config_hash=config_hash)
        if artifact is None or (as_of - artifact.trained_on).days >= retrain_every_days:
            return None
        return artifact

    def save(self, version: str, model: Any, metadata: dict[str, Any]) -> Artifact:
        target = self.folder / version
        temporary = self.folder / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        with (temporary / "model.pkl").open("wb") as handle:
            pickle.dump(model, handle, protocol=5)
        (temporary / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
        return Artifact(version, target, metadata)


@dataclass(frozen=True)
class StageContext:
    """What a model stage gets besides its inputs: where its artifacts live and how to speak."""

    stage: str
    run_id: str
    artifacts: ArtifactStore
    warn: Callable[[str], Any]
    info: Callable[[str], Any]
    config_hash: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # recorded in the run manifest
