"""What deleting an object leaves behind: its files, and its loaded model in the inference cache."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import Request

from tuneloom.store.artifacts import MODEL_VERSIONS
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
        try:
            state.context.artifacts.delete(path)
        except ArtifactStoreError as err:  # an orphan left on the shared store is logged, not a failed delete
            log.warning("deleted, but left on the shared store: %s", err.message)
