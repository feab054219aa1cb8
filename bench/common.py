"""Helpers every benchmark shares: describe the machine, write a result file, print a table.

A figure without the machine, the library versions and the command that produced it cannot be
compared with anything, so every result JSON carries all three.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# BENCH_RESULTS redirects every result file (bench/gpu.sh points it at the device tool's $OUT).
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
# --model choices of the model benchmarks → tuneloom template ids. The random shapes (bench.random_models)
# use the SmolLM2 template's LoRA and trainer settings with their own base model folder.
MODEL_TEMPLATES = {
    "smollm2": "smollm2-135m-instruct-lora",
    "tiny-random": "tiny-random",
    "smollm2-135m-random": "smollm2-135m-instruct-lora",
    "llama-1.1b-random": "smollm2-135m-instruct-lora",
}
DEFAULT_LIBRARIES = ("tuneloom", "torch", "transformers", "peft", "tokenizers", "numpy", "rich")


def cpu_name() -> str:
    """The CPU model as the OS reports it (Linux /proc/cpuinfo, else `platform`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    """The GPU's name when there is one, else the CPU's."""
    import torch

    return torch.cuda.get_device_name() if cuda() else cpu_name()


def device_tag() -> str:
    """Short name for result files: `cpu`, or the card (`h100`, `h200`, else `cuda`)."""
    from bench.random_models import card_for

    if not cuda():
        return "cpu"
    card = card_for(device_name())
    return card.name.lower() if card else "cuda"


def model_dir(choice: str) -> Path:
    """Where a random-shape model is built (once per machine; `-tiny` under BENCH_TINY)."""
    from bench.random_models import tiny

    root = Path(os.environ.get("BENCH_MODELS", Path.home() / ".cache" / "tuneloom" / "bench-models"))
    return root.expanduser() / (choice + ("-tiny" if tiny() else ""))


def model_settings(choice: str) -> dict[str, Any]:
    """Settings overrides for a --model choice: random shapes read their built folder; a GPU computes in bf16."""
    from bench.random_models import SHAPES, build

    model: dict[str, Any] = {"torch_dtype": "auto"} if cuda() else {}  # auto = bf16 on a GPU
    if choice in SHAPES:
        model["pretrained_model_name_or_path"] = str(build(choice, model_dir(choice)))
    trainer = {"bf16": True} if cuda() else {}
    return {k: v for k, v in (("model_config", model), ("trainer_config", trainer)) if v}


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        **({"device": device_name()} if "torch" in sys.modules else {}),  # never import torch just for this
    }


def library_versions(names: Iterable[str] = DEFAULT_LIBRARIES) -> dict[str, str]:
    """Installed versions (distribution metadata, so nothing heavy gets imported)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def command_line() -> str:
    """How to rerun this exact measurement."""
    return shlex.join([Path(sys.executable).name, "-m", _module_name(), *sys.argv[1:]])


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def write_result(
    path: Path,
    *,
    benchmark: str,
    figures: Mapping[str, Any],
    device: str = "cpu",
    libraries: Iterable[str] = DEFAULT_LIBRARIES,
    notes: str = "",
) -> Path:
    """Write the result JSON atomically (a half-written file is never left behind)."""
    payload = {
        "benchmark": benchmark,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": device,
        "machine": machine_info(),
        "versions": library_versions(libraries),
        "command": command_line(),
        "figures": dict(figures),
        **({"notes": notes} if notes else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A small rich table; numbers are right-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or logged: do not squeeze the columns to 80 characters
    console.print(table)
