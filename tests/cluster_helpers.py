"""Helpers for the cluster tests (test_cluster*.py, test_slurm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def snakemake(
    workdir: Path,
    *args: str,
    env: dict | None = None,
    cores: int | None = 2,
    timeout: int = 1200,
) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir`` (a copy made by ``conftest.copy_workflow``).

    The interpreter's bin directory goes first on PATH so that rules (and SLURM jobs, which
    inherit the environment) find the ``care`` command even when the venv is not activated.
    """
    cmd = [sys.executable, "-m", "snakemake"]
    if cores is not None:
        cmd += ["--cores", str(cores)]
    bindir = str(Path(sys.executable).parent)
    run_env = {**os.environ, **(env or {})}
    run_env["PATH"] = bindir + os.pathsep + run_env.get("PATH", "")
    return subprocess.run(
        cmd + list(args),
        cwd=workdir,
        capture_output=True,
        text=True,
        env=run_env,
        timeout=timeout,
    )


def table_files(workdir: Path) -> dict[str, bytes]:
    """Every table the run wrote (results/table*.csv), by name."""
    return {p.name: p.read_bytes() for p in sorted((workdir / "results").glob("table*.csv"))}


def dry_run_conda(bindir: Path) -> Path:
    """A ``conda`` for dry runs under ``--software-deployment-method conda`` on a machine
    without one: it answers the three questions Snakemake asks before it plans environments
    (info, version, channel priority) and refuses anything else, so nothing is built."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "conda"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "info --json") echo \'{"conda_prefix": "/opt/conda", "platform": "linux-64"}\';;\n'
        '  "--version") echo "conda 24.11.3";;\n'
        '  "config --get channel_priority --json")\n'
        '    echo \'{"get": {"channel_priority": "strict"}}\';;\n'
        '  *) echo "dry-run conda: refusing $*" >&2; exit 1;;\n'
        "esac\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return bindir
