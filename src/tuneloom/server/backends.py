"""Which engine serves generation: transformers (always there), vLLM (an optional extra, GPU only),
or another server (`remote`: the generation nodes that advertise themselves in the database).

`tuneloom serve --backend auto|transformers|vllm|remote`. `auto` takes vLLM exactly when it imports
and a CUDA GPU is visible, else transformers; asking for `vllm` where it cannot run is a start-up
error that says what is missing and what to install, never a server that fails on its first
request. The routes depend only on `GenerationService`, which every backend provides.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tuneloom.errors import SettingsError, TuneloomError

if TYPE_CHECKING:
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.results import Prompt, TokenLogprob
    from tuneloom.server.inference import Prediction
    from tuneloom.store.db import Database

BACKENDS = ("auto", "transformers", "vllm", "remote")


class BackendUnavailableError(TuneloomError):
    code = "BACKEND_UNAVAILABLE"


class VersionCache(Protocol):
    def get(self, version_id: str, path: Path) -> Any: ...

    def discard(self, version_id: str) -> None: ...


class PieceStream(Protocol):
    """One streamed generation, whichever backend makes it: iterate for text pieces; afterwards the
    finish reason and token counts are set. `cancel()` (the client left) stops the generation.
    `chunks()`: each piece with the log-probabilities of the tokens since the previous one (if asked for)."""

    finish_reason: str | None
    tokens: int
    prompt_tokens: int

    def cancel(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[str]: ...

    def chunks(self) -> AsyncIterator[tuple[str, tuple[TokenLogprob, ...]]]: ...


class GenerationService(Protocol):
    """What the prediction routes call: `Inference`, `VllmInference` and `RemoteInference` are one each."""

    @property
    def cache(self) -> VersionCache: ...

    @property
    def generates_here(self) -> bool:
        """False where another server generates: this one then neither fetches nor loads the version."""
        ...

    async def predict(
        self,
        version_id: str,
        path: Path,
        texts: Sequence[Prompt],
        params: InferenceParams,
        *,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
    ) -> list[Prediction]:
        """`logprobs` (not None): each generated token's log-probability, with that many alternatives.
        `prompt_logprobs`: each prompt token's too (`Generation.prompt_logprobs`); the texts are then the prompts as
        sent, not rendered in the version's prompt format, and `params.max_tokens` may be 0 (nothing generated)."""
        ...

    async def stream(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, *, logprobs: int | None = None
    ) -> PieceStream: ...

    async def streams(
        self, version_id: str, path: Path, text: Prompt, params: InferenceParams, n: int, *, logprobs: int | None = None
    ) -> Sequence[PieceStream]:
        """`n` generations of `text`, streamed side by side (OpenAI's `n` choices): choice i samples with
        seed + i, as input i of a /predict does; cancelling one stops that one."""
        ...


Started = TypeVar("Started", bound=PieceStream)


async def start_each(starts: Iterable[Awaitable[Started]]) -> list[Started]:
    """Start `n` streams one after another (a backend that runs each on its own); one refused, those already
    started are cancelled, since no response will read them."""
    started: list[Started] = []
    try:
        for start in starts:
            started.append(await start)
    except BaseException:
        for stream in started:
            stream.cancel()
        raise
    return started


def refuse_logprobs(logprobs: int | None, backend: str) -> None:
    """A backend that streams no log-probabilities (vLLM's deltas are passed on as text only): asked for there,
    they are refused by name rather than answered without."""
    if logprobs is not None:
        raise SettingsError(
            f"'logprobs' is not supported when streaming on this server's --backend {backend}: send stream: false "
            "(or serve with --backend transformers), or leave logprobs out",
            key="logprobs",
        )


def vllm_missing() -> str | None:
    """Why vLLM cannot serve on this machine, or None when it can (it imports and CUDA is available)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    try:
        importlib.import_module("vllm")
    except Exception as err:  # a broken install: a CUDA/torch mismatch, a missing library…
        return f"vLLM is installed but does not import ({type(err).__name__}: {str(err)[:200]})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def choose_backend(requested: str, probe: Callable[[], str | None] = vllm_missing) -> str:
    """The backend to run: `requested`, with `auto` resolved; BackendUnavailableError for an impossible `vllm`."""
    if requested not in BACKENDS:
        raise BackendUnavailableError(f"--backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested in ("transformers", "remote"):
        return requested
    missing = probe()
    if requested == "auto":
        return "transformers" if missing else "vllm"
    if missing:
        from tuneloom.generate.vllm_engine import INSTALL_HINT, VLLM_REQUIREMENT  # torch: only to say this

        raise BackendUnavailableError(
            f"--backend vllm needs vLLM and an NVIDIA GPU, and here {missing}. On a machine with a CUDA GPU, "
            f"install it with `{INSTALL_HINT}` ({VLLM_REQUIREMENT}, which brings its own CUDA build of torch); "
            "or serve with --backend transformers (or auto)."
        )
    return "vllm"


def make_service(
    backend: str, cache_bytes: int, *, micro_batch: bool, db: Database, max_batch_tokens: int
) -> GenerationService:
    """The generation service for a chosen backend (vLLM's modules are imported only when it is chosen).

    A local service refuses a request above `max_batch_tokens` where it counts the prompts anyway;
    a remote one leaves that to the node, which applies its own `--max-batch-tokens`.
    """
    if backend == "remote":
        from tuneloom.server.remote_inference import RemoteInference

        return RemoteInference(db)
    if backend == "vllm":
        from tuneloom.server.vllm_inference import VllmInference

        return VllmInference(max_batch_tokens=max_batch_tokens)
    from tuneloom.server.inference import Inference

    return Inference(cache_bytes, micro_batch=micro_batch, max_batch_tokens=max_batch_tokens)
