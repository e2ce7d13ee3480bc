"""Tested library versions: one set (pyproject.toml), checked at start-up; vLLM apart."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from care import versions
from care.cli import main
from packaging.requirements import Requirement
from packaging.version import Version

from .conftest import REPO


def fake_versions(monkeypatch, **installed):
    real = versions.metadata.version

    def version(name):
        return installed.get(name.replace("-", "_"), None) or real(name)

    monkeypatch.setattr(versions.metadata, "version", version)


def test_every_requirement_has_a_floor_and_a_ceiling():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for lines in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in lines if not r.startswith(("care-alliance", "transf"))]
    for req in reqs:
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops or "==" in ops, f"{req} has no floor"
        assert "<" in ops or "==" in ops or req.name == "packaging", f"{req} has no ceiling"
    assert "datasets" not in {r.name for r in reqs}  # not used by the package


def test_installed_libraries_are_in_the_tested_ranges():
    versions.require("train")
    versions.require("hf")
    ranges = versions.tested_ranges()
    assert Version("4.46.0") not in ranges["transformers"]


def test_an_untested_transformers_stops_care_train_with_the_reason(monkeypatch, capsys):
    fake_versions(monkeypatch, transformers="4.46.0")
    code = main(["train", "run", "--backbone", "x", "--sessions", "x", "--folds", "x",
                 "--instrument", "x", "--fold", "1", "--variant", "score_only",
                 "--max-length", "64", "--learning-rate", "1e-5", "--num-train-epochs", "1",
                 "--per-device-train-batch-size", "1", "--checkpoints", "x", "--out", "x"])
    err = capsys.readouterr().err
    assert code == 3
    assert "transformers 4.46.0 is outside the tested range" in err and "RoPE" in err


def test_vllm_environment_is_checked_against_what_vllm_requires(monkeypatch):
    fake_versions(monkeypatch, vllm="0.33.0", transformers="5.24.0")
    monkeypatch.setattr(
        versions.metadata, "requires",
        lambda name: ["transformers<5.21.0,>=5.16.1", "torch==2.13.0", "numpy"]
        if name == "vllm" else None,
    )
    found = versions.vllm_problems()
    assert found == ["transformers 5.24.0 is outside the tested range <5.21.0,>=5.16.1"]
    fake_versions(monkeypatch, vllm="0.6.0")
    with pytest.raises(versions.VersionError, match="vllm 0.6.0 is outside"):
        versions.require("vllm")


def test_vllm_jobs_have_their_own_environment():
    env = yaml.safe_load((REPO / "envs/vllm.yaml").read_text(encoding="utf-8"))
    pins = [Requirement(p) for p in env["dependencies"][-1]["pip"]]
    vllm = next(p for p in pins if p.name == "vllm")
    pinned = Version(next(iter(vllm.specifier)).version)
    assert pinned in Requirement(versions.VLLM).specifier
    assert not any(p.name in ("torch", "transformers") for p in pins)  # vLLM's own
    assert "--no-deps" in (REPO / "envs/vllm.post-deploy.sh").read_text(encoding="utf-8")
    for smk in ("infer.smk", "apply.smk"):
        text = (REPO / "workflow/rules" / smk).read_text(encoding="utf-8")
        assert "infer_env(" in text  # the vllm-capable rules pick their environment
