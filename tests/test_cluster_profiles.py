"""The workflow profiles: local defaults carry no cluster settings; the SLURM profile parses
as Snakemake parses it, with partition and account from the environment."""

from __future__ import annotations

import re

import pytest
import yaml
from snakemake.profiles import ProfileConfigFileParser

from .conftest import REPO

CLUSTER_KEYS = {"executor", "jobs", "default-resources", "set-resources", "retries"}


def parse_profile(name: str) -> dict:
    """The profile as Snakemake turns it into command-line arguments."""
    path = REPO / "profiles" / name / "config.yaml"
    with open(path, encoding="utf-8") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def rule_names() -> set[str]:
    names = set()
    for smk in [REPO / "Snakefile", *(REPO / "workflow/rules").glob("*.smk")]:
        names |= set(re.findall(r"^\s*rule (\w+):", smk.read_text(encoding="utf-8"), re.M))
    return names


def test_default_profile_is_local_only():
    profile = parse_profile("default")
    assert not CLUSTER_KEYS & profile.keys()
    assert not any(key.startswith("slurm") for key in profile)
    # it applies under profiles/slurm too: a `cores` here would cap every cluster job's threads
    assert "cores" not in profile
    assert profile["rerun-incomplete"] in (True, "True", "true")


def test_slurm_profile_without_environment(monkeypatch):
    for var in ("CARE_SLURM_PARTITION", "CARE_SLURM_GPU_PARTITION", "CARE_SLURM_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    profile = parse_profile("slurm")
    assert profile["executor"] == "slurm"
    assert int(profile["retries"]) >= 1
    assert profile["slurm-requeue"] in (True, "True", "true")
    resources = dict(item.split("=", 1) for item in profile["default-resources"])
    assert "slurm_partition" not in resources and "slurm_account" not in resources
    assert "cpus_per_task" not in resources  # a job without one gets its rule's threads
    assert "set-resources" not in profile
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text(encoding="utf-8"))
    assert int(profile["cores"]) >= paper["training"]["threads"]  # never caps a job's threads


def test_slurm_profile_takes_partitions_and_account_from_environment(monkeypatch):
    monkeypatch.setenv("CARE_SLURM_PARTITION", "cpu")
    monkeypatch.setenv("CARE_SLURM_GPU_PARTITION", "gpu-a100")
    monkeypatch.setenv("CARE_SLURM_ACCOUNT", "lab42")
    profile = parse_profile("slurm")
    resources = dict(item.split("=", 1) for item in profile["default-resources"])
    assert resources["slurm_partition"] == "cpu"
    assert resources["slurm_account"] == "lab42"
    per_rule = {item.split(":", 1)[0]: item.split(":", 1)[1] for item in profile["set-resources"]}
    assert per_rule["train"] == "slurm_partition=gpu-a100"
    assert set(per_rule) <= rule_names() | {"train", "infer_finetuned", "infer_zero_shot"}


def test_slurm_profile_names_existing_rules(monkeypatch):
    monkeypatch.setenv("CARE_SLURM_GPU_PARTITION", "gpu")
    named = {item.split(":", 1)[0] for item in parse_profile("slurm")["set-resources"]}
    missing = named - rule_names()
    if {"train", "infer_finetuned"} - rule_names():
        pytest.skip("training/inference rules not in the workflow yet")
    assert not missing, f"profiles/slurm names rules that do not exist: {missing}"


def test_profiles_are_commented_yaml():
    for name in ("default", "slurm"):
        text = (REPO / "profiles" / name / "config.yaml").read_text(encoding="utf-8")
        assert text.lstrip().startswith("#")
        yaml.safe_load(text)


def test_slurm_profile_deploys_each_rules_conda_env(monkeypatch):
    """vLLM jobs need envs/vllm.yaml (vLLM's torch and transformers pins): the cluster run
    deploys the rules' conda environments unless told the nodes share a prepared one."""
    monkeypatch.delenv("CARE_SLURM_SOFTWARE", raising=False)
    assert parse_profile("slurm")["software-deployment-method"] == "conda"
    monkeypatch.setenv("CARE_SLURM_SOFTWARE", "none")
    assert "software-deployment-method" not in parse_profile("slurm")
