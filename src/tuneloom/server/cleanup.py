"""What deleting an object leaves behind: its files, and its loaded model in the inference cache."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import Request

from tuneloom.store.artifacts import MODEL_VERSIONS, Artifacts
from tuneloom.store.shared import ArtifactStoreError

log = logging.getLogger("tuneloom.server")


def remove_artifacts(request: Request, paths: Iterable[str]) -> None:
    """Delete the data-dir paths a store delete returned; a deleted version is never served from memory."""
    state = request.app.state
    service = getattr(state, "inference", None)
    for path in paths:
        folder, _, name = path.partition("/")
        if service is not None and folder == MODEL_VERSIONS:
            service.cache.discard(name)
        _remove(state.context.artifacts, path)


def _remove(artifacts: Artifacts, path: str) -> None:
    """Here, and on the shared store when there is one (an orphan left there is logged, not a failed delete)."""
    if artifacts.shared is None:
        artifacts.remove(path)
        return
    try:
        artifacts.shared.remove(path)
    except ArtifactStoreError as err:
        log.warning("deleted, but left on the shared store: %s", err.message)
