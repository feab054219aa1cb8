"""The server limits' defaults, apart from `limits.py` so that the CLI can show them in `--help`
without importing FastAPI and the store (about half a second on every `tuneloom` command)."""

DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_MAX_GENERATIONS_PER_KEY = 4
DEFAULT_MAX_BATCH_TOKENS = 65_536  # e.g. 128 inputs × 512 tokens, or 16 × 4,096; ~3 GiB of KV cache for SmolLM2
DEFAULT_UPLOAD_IDLE_S = 60.0  # the longest an upload may send nothing before it is dropped (408)
DEFAULT_EXPORTS_CACHE_BYTES = 20 * 1024**3  # built downloads kept: a 7B merged (~14 GB) and its q8_0 GGUF (~7 GB)
