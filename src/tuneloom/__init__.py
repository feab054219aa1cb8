"""tuneloom: fine-tune text-generation models on "###"-sectioned instruction data, self-hosted."""

__version__ = "0.1.0"
