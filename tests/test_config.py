import copy

import pytest
import yaml

from cotdistill.config import ConfigError, check, rationale_targets

from .conftest import ROOT

SCHEMA = ROOT / "schemas/config.schema.yaml"
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def _with(mutate):
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    return cfg


def test_default_config_is_valid_and_plans_rationales():
    check(BASE, SCHEMA)
    assert rationale_targets(BASE) == [
        f"results/rationales/palm540b/csqa/{s}.{ext}" for s in ("test", "train") for ext in ("parquet", "stats.json")]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["datasets"]["csqa"].update(subsampel={"train": 3}),
         "config key 'datasets.csqa.subsampel' is not allowed (did you mean 'subsample'?); valid keys: "),
        (lambda c: c.update(sede=1), "config key 'sede' is not allowed (did you mean 'seed'?)"),
        (lambda c: c["datasets"]["csqa"].update(loader="csqa_parquet"),
         "config key 'datasets.csqa.loader' names unknown dataset loader 'csqa_parquet'; valid choices: anli_hub"),
        (lambda c: c["teachers"]["palm540b"].update(backend="openai"),
         "config key 'teachers.palm540b.backend' names unknown teacher backend 'openai'; valid choices: "
         "precomputed, transformers, vllm"),
        (lambda c: c["teachers"]["palm540b"].update(policy="ignore"),
         "config key 'teachers.palm540b.policy' is 'ignore'; valid choices: drop, keep, retry"),
        (lambda c: c["experiments"]["table1"].update(datasets=["obqa"]),
         "config key 'experiments.table1.datasets[0]' names unknown dataset 'obqa'; valid choices: csqa"),
        (lambda c: c["experiments"]["table1"].update(teacher="mistral"),
         "names unknown teacher 'mistral'; valid choices: palm540b"),
        (lambda c: c["teachers"].update(t={"backend": "transformers"}),
         "config key 'teachers.t.model' is required for backend 'transformers'"),
        (lambda c: c["datasets"]["csqa"]["subsample"].update(train=0),
         "config key 'datasets.csqa.subsample.train'"),
        (lambda c: c.update(run=["table9"]), "config key 'run[0]' names unknown experiment 'table9'"),
    ],
)
def test_bad_config_gives_one_line_error(mutate, message):
    with pytest.raises(ConfigError) as err:
        check(_with(mutate), SCHEMA)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
