"""The tiny DAG on a real single-node SLURM (tests/slurm/cluster.sh) through profiles/slurm.

Skipped, with the reason, only when the scheduler cannot be started (no root, no packages, a daemon failing).
Every wait is bounded; `.ci/run` also bounds the whole run with `timeout -k`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_pipeline import tiny_config, write
from .test_workflow import SNAKEMAKE

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = ROOT / "tests/slurm/cluster.sh"
PROFILE = ["--profile", "profiles/slurm", "--workflow-profile", "tests/slurm/profile"]


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the test SLURM needs root to start munge and the SLURM daemons")
    if shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed: run tests/slurm/cluster.sh install")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("SLURM_CONF", raising=False)  # conftest's; the test cluster's configs are in /etc/slurm
        started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=240)
        if started.returncode != 0:
            subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)
            pytest.skip(f"the test SLURM did not start: {started.stderr[-800:]}")
        yield
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)


@pytest.fixture()
def cluster_workdir(workdir):
    (workdir / "tests/slurm").mkdir(parents=True)
    shutil.copytree(ROOT / "tests/slurm/profile", workdir / "tests/slurm/profile")
    return workdir


def run(workdir: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *PROFILE, *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def sacct(since: str) -> list[dict]:
    """Allocations since `since`, one per job (no steps), with the rule read off the job comment."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", since, "--format=JobID,Comment,AllocTRES,State"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    jobs = []
    for line in out.splitlines():
        job_id, comment, tres, state = line.split("|")
        jobs.append({"id": job_id, "rule": comment.removeprefix("rule_").split("_wildcards")[0], "tres": tres,
                     "state": state})
    return jobs


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 1))


def small_grid(workdir: Path, **training) -> dict:
    config = tiny_config(workdir, **training)
    config["students"] = {"tiny-a": config["students"]["tiny-a"]}
    config["ablations"] = {"none": {"kind": "none"}, "cot_after": {"kind": "cot_after"}}
    config["experiments"]["table1"].update(students=["tiny-a"], ablations=["none", "cot_after"])
    return config


def test_dag_through_slurm_with_gpu_only_where_needed(slurm, cluster_workdir):
    write(cluster_workdir, small_grid(cluster_workdir))
    since = now()
    run(cluster_workdir)
    assert (cluster_workdir / "results/reports/table1.md").exists()
    jobs = sacct(since)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    assert len(by_rule.get("finetune", [])) == 2 and len(by_rule.get("evaluate", [])) == 2, jobs
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            assert job["state"] == "COMPLETED", job
            has_gpu = "gres/gpu=1" in job["tres"]
            assert has_gpu == (rule in ("finetune", "evaluate")), job
    (cluster_workdir / "sacct.json").write_text(json.dumps(jobs, indent=1))

    again = now()
    proc = run(cluster_workdir)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert sacct(again) == []  # a second invocation submits nothing


def test_cancelled_finetune_is_retried_and_resumes(slurm, cluster_workdir):
    write(cluster_workdir, small_grid(cluster_workdir, epochs=30, eval_every=10, patience=100))
    model = "results/models/csqa/palm540b/tiny-a/none/seed0"
    ckpt = cluster_workdir / "results/checkpoints/csqa/palm540b/tiny-a/none/seed0"
    log = cluster_workdir / "snakemake.out"
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall snakemake
        proc = subprocess.Popen([SNAKEMAKE, *PROFILE, model], cwd=cluster_workdir, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    try:
        while not list(ckpt.glob("*/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.5)
        running = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.split("\n")
        job_id = next(line.split()[0] for line in running if "rule_finetune" in line)
        subprocess.run(["scancel", job_id], check=True, timeout=30)  # as a preemption or time limit would
        proc.wait(timeout=max(10, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log.read_text()[-3000:]
    metrics = json.loads((cluster_workdir / model / "train_metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 10, metrics  # the retried job started from the checkpoint
    assert metrics["steps"] == 150
    states = [j["state"] for j in sacct("now-1hours") if j["rule"] == "finetune"]
    assert any(s.startswith("CANCELLED") for s in states) and "COMPLETED" in states, states


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-resources", "finetune:gpu=4"], "Requested node configuration is not available"),
        (["--default-resources", "slurm_partition=nowhere", "--set-resources", "finetune:slurm_partition=nowhere"],
         "invalid partition"),
    ],
)
def test_impossible_requests_fail_fast_with_the_scheduler_message(slurm, cluster_workdir, args, message):
    write(cluster_workdir, small_grid(cluster_workdir))
    start = time.monotonic()
    proc = run(cluster_workdir, "results/models/csqa/palm540b/tiny-a/none/seed0", "--retries", "0", *args,
               timeout=300, check=False)
    assert proc.returncode != 0
    assert message.lower() in (proc.stdout + proc.stderr).lower()
    assert time.monotonic() - start < 240
