"""What a finished run cost, and what a paper config would cost: ``python -m cotdistill.cost``.

Measured (``measured``): per experiment and rule, the jobs found, their wall and CPU time from Snakemake's
``benchmark:`` TSVs (columns ``s`` and ``cpu_time``) and their tokens (fine-tunes: ``tokens_seen`` of
train_metrics.json; evaluations: test items x mean training-example length, as an estimate). Every job an
experiment needs counts in it, shared ones too (the rationales; the CoT-before model an attribution reads).

Extrapolated (``extrapolate``): a config's GPU-hours from FLOPs = 6 x parameters x training tokens per fine-tune
(plus 2 x parameters x tokens for its validations and its evaluations) over a stated throughput (a GPU's dense bf16
peak x an MFU, both assumed unless given). Training tokens = the items left after the validation hold-out x epochs
(or max_steps x batch) x the mean example length measured for that ablation kind in a finished run: on the same
dataset with the same student where the run has it, else the same dataset, else pooled over the datasets it has
(the table says which); early stopping can only lower it, so the fine-tunes' estimate is an upper bound. The
evaluations' is rough either way: it takes the training example length, more tokens than a label-first or
multi-task model reads at test time, and greedy decoding is memory-bound, slower than its FLOPs say. Teacher
generation and attribution are not estimated. Item and
parameter counts come from the config (subsample), a local model's weights, or ``resources/published/sizes.csv``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import io as _io
import json
import math
import sys
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from . import config as cfg
from .ablations import ABLATIONS
from .judge import JUDGED_KINDS

RULES = ("rationales", "attribution", "finetune", "evaluate", "evaluate_transfer", "judge")
H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 SXM (NVIDIA datasheet)
BASES = ("same dataset and student", "same dataset", "pooled")  # what a cell's example length rests on, best first
ASSUMED_MFU = 0.40  # issue 11's GPU goal; replace by a measured MFU where a GPU run exists


def load_config(configfiles: list[str], base: str = "config.yaml") -> dict:
    """The config Snakemake would see: `base` with each ``--configfile`` merged over it, sweeps expanded."""
    from snakemake.utils import update_config

    config = yaml.safe_load(Path(base).read_text())
    for path in configfiles:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    return cfg.expand(config)


@lru_cache(maxsize=1)
def sizes() -> pd.DataFrame:
    """Item and parameter counts for what cannot be loaded offline (``resources/published/sizes.csv``)."""
    text = importlib.resources.files("cotdistill").joinpath("resources/published/sizes.csv").read_text()
    return pd.read_csv(_io.StringIO(text), comment="#", dtype={"split": str}, keep_default_na=False)


def _bench(path: Path) -> dict | None:
    if not path.is_file():
        return None
    row = pd.read_csv(path, sep="\t").iloc[-1]
    return {"wall_s": float(row["s"]), "cpu_s": float(row["cpu_time"])}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _cell_path(cell: dict) -> str:
    return f"{cell['dataset']}/{cell['teacher']}/{cell['student']}/{cell['ablation']}/seed{cell['seed']}"


def jobs(config: dict, experiment: str) -> dict[str, list[str]]:
    """Per rule, the benchmark TSVs (under results/benchmarks) of every job an experiment needs, shared jobs
    included: the rationales, and for an attribution ablation its attribution and the CoT-before fine-tune it
    attributes."""
    e = config["experiments"][experiment]
    out: dict[str, list[str]] = {rule: [] for rule in RULES}
    for ds in e["datasets"]:
        own = ["train"] if e.get("students") else cfg.dataset_spec(config, ds)["splits"]
        for split in cfg.teacher_spec(config, e["teacher"]).get("splits") or own:
            out["rationales"].append(f"rationales/{e['teacher']}/{ds}/{split}")
    if "judge" in e:
        out["judge"] += [f"judge/{e['judge']}/{ds}/{e['teacher']}/teacher" for ds in e["datasets"]]
    for c in cfg.cells(config, experiment):
        out["finetune"].append(f"finetune/{_cell_path(c)}")
        out["evaluate"].append(f"eval/{_cell_path(c)}")
        out["evaluate_transfer"] += [f"transfer/{test}/{_cell_path(c)}"
                                     for test in (e.get("transfer") or {}).get(c["dataset"], [])]
        if "judge" in e and cfg.ablation_spec(config, c["ablation"])["kind"] in JUDGED_KINDS:
            out["judge"].append(f"judge/{e['judge']}/{_cell_path(c)}")
        spec = cfg.ablation_spec(config, c["ablation"])
        if "attribution" in ABLATIONS.get(spec["kind"]).needs:
            prefix = cfg.attribution_prefix(config, c["dataset"], c["teacher"], c["ablation"])
            out["attribution"].append(prefix.removeprefix("results/"))
            source = {**c, "student": spec["student"], "ablation": spec["source"], "seed": spec["seed"]}
            out["finetune"].append(f"finetune/{_cell_path(source)}")  # the CoT-before model it attributes
    return {rule: [f"{p}.tsv" for p in dict.fromkeys(paths)] for rule, paths in out.items()}


def measured(config: dict, results: str | Path = "results") -> pd.DataFrame:
    """Per experiment and rule: jobs found (of jobs needed), wall and CPU minutes, tokens."""
    results = Path(results)
    rows = []
    for exp in cfg.experiments_to_run(config):
        for rule, paths in jobs(config, exp).items():
            if not paths:
                continue
            found, tokens = [], []
            for path in paths:
                b = _bench(results / "benchmarks" / path)
                if b is None:
                    continue
                found.append(b)
                if rule not in ("finetune", "evaluate"):
                    continue
                cell = path.split("/", 1)[1].removesuffix(".tsv")
                metrics = _json(results / "models" / cell / "train_metrics.json")
                speed = _json(results / "eval" / f"{cell}.speed.json") if rule == "evaluate" else None
                if rule == "finetune" and metrics:
                    tokens.append(metrics["tokens_seen"])
                elif metrics and speed:
                    tokens.append(speed["n"] * metrics["mean_length"])
            rows.append({"experiment": exp, "rule": rule, "jobs": f"{len(found)}/{len(paths)}",
                         "wall_min": sum(b["wall_s"] for b in found) / 60,
                         "cpu_min": sum(b["cpu_s"] for b in found) / 60,
                         "tokens": round(sum(tokens)) if tokens else None})
    return pd.DataFrame(rows).astype({"tokens": "Int64"})


def mean_lengths(config: dict, results: str | Path = "results") -> pd.DataFrame:
    """Mean training-example length (tokens) of every finished fine-tune: one row per dataset, student and ablation
    kind with its placement (``key``), over seeds. Datasets and students are named as a paper config would name
    them (`paper_name`, a hub id), so that its cells can take the lengths of the same data and tokenizer."""
    rows = []
    for path in Path(results).glob("models/*/*/*/*/seed*/train_metrics.json"):
        dataset, _, student, name = path.parts[-6:-2]
        try:
            key = _length_key(cfg.ablation_spec(config, name))
        except cfg.ConfigError:
            continue
        rows.append({"dataset": _dataset_name(config, dataset), "student": _student_name(config, student),
                     "key": key, "length": json.loads(path.read_text())["mean_length"]})
    columns = ["dataset", "student", "key", "length"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.groupby(columns[:3], as_index=False)["length"].mean() if rows else frame


def example_length(lengths: pd.DataFrame, config: dict, dataset: str, student: str, ablation: str) -> tuple[float,
                                                                                                             str]:
    """A cell's mean example length and what it rests on: the same dataset and student, else the same dataset
    (another tokenizer), else every dataset measured for that ablation kind ("pooled")."""
    key = _length_key(cfg.ablation_spec(config, ablation))
    kind = lengths[lengths["key"] == key]
    if kind.empty:
        raise ValueError(f"ablation {ablation!r} ({key}): no finished fine-tune of this kind to measure its example "
                         f"length; run one (e.g. a cpu_* config) first")
    same = kind[kind["dataset"] == _dataset_name(config, dataset)]
    exact = same[same["student"] == _student_name(config, student)]
    basis, rows = next((b, r) for b, r in zip(BASES, (exact, same, kind), strict=True) if len(r))
    return float(rows["length"].mean()), basis


def _length_key(spec: dict) -> str:
    return "/".join(str(spec[k]) for k in ("kind", "position", "k", "p") if k in spec)


def _dataset_name(config: dict, dataset: str) -> str:
    spec = config.get("datasets", {}).get(dataset) or {}
    return spec.get("paper_name") or dataset


def _student_name(config: dict, student: str) -> str:
    spec = config.get("students", {}).get(student) or {}
    return spec.get("id") or student


def _parameters(config: dict, student: str, results: Path) -> int:
    spec = cfg.student_spec(config, student)
    table = sizes()
    hit = table[(table["kind"] == "model") & (table["name"] == spec.get("id"))]
    if len(hit):
        return int(hit["value"].iloc[0])
    from safetensors import safe_open

    for path in sorted(results.glob(f"models/*/*/{student}/*/seed*/model.safetensors"))[:1] + sorted(
            results.glob(f"hf/{student}/model.safetensors"))[:1]:
        with safe_open(str(path), "pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    raise ValueError(f"students.{student}: no parameter count (not in resources/published/sizes.csv and no "
                     f"converted or fine-tuned weights under {results})")


def _items(config: dict, dataset: str, split: str) -> int:
    spec = cfg.dataset_spec(config, dataset)
    sub = (spec.get("subsample") or {}).get(split)
    table = sizes()
    hit = table[(table["kind"] == "dataset") & (table["name"] == spec.get("paper_name")) & (table["split"] == split)]
    full = int(hit["value"].iloc[0]) if len(hit) else None
    if sub is not None:
        return min(int(sub), full) if full else int(sub)
    if full is None:
        raise ValueError(f"datasets.{dataset}: no item count for split {split!r} (no subsample and paper_name "
                         f"{spec.get('paper_name')!r} not in resources/published/sizes.csv)")
    return full


def extrapolate(config: dict, lengths: pd.DataFrame, tflops: float = H100_BF16_TFLOPS,
                mfu: float = ASSUMED_MFU, results: str | Path = "results") -> pd.DataFrame:
    """GPU-hours per experiment of `config` (its fine-tunes, their validations, its evaluations) from token counts
    and FLOPs over `tflops` x `mfu` (`lengths`: `mean_lengths` of a finished run), with a column saying what the
    fine-tunes' example lengths rest on (`example_length`)."""
    results = Path(results)
    rate = tflops * 1e12 * mfu
    params: dict[str, int] = {}  # per student, read once
    rows = []
    for exp in cfg.experiments_to_run(config):
        flops = {"finetune": 0.0, "validation": 0.0, "evaluate": 0.0}
        bases: dict[str, int] = {}
        needed = jobs(config, exp)
        for rule in ("finetune", "evaluate"):
            for path in needed[rule]:
                dataset, _, student, ablation, _ = path.removesuffix(".tsv").split("/")[1:]
                length, basis = example_length(lengths, config, dataset, student, ablation)
                if student not in params:
                    params[student] = _parameters(config, student, results)
                n = params[student]
                if rule == "evaluate":
                    flops["evaluate"] += 2 * n * _items(config, dataset, "test") * length
                    continue
                bases[basis] = bases.get(basis, 0) + 1
                t = cfg.training_settings(config, student)
                items = _items(config, dataset, "train")
                held = min(int(t["validation_size"]), items // 5)  # as training.split_validation holds out
                steps = (items - held) * float(t["epochs"]) / (int(t["batch_size"]) * int(t["grad_accum"]))
                if int(t["max_steps"]) > 0:
                    steps = min(steps, int(t["max_steps"]))
                examples = steps * int(t["batch_size"]) * int(t["grad_accum"])
                flops["finetune"] += 6 * n * examples * length
                flops["validation"] += 2 * n * (steps // int(t["eval_every"]) + 1) * held * length
        rows.append({"experiment": exp, "fine-tunes": len(needed["finetune"]),
                     **{f"{k}_gpu_h": v / rate / 3600 for k, v in flops.items()},
                     "total_gpu_h": sum(flops.values()) / rate / 3600,
                     "example lengths": ", ".join(f"{bases[b]} {b}" for b in BASES if b in bases)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", default=[], help="as given to snakemake (repeatable)")
    p.add_argument("--results", default="results")
    p.add_argument("--extrapolate", metavar="CONFIG", action="append", default=[],
                   help="a config to estimate GPU-hours for (merged over config.yaml), e.g. configs/paper_table1.yaml")
    p.add_argument("--tflops", type=float, default=H100_BF16_TFLOPS, help="GPU dense bf16 peak (default: H100 SXM)")
    p.add_argument("--mfu", type=float, default=ASSUMED_MFU, help="model FLOP utilisation to assume")
    args = p.parse_args(argv)
    config = load_config(args.configfile)
    table = measured(config, args.results)
    print(f"## Measured ({args.results}; wall and CPU minutes summed over jobs, from benchmark TSVs)\n")
    print(table.to_markdown(index=False, floatfmt=".1f"))
    lengths = mean_lengths(config, args.results)
    for path in args.extrapolate:
        est = extrapolate(load_config([path]), lengths, args.tflops, args.mfu, args.results)
        print(f"\n## Estimated GPU-hours for {path}: {args.tflops:.0f} TFLOP/s x MFU {args.mfu:.0%} "
              f"(assumed), example lengths measured in {args.results}\n")
        print(est.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    sys.exit(main())
