"""The cost report's job accounting on the paper config (no run needed); its measured side is tested on a finished
run in test_pipeline."""

from cotdistill import cost

from .conftest import ROOT


def test_each_attribution_counts_once_with_the_cot_before_model_it_reads():
    config = cost.load_config([str(ROOT / "configs/paper_mysteries.yaml")], base=str(ROOT / "config.yaml"))
    jobs = cost.jobs(config, "paper_table3")
    # ig_topk and ig_topk_shuffled read one attribution per dataset: gpt2-xl's CoT-before model, seed 0
    assert sorted(jobs["attribution"]) == [
        f"attribution/{ds}/mistral7b/gpt2-xl/cot_before/seed0/integrated_gradients-50.tsv"
        for ds in ("commonsenseqa", "openbookqa", "quarel")]
    cells = 3 * 3 * 6 * 3  # datasets x students x ablations x seeds
    assert len(jobs["evaluate"]) == cells
    assert len(jobs["finetune"]) == cells + 3  # the attributed CoT-before models are not in this grid
    assert all(f"finetune/{ds}/mistral7b/gpt2-xl/cot_before/seed0.tsv" in jobs["finetune"]
               for ds in ("commonsenseqa", "openbookqa", "quarel"))
    assert len(set(jobs["finetune"])) == len(jobs["finetune"])
