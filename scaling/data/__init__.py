"""Data: byte tokenizer, the built-in KJV corpus (TFDS, array_record), step-indexed batches."""
from scaling.data.batches import TokenBatches, data_dir, load_documents
from scaling.data.tokenizer import ByteTokenizer, get_tokenizer

__all__ = ["ByteTokenizer", "get_tokenizer", "TokenBatches", "load_documents", "data_dir"]
