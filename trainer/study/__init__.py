"""`embed study`: the whole comparison (datasets x encoders x seeds x decoder variants) from one plan file.

Modules by job: plan (PLAN.toml -> checked dataclasses), steps (extract -> train -> evaluate -> compare,
each with its done-check from outputs and fingerprints), tables (the paired gap to the baseline next to
the comparison table), run (the order of work, the weights access check, dry runs).
"""

from embedstore.trainer.study.plan import StudyPlan, load_plan
from embedstore.trainer.study.run import StudyReport, run_study

__all__ = ["StudyPlan", "StudyReport", "load_plan", "run_study"]
