"""The metric map: which task and metric of an evaluation-results file becomes which score column.

One rule per benchmark column of the score table (docs/METHODS.md §1, README "Your own models"):

==== =========================== ===============================================================
HS   ``hellaswag`` ``acc_norm``   length-normalised accuracy (the Open LLM Leaderboard v1 choice)
TQA  ``truthfulqa`` ``mc2``        TruthfulQA MC2 (lm-eval 0.4 task ``truthfulqa_mc2``, metric acc)
ARC  ``arc_challenge`` ``acc_norm``
WG   ``winogrande`` ``acc``
MMLU ``mmlu`` ``acc``: the **unweighted mean of the 57 subjects** (``--mmlu subtasks``, the
     Open LLM Leaderboard v1 convention and the shipped table's), or lm-eval 0.4's ``mmlu``
     group value (``--mmlu aggregate``), which weights each subject by its number of questions:
     the two differ (by 1.7 to 2.5 points on the Qwen2.5 and gemma-2 files of lm-eval 0.4).
==== =========================== ===============================================================

Task names are first made canonical across formats: lm-eval 0.4 ``truthfulqa_mc2``/``truthfulqa_mc1``
(metric ``acc``) -> ``truthfulqa`` ``mc2``/``mc1``; lm-eval 0.3 ``truthfulqa_mc`` and the leaderboard's
``truthfulqa:mc`` -> ``truthfulqa``; ``arc:challenge`` -> ``arc_challenge``; ``hendrycksTest-<subject>``
-> ``mmlu_<subject>``; lm-eval 0.4 metric keys ``"<metric>,<filter>"`` -> ``<metric>`` for the filter
``none`` (other filters keep ``<metric>,<filter>``).  A rule is overridden per benchmark with
``--metric BENCH=TASK:METRIC`` (for example ``--metric TQA=truthfulqa:mc1``, which makes the table's
``tqa_variant`` mc1; TQA takes mc1, mc2, or the ``acc`` of a single-answer task, scored as MC1).  Scores are fractions in the files and percent (x100) in the table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cape_hpc.errors import OptionError
from cape_hpc.options import Options, option

__all__ = ["MetricRule", "DEFAULT_RULES", "REQUIRED", "MMLU_SUBJECTS", "ImportOptions", "canonical_task",
           "canonical_metric", "map_text"]

#: columns the score table requires (docs: cape_hpc.io.scores); the others may be blank
REQUIRED = ("HS", "TQA")


@dataclass(frozen=True)
class MetricRule:
    """Benchmark column <- (canonical task, canonical metric); ``subtasks`` means the unweighted
    mean over ``MMLU_SUBJECTS`` (``mmlu_<subject>``) instead of the task itself."""

    column: str
    task: str
    metric: str
    subtasks: bool = False

    def describe(self) -> str:
        if self.subtasks:
            return f"{self.column} = mean of the {len(MMLU_SUBJECTS)} mmlu_<subject> {self.metric} (unweighted)"
        return f"{self.column} = {self.task} {self.metric}"


DEFAULT_RULES = (
    MetricRule("HS", "hellaswag", "acc_norm"),
    MetricRule("TQA", "truthfulqa", "mc2"),
    MetricRule("ARC", "arc_challenge", "acc_norm"),
    MetricRule("WG", "winogrande", "acc"),
    MetricRule("MMLU", "mmlu", "acc", subtasks=True),
)

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)

_TASK_ALIASES = {"truthfulqa_mc": "truthfulqa", "truthfulqa:mc": "truthfulqa", "arc:challenge": "arc_challenge",
                 "arc:easy": "arc_easy"}
_TQA_SPLIT = {"truthfulqa_mc2": "mc2", "truthfulqa_mc1": "mc1"}  # lm-eval 0.4: one task per variant, metric acc


def canonical_task(task: str) -> str:
    """The format-independent name of a task (see the module docstring)."""
    task = task.strip()
    if task.startswith("hendrycksTest-"):
        return "mmlu_" + task[len("hendrycksTest-"):]
    return _TASK_ALIASES.get(task, "truthfulqa" if task in _TQA_SPLIT else task)


def canonical_metric(task: str, metric: str) -> str:
    """The format-independent name of ``metric`` of (raw) ``task``: lm-eval 0.4's ``acc,none`` -> ``acc``,
    and the ``acc`` of ``truthfulqa_mc2`` -> ``mc2``."""
    name, _, filt = metric.partition(",")
    name = name if filt in ("", "none") else f"{name},{filt}"
    if task.strip() in _TQA_SPLIT and name == "acc":
        return _TQA_SPLIT[task.strip()]
    return name


_OVERRIDE = re.compile(r"^(?P<col>[A-Za-z]+)=(?P<task>[^:=\s]+):(?P<metric>[^:=\s]+)$")


@dataclass(frozen=True)
class ImportOptions(Options):
    """How evaluation-results files become a score table (``cape scores import``, ``--scores DIR``)."""

    metric: tuple[str, ...] = option((), help="override the map of one benchmark: BENCH=TASK:METRIC with the "
                                     "canonical task and metric names, e.g. TQA=truthfulqa:mc1 (repeatable)",
                                     metavar="BENCH=TASK:METRIC")
    mmlu: str = option("subtasks", choices=("subtasks", "aggregate"),
                       help="MMLU as the unweighted mean of the 57 subjects, or lm-eval 0.4's size-weighted "
                            "'mmlu' group value")
    params: str | None = option(None, help="CSV with columns model,params for models whose files state no "
                                "parameter count (model = the table's name or the full model id)", metavar="CSV")
    family: tuple[str, ...] = option((), help="family rules REGEX=NAME, tried in order on the model id "
                                     "(re.search); first match wins", metavar="REGEX=NAME")
    family_file: str | None = option(None, help="CSV with columns model,family", metavar="CSV")
    allow_mixed: bool = option(False, help="accept one benchmark measured with different n-shot settings, "
                               "harness generations or task versions across models")
    skip_incomplete: bool = option(False, help="leave out (and list) models without HS or TQA instead of "
                                   "refusing the import")

    def check(self) -> None:
        for text in self.metric:
            m = _OVERRIDE.match(text)
            if not m or m["col"] not in {r.column for r in DEFAULT_RULES}:
                raise OptionError(f"option '--metric': {text!r} is not BENCH=TASK:METRIC with BENCH one of "
                                  f"{', '.join(r.column for r in DEFAULT_RULES)}")
            if m["col"] == "TQA" and m["metric"] not in ("mc1", "mc2", "acc"):
                raise OptionError(f"option '--metric': {text!r}: TQA must be an mc1 or mc2 metric, or the "
                                  "acc of a single-answer task (scored as MC1): the table's tqa_variant")
        for text in self.family:
            regex, eq, name = text.rpartition("=")
            if not eq or not regex or not name:
                raise OptionError(f"option '--family': {text!r} is not REGEX=NAME")
            try:
                re.compile(regex)
            except re.error as exc:
                raise OptionError(f"option '--family': {regex!r} is not a regular expression ({exc})") from None

    def rules(self) -> tuple[MetricRule, ...]:
        """The metric map in force: the defaults with ``--metric`` and ``--mmlu`` applied."""
        rules = {r.column: r for r in DEFAULT_RULES}
        if self.mmlu == "aggregate":
            rules["MMLU"] = MetricRule("MMLU", "mmlu", "acc")
        for text in self.metric:
            m = _OVERRIDE.match(text)
            rules[m["col"]] = MetricRule(m["col"], canonical_task(m["task"]), m["metric"])
        return tuple(rules[r.column] for r in DEFAULT_RULES)

    def family_rules(self) -> list[tuple[re.Pattern, str]]:
        return [(re.compile(regex), name) for regex, _, name in (t.rpartition("=") for t in self.family)]


def map_text(rules: tuple[MetricRule, ...] = DEFAULT_RULES) -> str:
    """The map as printed by ``--help`` and stored in the provenance."""
    return "; ".join(r.describe() for r in rules)
