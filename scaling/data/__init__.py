"""Data: tokenizers, sources (kjv, TFDS, files), the sharded token store, step-indexed batches.

Names are imported on first use (PEP 562), so a token-store worker process that imports
`scaling.data.store` does not pay for grain (batches) or TFDS.
"""
import importlib

_EXPORTS = {"TokenBatches": "batches", "load_documents": "sources", "data_dir": "sources",
            "load_tokens": "store", "prepare": "store", "tokenizer_for": "store",
            "ByteTokenizer": "tokenizer", "get_tokenizer": "tokenizer"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scaling.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"scaling.data.{_EXPORTS[name]}"), name)
