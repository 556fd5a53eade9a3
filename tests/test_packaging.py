"""Packaging: one distribution `embedstore`; wheel and editable installs expose the same import names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_embedstore_trainer_and_cli_without_generic_top_level_names(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("embedstore-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"embedstore"}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import embedstore, embedstore.trainer.metrics, embedstore.trainer.fit.train, embedstore.cli.app, "
             "embedstore.datasets, embedstore.imaging.tiling;"
             "print(embedstore.__file__); print(embedstore.trainer.metrics.__file__);"
             "print(embedstore.trainer.fit.train.__file__); print(embedstore.imaging.tiling.__file__);"
             "print(embedstore.cli.app.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out), out


def test_installed_package_maps_the_trainer_and_cli_folders() -> None:
    import embedstore.cli.app
    import embedstore.trainer.targets

    assert Path(embedstore.trainer.targets.__file__).parents[1] == ROOT / "trainer"
    assert Path(embedstore.cli.app.__file__).name == "app.py"
    result = subprocess.run(["embed", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "extract" in result.stdout
