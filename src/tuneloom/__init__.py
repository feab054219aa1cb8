"""tuneloom: fine-tune text-generation models on "###"-sectioned instruction data, self-hosted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneloom.client import Client, TuneloomAPIError

__version__ = "0.1.0"
__all__ = ["Client", "TuneloomAPIError", "__version__"]
_SDK = frozenset({"Client", "TuneloomAPIError"})


def __getattr__(name: str) -> Any:
    """`from tuneloom import Client` without making every `import tuneloom` (CLI, workers) load httpx."""
    if name in _SDK:
        from tuneloom import client

        return getattr(client, name)
    raise AttributeError(f"module 'tuneloom' has no attribute {name!r}")
