"""Tokenizers (`data.tokenizer`, grammar in `scaling.config.tokenizer_spec`). Nothing downloads.

    byte       ids 0..255 are the UTF-8 bytes of the text, 256 (EOS) ends a document
    bpe:V      a byte-level BPE of vocabulary V trained with Hugging Face `tokenizers` on the train
               split (`train_bpe`; cached as tokenizer.json by `scaling.data.store.tokenizer_for`)
    hf:PATH    any local Hugging Face tokenizer.json
    spm:PATH   a SentencePiece .model

Every tokenizer has `name`, `vocab_size`, `eos_id`, `fingerprint` (sha256 of what defines it),
`encode`, `encode_batch`, `decode` and `token_byte_lengths()`: the UTF-8 bytes of text each id
stands for, EOS counted as 1 byte (it stands for the document boundary), other specials 0. So
bits per byte = loss * tokens / bytes / ln 2 with bytes = sum of token_byte_lengths over the
targets, and for `byte` bpb == loss / ln 2 exactly. A tokenizer without an end-of-document token
gets one appended at id = its vocabulary size.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Iterator, Sequence

import numpy as np

from scaling.config import tokenizer_spec
from scaling.errors import UserError

EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>")
BPE_EOS = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as tokens plus one end-of-document token (`eos_id = 256`)."""

    name = "byte"
    eos_id = 256
    vocab_size = 257
    fingerprint = hashlib.sha256(b"byte-tokenizer-v1: utf-8 bytes 0..255, eos 256").hexdigest()

    def encode(self, text: str) -> np.ndarray:
        """`str` -> int32 ids (no EOS appended)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> `str`; EOS and other ids >= 256 are dropped, broken UTF-8 becomes U+FFFD."""
        ids = np.asarray(ids).reshape(-1)
        ids = ids[(ids >= 0) & (ids < 256)]
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for, [vocab_size] int64 (for bits per byte).

        Every byte id is 1 byte; EOS also counts as 1 byte: it stands for the document
        separator (as a newline would), so a split's bytes are its text bytes plus one per
        document and, with this tokenizer, bits per byte = loss / ln 2 exactly.
        """
        return np.ones(self.vocab_size, dtype=np.int64)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """All documents, each followed by EOS, as one flat uint16 array.

        Vectorised: one `bytes.join` and two scatter writes instead of a numpy concatenate per
        document, so the 4 MB KJV corpus tokenizes in tens of milliseconds.
        """
        encoded = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        eos_pos = np.cumsum(lengths + 1) - 1            # where each document's EOS goes
        out = np.empty(int(lengths.sum()) + len(encoded), dtype=np.uint16)
        is_text = np.ones(out.shape[0], dtype=bool)
        is_text[eos_pos] = False
        out[is_text] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        out[eos_pos] = self.eos_id
        return out


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")   # SentencePiece/Llama byte fallback


def _piece_bytes(piece: str) -> int:
    """UTF-8 bytes a metaspace-style piece ("▁the", "<0x0A>") stands for."""
    return 1 if _BYTE_PIECE.match(piece) else len(piece.replace("\u2581", " ").encode("utf-8"))


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer.json (hf:PATH, and the trained bpe:V)."""

    def __init__(self, path: str, name: str | None = None):
        import tokenizers  # lazy: byte runs never need it
        self.path, self.name = path, name or f"hf:{path}"
        try:
            self._tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:
            raise UserError(f"{self.name}: {path!r} is not a Hugging Face tokenizer.json "
                            f"({type(e).__name__})") from e
        n = self._tok.get_vocab_size(with_added_tokens=True)
        found = [self._tok.token_to_id(t) for t in EOS_NAMES if self._tok.token_to_id(t) is not None]
        self.eos_id = found[0] if found else n
        self.vocab_size = max(n, self.eos_id + 1)
        self.fingerprint = _file_sha256(path)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int32)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = np.asarray(ids).reshape(-1)
        ids = ids[(ids >= 0) & (ids < self._tok.get_vocab_size(with_added_tokens=True))]
        return self._tok.decode(ids.tolist(), skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        """Byte-level models: one byte per character of the token (the ByteLevel alphabet);
        others: the token's text with metaspace as a space, byte-fallback pieces one byte."""
        import json
        byte_level = "ByteLevel" in json.dumps(json.loads(self._tok.to_str()).get("decoder"))
        special = {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self._tok.get_vocab_size(with_added_tokens=True)):
            tok = self._tok.id_to_token(i)
            if tok is None or i in special:
                continue
            out[i] = len(tok) if byte_level else _piece_bytes(tok)
        out[self.eos_id] = 1
        return out


class SPMTokenizer:
    """A SentencePiece model (spm:PATH)."""

    def __init__(self, path: str):
        import sentencepiece  # lazy
        self.path, self.name = path, f"spm:{path}"
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        except Exception as e:
            raise UserError(f"{self.name}: {path!r} is not a SentencePiece model "
                            f"({type(e).__name__})") from e
        n = self._sp.get_piece_size()
        self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else n
        self.vocab_size = max(n, self.eos_id + 1)
        self.fingerprint = _file_sha256(path)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int32) for ids in self._sp.encode(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        ids = np.asarray(ids).reshape(-1)
        n = self._sp.get_piece_size()
        keep = [int(i) for i in ids if 0 <= i < n and not self._sp.is_control(int(i))]
        return self._sp.decode(keep)

    def token_byte_lengths(self) -> np.ndarray:
        sp, out = self._sp, np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(sp.get_piece_size()):
            if sp.is_byte(i):
                out[i] = 1
            elif not (sp.is_control(i) or sp.is_unknown(i)):
                out[i] = _piece_bytes(sp.id_to_piece(i))
        out[self.eos_id] = 1
        return out


Tokenizer = ByteTokenizer | HFTokenizer | SPMTokenizer


def get_tokenizer(spec: str, bpe_path: str | None = None) -> Tokenizer:
    """The tokenizer `data.tokenizer = spec`. `bpe:V` needs `bpe_path`, its trained
    tokenizer.json (`scaling.data.store.tokenizer_for` trains and caches it)."""
    kind, arg = tokenizer_spec(spec)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "hf":
        return HFTokenizer(arg)
    if kind == "spm":
        return SPMTokenizer(arg)
    if bpe_path is None:
        raise UserError(f"data.tokenizer={spec!r} is trained on a corpus: build it with "
                        f"scaling.data.store.tokenizer_for(cfg.data)")
    return HFTokenizer(bpe_path, name=spec)


def train_bpe(vocab_size: int, texts: Iterator[str], path: str) -> None:
    """Train a byte-level BPE (GPT-2 style pre-tokenisation, `<|endoftext|>` = id 0) with
    Hugging Face `tokenizers` and save it as tokenizer.json at `path` (atomically)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from scaling.fileio import atomic_write
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    atomic_write(path, tok.to_str())
