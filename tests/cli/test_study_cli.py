"""`embed study`: a bad plan is a one-line error; --dry-run prints the plan's steps and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLAN = """
seeds = [0]
[defaults]
tile_size = 64
[[dataset]]
adapter = "synthetic"
options = { n = 10 }
[[encoder]]
name = "tiny-vit"
weights = "random"
"""


def embed(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedstore.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


def test_a_bad_plan_is_a_one_line_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "plan.toml").write_text(PLAN.replace('adapter = "synthetic"', 'adapter = "pannuk"'))
    result = embed("study", "plan.toml", cwd=tmp_path)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "dataset[0].adapter" in lines[0] and "pannuk" in lines[0] and "plan.toml" in lines[0]


def test_a_dry_run_prints_every_step_as_pending_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "plan.toml").write_text(PLAN)
    result = embed("study", "plan.toml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pending extract synthetic" in result.stdout and "pending compare synthetic" in result.stdout
    assert "0 steps done, 6 pending" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]
