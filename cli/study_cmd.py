"""`embed study PLAN.toml`: option parsing and the closing summary only (the work is embedstore.trainer.study)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def study_command(
    plan: Annotated[Path, typer.Argument(help="Study plan (TOML): datasets, encoders, seeds, decoder variants, post-processing; see docs/study.md.")],
    dry_run: Annotated[bool, typer.Option(help="List every step as done or pending, with estimated store sizes; write and fetch nothing.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Override the plan's device: auto | cpu | cuda[:N].")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Run a whole study: extract what is missing, train, evaluate and write the paper tables per dataset.

    A second run does only what is not done (every step's outputs carry its fingerprint): change seeds,
    epochs or weights and only the steps that depend on them run again. The no-encoder baseline is always
    trained, and gap.md gives each encoder's paired difference to it over the seeds.
    """
    from embedstore.trainer.study import load_plan, run_study

    study = load_plan(plan)
    if device is not None:
        study = dataclasses.replace(study, settings=dataclasses.replace(study.settings, device=device))
    out = console if dry_run else Console(stderr=True)  # the plan listing is the output of a dry run

    def say(line: str) -> None:
        out.print(line, highlight=False, soft_wrap=True)

    report = run_study(study, dry_run=dry_run, say=say, show_progress=not quiet and not dry_run)
    if dry_run:
        return
    for name, files in report.tables.items():
        console.print(f"{name}: " + ", ".join(str(p) for p in files.values()), highlight=False)
