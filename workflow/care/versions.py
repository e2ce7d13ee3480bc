"""Start-up check of the library versions a command depends on.

The tested ranges are this package's own requirements (``pyproject.toml``, read back from
the installed metadata), so there is one definition. A command that trains or runs a
model calls :func:`require` first and stops with the reason on a version outside its
range, instead of failing hours later (transformers 4.x crashes in ``care train run``, reads
transformers-5 configs with wrong RoPE values and takes the warmup ratio as steps).

vLLM pins its own torch and transformers (outside the ranges above), so vLLM jobs run in
their own environment (``envs/vllm.yaml``) and are checked against :data:`VLLM`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

DISTRIBUTION = "care-alliance"
#: Set to 1 to run with untested versions anyway (a warning instead of an error).
ALLOW_ENV = "CARE_ALLOW_UNTESTED"
#: What each kind of job imports and therefore checks.
STACKS = {
    "train": ("torch", "transformers", "accelerate", "deepspeed"),
    "hf": ("torch", "transformers"),
}
#: The vLLM release the backend's API use was written against (envs/vllm.yaml pins it);
#: transformers and torch there are whatever that vLLM release requires.
VLLM = "vllm>=0.33,<0.34"
#: Why a range matters, where it is known (shown with the error).
REASONS = {
    "transformers": "4.x crashes in care train, reads transformers-5 configs with wrong RoPE "
    "values and takes a float warmup ratio as steps",
}


class VersionError(RuntimeError):
    """An installed library is outside the range this workflow was tested with."""


def tested_ranges() -> dict:
    """``{name: SpecifierSet}`` of the package's requirements."""
    from packaging.requirements import Requirement

    lines = _pyproject_requirements()
    if lines is None:
        try:
            lines = metadata.requires(DISTRIBUTION) or []
        except metadata.PackageNotFoundError:
            lines = []
    out = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is None:  # extras (demo, slurm, dev) are not checked here
            out[req.name.lower()] = req.specifier
    return out


def _pyproject_requirements() -> list[str] | None:
    """The source tree's requirements when the package runs from one (an editable install's
    metadata is as old as its last ``pip install``); None for an installed wheel."""
    import tomllib

    path = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not path.is_file():
        return None
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    return project.get("dependencies") if project.get("name") == DISTRIBUTION else None


def problems(names: Iterable[str], ranges: dict, reasons: dict | None = None) -> list[str]:
    """One line per library that is missing or outside its range."""
    from packaging.version import Version

    reasons = REASONS if reasons is None else reasons
    found = []
    for name in names:
        spec = ranges.get(name)
        if spec is None:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            found.append(f"{name} is not installed (tested: {name}{spec})")
            continue
        if not spec.contains(Version(installed), prereleases=True):
            reason = f": {reasons[name]}" if name in reasons else ""
            found.append(f"{name} {installed} is outside the tested range {spec}{reason}")
    return found


def require(stack: str) -> None:
    """Stop with the reason when a library of ``stack`` is outside its tested range."""
    if stack == "vllm":
        found = vllm_problems()
    else:
        found = problems(STACKS[stack], tested_ranges())
    if found:
        message = (
            "untested library versions (see pyproject.toml; vLLM jobs: envs/vllm.yaml):\n  "
            + "\n  ".join(found)
        )
        if os.environ.get(ALLOW_ENV) == "1":  # knowingly (e.g. .ci/gpu_check.sh)
            log.warning("%s\n(%s=1: continuing)", message, ALLOW_ENV)
            return
        raise VersionError(message + f"\n(set {ALLOW_ENV}=1 to run anyway)")
    log.debug("library versions of %s are in their tested ranges", stack)


def vllm_problems() -> list[str]:
    """vLLM in its range, and the torch / transformers it requires itself."""
    from packaging.requirements import Requirement

    found = problems(["vllm"], {"vllm": Requirement(VLLM).specifier})
    if found:
        return found
    ranges = {}
    for line in metadata.requires("vllm") or []:
        req = Requirement(line)
        if req.marker is None and req.name.lower() in ("torch", "transformers"):
            ranges[req.name.lower()] = req.specifier
    return problems(["torch", "transformers"], ranges, reasons={})
