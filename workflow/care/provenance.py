"""Provenance of a run: what produced ``results/`` (config, code, packages, inputs, machine).

One record, ``results/provenance.json``, written after every table and figure of the run:
the configuration as resolved (defaults and every ``--configfile`` merged), the git commit
and whether the tree had uncommitted changes, package versions, SHA-256 checksums of the
inputs no rule makes (corpora, instrument, prompts, expert sheet, DeepSpeed config), the
hardware, every seed of the config, and when the run started and this record was written.
A reStructuredText summary of it opens the HTML report; every table's note points to it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from care.io import atomic_open, write_json

RECORD = "results/provenance.json"
STARTED_ENV = "CARE_RUN_STARTED"  # set by the Snakefile when the run starts
COMMAND_ENV = "CARE_RUN_COMMAND"  # and the command line that started it
NOTE = f"Provenance (config, commit, package versions, input checksums): {RECORD}."
PACKAGES = (
    "care-alliance", "torch", "transformers", "deepspeed", "accelerate", "tokenizers",
    "snakemake", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "sacrebleu",
    "rouge-score", "bert-score", "matplotlib", "openpyxl", "vllm",
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksums(paths: Iterable[str]) -> dict[str, str]:
    """``sha256:<hex>`` per input file; a directory by its content (names and bytes)."""
    from care.cachedir import directory_digest

    out = {}
    for path in sorted(set(map(str, paths))):
        if os.path.isdir(path):
            out[path] = f"sha256-dir:{directory_digest(path)}"
        elif os.path.exists(path):
            out[path] = f"sha256:{sha256(path)}"
        else:
            out[path] = "missing"
    return out


def git_state(root: str | os.PathLike = ".") -> dict[str, Any]:
    """Commit and dirty flag of the checkout, or why there is none."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as exc:
        return {"commit": None, "dirty": None, "note": f"not a git checkout ({type(exc).__name__})"}
    return {"commit": commit, "dirty": dirty}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "hostname_hash": hashlib.sha256(
            platform.node().encode()).hexdigest()[:12],
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules or _installed("torch"):
        import torch

        info["cuda_devices"] = [torch.cuda.get_device_name(i)
                                for i in range(torch.cuda.device_count())]
    return info


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def seeds(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every ``seed`` key of the config, by its dotted path."""
    found: dict[str, Any] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "seed":
                found[path] = value
            else:
                found.update(seeds(value, path))
    elif isinstance(config, list):
        for n, value in enumerate(config):
            found.update(seeds(value, f"{prefix}[{n}]"))
    return found


def collect(config: Mapping, inputs: Iterable[str], outputs: Iterable[str] = (),
            root: str | os.PathLike = ".") -> dict[str, Any]:
    return {
        "started": os.environ.get(STARTED_ENV),
        "finished": now(),
        "command": os.environ.get(COMMAND_ENV),
        "git": git_state(root),
        "packages": package_versions(),
        "hardware": hardware(),
        "seeds": seeds(config),
        "inputs": checksums(inputs),
        "outputs": sorted(set(map(str, outputs))),
        "config": config,
    }


def summary_rst(record: Mapping[str, Any]) -> str:
    """The record's summary as reStructuredText (a field list), for the report's first page."""
    git = record["git"]
    commit = f"git commit {git['commit']}" if git.get("commit") else git.get("note", "unknown")
    if git.get("dirty"):
        commit += " (uncommitted changes)"
    packages = ", ".join(f"{k} {v}" for k, v in record["packages"].items())
    hw = record["hardware"]
    machine = f"{hw['platform']}, {hw['cpu_count']} CPUs"
    if hw.get("cuda_devices"):
        machine += ", GPUs: " + ", ".join(hw["cuda_devices"])
    seed_text = ", ".join(f"{k}={v}" for k, v in record["seeds"].items()) or "none"
    lines = [
        f":Run: started {record['started'] or 'unknown'}, record written {record['finished']}",
        f":Code: {commit}",
        f":Packages: {packages}",
        f":Machine: {machine}",
        f":Seeds: {seed_text}",
        ":Inputs (SHA-256):",
        "",
    ]
    lines += [f"   - ``{path}``: ``{digest.split(':', 1)[-1][:16]}…``"
              for path, digest in record["inputs"].items()]
    lines += ["", "The full record, the configuration as resolved included, is "
              "``results/provenance.json`` (under Provenance in this report)."]
    return "\n".join(lines) + "\n"


def write(config: Mapping, inputs: Iterable[str], outputs: Iterable[str], out: str | Path,
          rst: str | Path | None = None) -> dict[str, Any]:
    record = collect(config, inputs, outputs)
    write_json(out, record)
    if rst is not None:
        with atomic_open(rst) as f:
            f.write(summary_rst(record))
    return record
