"""Report kinds: which paper table or figure an experiment reproduces, the paper's claims it checks, and its plot.

Light on imports (the Snakefile's config check reads the registry). An experiment names its kind
(``experiments.<name>.report``, default ``table1``); adding one is one `register` call. A claim is a chain of
ablation selectors, ``a > b > c``; a selector matches ablations by kind and parameters (a parameter may be a
range, ``{"p": (">=", 0.6)}``), and when it matches several ablations every pair is checked. A claim holds when
every step is significantly in the claimed direction (an intersection-union test), is reversed when some step is
significantly the other way (Bonferroni over the steps), and is otherwise not significant (`reports.verdict`).
Published numbers are in ``resources/published/<paper>.csv`` (Mysteries: ``mysteries``, MI: ``mi``); what the
paper found for a claim on a dataset is read from them where they cover it (`reports.paper_finding`), else it is
the claim's `paper`.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

from .registry import Registry

Selector = dict  # {"kind": ..., param: value or (op, value)}


REVISION = 2  # raised when the report code says something else from the same inputs; in every report's params, so
# finished runs redo their reports, and nothing else, on the next run (2: the paper's finding per dataset from its
# published numbers, sweep points tested at their own value, human-word overlap without punctuation)

def published_path(name: str) -> str:
    """A file of published numbers as the package ships it (``resources/published/<name>.csv``): read by reports
    and the analysis, and an input of the report rule."""
    return str(importlib.resources.files("cotdistill").joinpath(f"resources/published/{name}.csv"))


FINDINGS = ("holds", "reversed", "about equal", "not in paper")  # what a paper can state about an ordering


@dataclass(frozen=True)
class Claim:
    text: str
    chain: tuple[Selector, ...]  # each selector's ablations better than the next's
    paper: str = "holds"  # what the paper states where its tables do not cover it (`FINDINGS`)
    tasks: tuple[str, ...] = ()  # checked only on datasets of these tasks (mcqa, nli, math); empty: every dataset

    def __post_init__(self) -> None:
        """Checked when the kind is registered, not when a run first meets the claim."""
        if self.paper not in FINDINGS:
            raise ValueError(f"claim {self.text!r}: paper {self.paper!r} is not one of {', '.join(FINDINGS)}")
        for selector in self.chain:
            for want in selector.values():
                if isinstance(want, tuple) and (len(want) != 2 or want[0] not in (">=", "<=")):
                    raise ValueError(f"claim {self.text!r}: range {want!r} needs '>=' or '<=' and a bound")


@dataclass(frozen=True)
class ReportKind:
    title: str
    claims: tuple[Claim, ...]
    figure: str = "bars"  # bars: one bar per ablation; sweep: accuracy against `sweep` (one line per series)
    sweep: str | None = None  # the swept parameter of the figure's ablations
    sweep_kind: str | None = None
    overlap: bool = False  # precision/recall of human words against IG tokens (Table 3)
    note: str = ""
    paper: str = "mysteries"  # the published numbers: resources/published/<paper>.csv
    calibration_claims: tuple[Claim, ...] = ()  # orderings by ECE, lower first (paired bootstrap of the ECE gap)


REPORTS: Registry[ReportKind] = Registry("report kind")

NONE, BEFORE, AFTER = {"kind": "none"}, {"kind": "cot_before"}, {"kind": "cot_after"}

REPORTS.register("table1")(ReportKind(
    "accuracy by CoT placement (Mysteries Table 1)",
    (Claim("CoT after > CoT before > no CoT", (AFTER, BEFORE, NONE)),)))

REPORTS.register("table2")(ReportKind(
    "rationale words shuffled per instance (Mysteries Table 2)",
    (Claim("shuffling the rationale before the label hurts: CoT before > shuffled before",
           (BEFORE, {"kind": "shuffle", "position": "before"})),
     Claim("shuffled after the label still helps: shuffled after > no CoT",
           ({"kind": "shuffle", "position": "after"}, NONE)))))

REPORTS.register("table3")(ReportKind(
    "what is appended after the label (Mysteries Table 3)",
    (Claim("a few attributed tokens after the label carry the gain: IG top-k > no CoT", ({"kind": "ig_topk"}, NONE)),
     Claim("their order does not matter: IG top-k shuffled > no CoT", ({"kind": "ig_topk_shuffled"}, NONE)),
     Claim("content, not length: CoT after > random words", (AFTER, {"kind": "random_words"}),
           paper="not in paper"),
     Claim("word-vector neighbours of the answer: word neighbours > no CoT", ({"kind": "word_neighbours"}, NONE),
           paper="about equal")),
    overlap=True,
    note="random_words (beyond the paper) appends as many random rationale-vocabulary words as the rationale has."))

REPORTS.register("figure3")(ReportKind(
    "filler tokens before the label (Mysteries Figure 3)",
    (Claim("filler tokens never reach CoT: CoT before > filler at every k", (BEFORE, {"kind": "filler"})),),
    figure="sweep", sweep="k", sweep_kind="filler",
    note="Filler = the student's unk token where distinct from EOS (SmolLM2: <|endoftext|>, Gemma: <unk>); GPT-2's "
         "unk is its EOS <|endoftext|>, which would end generation, so GPT-2 gets the ablation's fallback token "
         "(train_metrics.json of each model records the token used)."))

REPORTS.register("figure4")(ReportKind(
    "masked rationale tokens (Mysteries Figure 4)",
    (Claim("masking most of a rationale before the label falls below no CoT (p >= 0.6)",
           (NONE, {"kind": "mask", "position": "before", "p": (">=", 0.6)})),
     Claim("after the label, gains hold up to 60% masked: masked after (p <= 0.6) > no CoT",
           ({"kind": "mask", "position": "after", "p": ("<=", 0.6)}, NONE))),
    figure="sweep", sweep="p", sweep_kind="mask"))


DSS, DSS_MI = {"kind": "multitask", "aux": "none"}, {"kind": "multitask", "aux": "mi_paper"}

REPORTS.register("mi_table1")(ReportKind(
    "Distilling Step-by-Step with the MI loss (MI Tables 1-2)",
    (Claim("DSS+MI > DSS > fine-tuning", (DSS_MI, DSS, NONE)),
     Claim("multi-task beats single-task: DSS > single-task (rationale, then label)", (DSS, BEFORE))),
    paper="mi",
    note="fine-tuning = none (label only); single-task = cot_before (rationale and label as one target); DSS = "
         "multitask with aux none; DSS+MI = multitask with aux mi_paper (the authors' code, the term the paper's "
         "numbers come from). The corrected term (aux mi) enters no claim: its rows are read against the others in "
         "the paired tests (compare_to)."))


REPORTS.register("mi_table3")(ReportKind(
    "DSS and DSS+MI trained on the teacher's labels instead of gold (MI Table 3)",
    (Claim("DSS+MI > DSS on the teacher's labels", (DSS_MI, DSS)),),
    paper="mi",
    note="The experiment's teacher has labels: teacher (its parsed PaLM labels are the training targets; test "
         "labels stay gold); the published column matches rows of Table 3 only for such a teacher."))

REPORTS.register("mi_table4")(ReportKind(
    "max against mean pooling of the MI term (MI Table 4)",
    (Claim("max pooling > mean pooling", ({**DSS_MI, "reduction": "max"}, {**DSS_MI, "reduction": "mean"}),
           paper="about equal"),),
    paper="mi"))

REPORTS.register("mi_table5")(ReportKind(
    "the MI term (cross-entropy) against a KL divergence (MI Table 5)",
    (Claim("DSS+MI (cross-entropy) > DSS+KL", (DSS_MI, {"kind": "multitask", "aux": "kl"})),),
    paper="mi"))

REPORTS.register("mi_table6")(ReportKind(
    "calibration of DSS and DSS+MI, in and out of domain (MI Table 6)",
    (),
    calibration_claims=(Claim("DSS+MI is better calibrated than DSS on NLI: ECE(DSS+MI) < ECE(DSS)",
                              (DSS_MI, DSS), tasks=("nli",)),),
    paper="mi",
    note="ECE over 10 bins of the predicted label's probability normalised over the candidate labels; out of "
         "domain (rows <trained on>-><tested on>, experiment key transfer) the model answers another NLI set's test "
         "split. The paper's ECE is higher for DSS+MI than DSS on SVAMP and CQA, lower on the NLI sets."))

REPORTS.register("mi_table7")(ReportKind(
    "rationale quality judged by a model (MI Tables 7-8)",
    (), paper="mi",
    note="Each model's rationales (multi-task: its explain task; CoT before: the text before its label; CoT after: "
         "the text after) and the teacher's on the same seeded test items, scored 1-5 by the experiment's judge "
         "with several samples each (section 'Rationale quality')."))

REPORTS.register("mi_figure2")(ReportKind(
    "accuracy against the fraction of training data (MI Figures 2-3)", (), figure="sweep", sweep="train_fraction",
    sweep_kind="multitask", paper="mi",
    note="One line per auxiliary loss (DSS = aux none); each fraction's examples are a seeded subset of the next "
         "larger fraction's. The paper's claim, DSS+MI above DSS at every fraction, is read from the paired tests "
         "of each DSS+MI point against the DSS point of its fraction (list both in compare_to)."))


def matches(spec: dict, selector: Selector) -> bool:
    """Whether an ablation's resolved spec satisfies a selector."""
    for key, want in selector.items():
        if key not in spec:
            return False
        if isinstance(want, tuple):
            op, bound = want  # '>=' or '<=' (`Claim` checks)
            if not (spec[key] >= bound if op == ">=" else spec[key] <= bound):
                return False
        elif spec[key] != want:
            return False
    return True
