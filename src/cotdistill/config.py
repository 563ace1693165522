"""Config checks with one-line errors that name the key and the valid choices, and target planning.

The JSON schema (``schemas/config.schema.yaml``) fixes the shape; `check` adds what a schema cannot say:
names that must exist in a registry or elsewhere in the config. Snakemake's ``validate`` runs after it to
fill in defaults.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .ablations import ABLATIONS
from .datasets import LOADERS
from .teachers import BACKENDS
from .defaults import TRAINING as TRAINING_DEFAULTS


class ConfigError(ValueError):
    """The config does not describe a runnable workflow."""


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_at(schema: dict, path: list) -> dict:
    node = schema
    for part in path:
        props = node.get("properties", {})
        node = props[part] if part in props else node.get("additionalProperties") or {}
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
        hint = difflib.get_close_matches(bad, allowed, n=1)
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


def check(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError for the first problem found; return silently for a runnable config."""
    check_schema(config, schema_path)
    for name, spec in config["datasets"].items():
        _choice(spec["loader"], LOADERS.names(), f"datasets.{name}.loader", "dataset loader")
    for name, spec in config["teachers"].items():
        _choice(spec["backend"], BACKENDS.names(), f"teachers.{name}.backend", "teacher backend")
        if spec["backend"] != "precomputed" and "model" not in spec:
            raise ConfigError(f"config key 'teachers.{name}.model' is required for backend {spec['backend']!r}")
    for name, spec in config.get("ablations", {}).items():
        _choice(spec["kind"], ABLATIONS.names(), f"ablations.{name}.kind", "ablation")
    for name, exp in config["experiments"].items():
        for i, ds in enumerate(exp["datasets"]):
            _choice(ds, list(config["datasets"]), f"experiments.{name}.datasets[{i}]", "dataset")
        _choice(exp["teacher"], list(config["teachers"]), f"experiments.{name}.teacher", "teacher")
        for key, section in (("students", "student"), ("ablations", "ablation")):
            for i, item in enumerate(exp.get(key, [])):
                _choice(item, list(config.get(key, {})), f"experiments.{name}.{key}[{i}]", section)
    for i, exp in enumerate(config.get("run", [])):
        _choice(exp, list(config["experiments"]), f"run[{i}]", "experiment")


# --------------------------------------------------------------------------- lookups used by the rules


def dataset_spec(config: dict, name: str) -> dict:
    return _named(config, "datasets", name)


def loader_spec(config: dict, name: str) -> dict:
    """The dataset entry without report-only keys, so renaming a table column reruns no data job."""
    return {k: v for k, v in dataset_spec(config, name).items() if k not in ("paper_name", "prompt")}


def teacher_spec(config: dict, name: str) -> dict:
    return _named(config, "teachers", name)


def template_path(config: dict, dataset: str) -> str:
    return dataset_spec(config, dataset).get("prompt", f"prompts/{dataset}.yaml")


def teacher_gpus(config: dict, teacher: str) -> int:
    spec = teacher_spec(config, teacher)
    return int(spec.get("gpus", 1 if spec["backend"] == "vllm" else 0))


def student_spec(config: dict, name: str) -> dict:
    return _named(config, "students", name)


def ablation_spec(config: dict, name: str) -> dict:
    return _named(config, "ablations", name)


def _named(config: dict, section: str, name: str) -> dict:
    if name not in config.get(section, {}):
        raise ConfigError(f"unknown {section[:-1]} {name!r} in a target path; configured {section}: "
                          f"{', '.join(sorted(config.get(section, {})))}")
    return config[section][name]


def training_settings(config: dict, student: str) -> dict:
    """Global training settings under the student's own overrides: a change reruns only that student."""
    return {**TRAINING_DEFAULTS, **config.get("training", {}),
            **student_spec(config, student).get("training", {})}


def converted_student(config: dict, student: str) -> str | list:
    """The converted folder a GGUF student trains from; an empty list (no input) for hub and local students."""
    return f"results/hf/{student}" if student_spec(config, student)["source"] == "gguf" else []


def eval_targets(config: dict, experiment: str) -> list[str]:
    """Eval JSONs of one experiment's grid: datasets x students x ablations x seeds."""
    e = config["experiments"][experiment]
    return [f"results/eval/{ds}/{e['teacher']}/{st}/{ab}/seed{seed}.json" for ds in e["datasets"]
            for st in e.get("students", []) for ab in e.get("ablations", []) for seed in e.get("seeds", [0])]


def report_targets(config: dict) -> list[str]:
    return [f"results/reports/{exp}.{ext}" for exp in experiments_to_run(config)
            if eval_targets(config, exp) for ext in ("md", "csv", "tex", "png", "pdf")]


def report_config(config: dict, experiment: str) -> dict:
    """The config sections a report reads, limited to its experiment (so other edits do not rerun it)."""
    e = config["experiments"][experiment]
    return {"datasets": {d: config["datasets"][d] for d in e["datasets"]},
            "students": {s: student_spec(config, s) for s in e.get("students", [])},
            "ablations": {a: ablation_spec(config, a) for a in e.get("ablations", [])}}


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
            splits = teacher.get("splits") or dataset_spec(config, ds).get("splits", ["train", "test"])
            for split in splits:
                base = f"results/rationales/{e['teacher']}/{ds}/{split}"
                out += [f"{base}.parquet", f"{base}.stats.json"]
    return sorted(set(out))
