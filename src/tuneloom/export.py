"""Export a model version as a standard Hugging Face folder that plain `transformers` loads.

`--merged` folds the LoRA update into the base weights (W + BA) and writes a full model; without it
the adapter is written alone (peft format, loadable with `PeftModel.from_pretrained`). Either way the
tokenizer and a generation config whose EOS is the one the model was trained to emit come along,
so `model.generate` stops where tuneloom would, and a README.md model card that says which of the two
the folder holds and how to load it. `--gguf` writes one GGUF file instead, for llama.cpp and Ollama
(`tuneloom.export_gguf`), with an Ollama Modelfile beside it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple

from tuneloom.errors import ModelVersionError
from tuneloom.generate.loading import load_for_inference
from tuneloom.model_version import ModelVersion, make_folder, open_version


class Exported(NamedTuple):
    path: Path
    holds: str  # "adapter", "merged model" (an adapter folded into its base), "model" (full fine-tune) or "GGUF"


GGUF_FILE = "model.gguf"


def export_version(version_dir: Path, out: Path, *, merged: bool = False, gguf_type: str | None = None) -> Exported:
    """`gguf_type` (one of `export_gguf.GGUF_TYPES`): a GGUF file of the merged weights, not a Hugging Face folder."""
    version = open_version(version_dir)
    if out.exists():
        raise ModelVersionError(f"{out} already exists; choose another folder.")
    make_folder(out.parent, f"cannot export to {out}")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp) / "export"
        full_weights = merged or not version.is_adapter
        if gguf_type is not None:
            _write_gguf_folder(version, staging, gguf_type, out.name)
            staging.rename(out)
            return Exported(out, "GGUF")
        if full_weights:
            loaded = load_for_inference(version_dir, as_stored=True)  # adapters are merged on load
            loaded.model.save_pretrained(staging)
            loaded.model.generation_config.save_pretrained(staging)
            loaded.tokenizer.save_pretrained(staging)
        else:
            shutil.copytree(version.weights_dir, staging)
            shutil.copytree(version.path / "tokenizer", staging, dirs_exist_ok=True)
            _name_the_base(staging / "adapter_config.json", _base_model(version))
        (staging / "tuneloom_prompt_format.json").write_text(json.dumps(version.prompt_format, indent=2))
        (staging / "README.md").write_text(model_card(version, out.name, full_weights=full_weights), encoding="utf-8")
        staging.rename(out)
    if not full_weights:
        return Exported(out, "adapter")
    return Exported(out, "merged model" if version.is_adapter else "model")


def _write_gguf_folder(version: ModelVersion, staging: Path, gguf_type: str, name: str) -> None:
    from tuneloom.export_gguf import ollama_modelfile, write_gguf
    from tuneloom.generate.loading import load_version

    loaded = load_version(version, as_stored=True)  # adapters are merged on load
    staging.mkdir()
    write_gguf(loaded, staging / GGUF_FILE, gguf_type=gguf_type, name=name)
    (staging / "Modelfile").write_text(ollama_modelfile(loaded.prompt_format, GGUF_FILE), encoding="utf-8")
    (staging / "tuneloom_prompt_format.json").write_text(json.dumps(version.prompt_format, indent=2))
    (staging / "README.md").write_text(gguf_card(version, name, gguf_type), encoding="utf-8")


def gguf_card(version: ModelVersion, folder: str, gguf_type: str) -> str:
    """The README.md of a GGUF export: what the file holds and how llama.cpp and Ollama run it in its prompt format."""
    base = _base_model(version)
    prompt = textwrap.indent(str(version.prompt_format.get("template", "{prompt}")), "    ")
    return "\n".join(
        [
            *_card_head(base, "gguf", ["tuneloom", "gguf"], folder),
            f"A fine-tune of `{base}` made with tuneloom (template `{version.template}`), as one GGUF file "
            f"(`{GGUF_FILE}`, weights in {gguf_type.upper()}; a LoRA update is merged in).",
            "",
            "## Run it",
            "",
            "```bash",
            f'ollama create {folder} -f Modelfile && ollama run {folder} "your text"',
            f"llama-server -m {GGUF_FILE} --jinja   # /v1/chat/completions applies the prompt format below",
            "```",
            "",
            "## Prompt format",
            "",
            "The file's chat template and the Modelfile's TEMPLATE put a user message where `{prompt}` stands, "
            "as tuneloom does (the chat template puts earlier turns in the format's sections, as tuneloom's chat "
            "endpoint does); stop at `###` and at the end-of-sequence token.",
            "",
            prompt,
            "",
        ]
    )


def _card_head(base: str, library: str, tags: list[str], folder: str) -> list[str]:
    """A model card's metadata block (what the Hugging Face Hub reads) and title."""
    lines = ["---", f"base_model: {json.dumps(base)}", f"library_name: {library}", "pipeline_tag: text-generation"]
    return [*lines, "tags:", *(f"- {tag}" for tag in tags), "---", "", f"# {folder}", ""]


def _base_model(version: ModelVersion) -> str:
    return str(version.manifest.get("base_model") or version.template)


def _name_the_base(adapter_config: Path, base: str) -> None:
    """peft records the folder the base was loaded from: a cache path on the training machine. The export
    names the model the version was trained from instead, so `AutoPeftModelForCausalLM` finds it anywhere."""
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_card(version: ModelVersion, folder: str, *, full_weights: bool) -> str:
    """The README.md of an exported folder, adapter or full weights alike.

    The adapter export only carried peft's blank template (its base_model a path on the training
    machine) and a merged export had no card at all; one card for both says what the weights are,
    how plain `transformers` loads them and which prompt they expect.
    """
    base = _base_model(version)
    tags = ["tuneloom", "lora"] + (["merged"] if full_weights and version.is_adapter else [])
    library = "transformers" if full_weights else "peft"
    prompt = textwrap.indent(str(version.prompt_format.get("template", "{prompt}")), "    ")
    lines = _card_head(base, library, tags, folder)
    lines += [
        f"A fine-tune of `{base}` made with tuneloom (template `{version.template}`). "
        + _what_the_weights_are(version, full_weights),
        "",
    ]
    lines += ["## Load it", "", "```python", *_load_snippet(folder, base, full_weights), "```", ""]
    lines += [
        "## Prompt format",
        "",
        "Put the input where `{prompt}` stands (the same format is in "
        "`tuneloom_prompt_format.json`); `model.generate` stops at the end-of-sequence token "
        "the model was trained to emit.",
        "",
        prompt,
        "",
    ]
    return "\n".join(lines)


def _what_the_weights_are(version: ModelVersion, full_weights: bool) -> str:
    if not full_weights:
        return "This folder holds the LoRA adapter alone (peft format); it loads on top of the base model."
    if version.is_adapter:
        return (
            "These are merged weights: the LoRA update is folded into the base model's weights, "
            "so plain `transformers` loads them as a full model, with no peft needed."
        )
    return "These are the full fine-tuned weights; plain `transformers` loads them as a full model."


def _load_snippet(folder: str, base: str, full_weights: bool) -> list[str]:
    """Python that loads the folder: `transformers` alone for full weights, peft on the base for an adapter."""
    model = (
        f'AutoModelForCausalLM.from_pretrained("{folder}")'
        if full_weights
        else f'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{folder}")'
    )
    imports = ["from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if not full_weights:
        imports.insert(0, "from peft import PeftModel")
    return [*imports, "", f'tokenizer = AutoTokenizer.from_pretrained("{folder}")', f"model = {model}"]
