"""Export a model version as a standard Hugging Face folder that plain `transformers` loads.

`--merged` folds the LoRA update into the base weights (W + BA) and writes a full model; without it
the adapter is written alone (peft format, loadable with `PeftModel.from_pretrained`). Either way the
tokenizer and a generation config whose EOS is the one the model was trained to emit come along,
so `model.generate` stops where tuneloom would.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from tuneloom.errors import ModelVersionError
from tuneloom.generate.loading import load_for_inference
from tuneloom.model_version import make_folder, open_version


def export_version(version_dir: Path, out: Path, *, merged: bool = False) -> Path:
    version = open_version(version_dir)
    if out.exists():
        raise ModelVersionError(f"{out} already exists; choose another folder.")
    make_folder(out.parent, f"cannot export to {out}")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp) / "export"
        if merged or not version.is_adapter:
            loaded = load_for_inference(version_dir)  # adapters are merged on load
            loaded.model.save_pretrained(staging)
            loaded.model.generation_config.save_pretrained(staging)
            loaded.tokenizer.save_pretrained(staging)
        else:
            shutil.copytree(version.weights_dir, staging)
            shutil.copytree(version.path / "tokenizer", staging, dirs_exist_ok=True)
        (staging / "tuneloom_prompt_format.json").write_text(json.dumps(version.prompt_format, indent=2))
        staging.rename(out)
    return out
