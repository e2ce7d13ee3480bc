"""The private output-cache directory: creation, refusal, the workflow guard, code hashing."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from care.cachedir import PRIVATE_MODE, code_fingerprint, ensure_private_cache
from care.cli import main
from care.errors import CareInputError

from .cluster_helpers import snakemake
from .conftest import copy_workflow

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_missing_directory_group_private(tmp_path):
    target = tmp_path / "shared" / "cache"
    old_umask = os.umask(0o022)  # a umask that would leave it world-readable
    try:
        info = ensure_private_cache(target)
    finally:
        os.umask(old_umask)
    assert info.created
    assert mode_of(target) == PRIVATE_MODE
    assert info.mode & stat.S_IRWXO == 0
    again = ensure_private_cache(target)
    assert not again.created and again.path == target.resolve()


@pytest.mark.parametrize("mode", [0o755, 0o2775, 0o701, 0o704])
def test_refuses_directory_open_to_others(tmp_path, mode):
    target = tmp_path / "cache"
    target.mkdir()
    os.chmod(target, mode)
    with pytest.raises(CareInputError) as err:
        ensure_private_cache(target)
    assert "chmod o-rwx" in str(err.value)
    assert "SNAKEMAKE_OUTPUT_CACHE" in str(err.value)
    assert mode_of(target) == mode  # never changed behind the user's back


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o770, 0o2770])
def test_accepts_private_directory(tmp_path, mode):
    target = tmp_path / "cache"
    target.mkdir()
    os.chmod(target, mode)
    assert ensure_private_cache(target).mode == mode


def test_refuses_file_uri_and_empty(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(CareInputError, match="not a directory"):
        ensure_private_cache(afile)
    with pytest.raises(CareInputError, match="remote storage"):
        ensure_private_cache("s3://bucket/cache")
    with pytest.raises(CareInputError, match="empty"):
        ensure_private_cache("  ")


def test_cache_check_command(tmp_path, capsys, monkeypatch):
    target = tmp_path / "c"
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(target))
    assert main(["cache-check"]) == 0
    assert "created, mode 2770" in capsys.readouterr().out
    os.chmod(target, 0o777)
    assert main(["cache-check", str(target)]) == 2
    assert "chmod o-rwx" in capsys.readouterr().err


def test_code_fingerprint_follows_content_not_location(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "pkg" / "__pycache__").mkdir(parents=True)
        (root / "pkg" / "m.py").write_text("x = 1\n")
        (root / "pkg" / "__pycache__" / "m.pyc").write_bytes(os.urandom(8))
    first = code_fingerprint(["pkg"], root=tmp_path / "a")
    assert first == code_fingerprint(["pkg"], root=tmp_path / "b")
    (tmp_path / "b" / "pkg" / "m.py").write_text("x = 2\n")
    assert first != code_fingerprint(["pkg"], root=tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        code_fingerprint(["missing.py"], root=tmp_path / "a")


@pytest.mark.slow
def test_workflow_refuses_world_readable_cache(tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work")
    open_cache = tmp_path / "open"
    open_cache.mkdir()
    os.chmod(open_cache, 0o755)
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(open_cache)}
    proc = snakemake(
        work, "-n", "results/folds.tsv", "--configfile", ".test/config.yaml", "--cache", env=env
    )
    assert proc.returncode != 0
    assert "refusing to use the output cache" in proc.stdout + proc.stderr
    fresh = tmp_path / "fresh" / "cache"
    env["SNAKEMAKE_OUTPUT_CACHE"] = str(fresh)
    proc = snakemake(
        work, "-n", "results/folds.tsv", "--configfile", ".test/config.yaml", "--cache", env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert mode_of(fresh) == PRIVATE_MODE
    # --cache without a cache directory: a clear error, not a crash in every cached job
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_OUTPUT_CACHE"}
    proc = snakemake_without_cache_env(work, env)
    assert proc.returncode != 0
    assert "--cache needs SNAKEMAKE_OUTPUT_CACHE" in proc.stdout + proc.stderr


def snakemake_without_cache_env(work, env):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "results/folds.tsv",
        "--configfile",
        ".test/config.yaml",
        "--cache",
    ]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_directory_digest_by_content_through_symlinks(tmp_path):
    from care.cachedir import directory_digest

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    first = directory_digest(model)
    # a fetched copy: a directory of symlinks plus Snakemake's timestamp marker
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for entry in model.iterdir():
        (fetched / entry.name).symlink_to(entry)
    (fetched / ".snakemake_timestamp").touch()
    assert directory_digest(fetched) == first
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x02" * 1000)
    assert directory_digest(model) != first
    changed = directory_digest(model)
    (model / "sub" / "weights.bin").rename(model / "weights.bin")  # names count too
    assert directory_digest(model) != changed


def _rule_blocks(text: str):
    """(name, body) of each rule in a rule file."""
    parts = re.split(r"^rule (\w+):\n", text, flags=re.M)
    return zip(parts[1::2], parts[2::2], strict=True)


def test_cached_rules_key_every_output_wildcard():
    """Snakemake's cache key hashes the rule's unformatted shell command and its params, not
    the wildcards: a cached rule whose output wildcard reaches no param gives two jobs one key,
    and the second takes the first's output from the cache (the lexical and length baselines
    once did)."""
    checked = 0
    for path in sorted((WORKFLOW / "rules").glob("*.smk")):
        for name, body in _rule_blocks(path.read_text()):
            body = re.split(r"^\S", body, maxsplit=1, flags=re.M)[0]  # up to the next top level
            if not re.search(r"^\s+cache:", body, re.M):
                continue
            output = re.search(r"^    output:\n(.*?)^    \w+:", body, re.M | re.S).group(1)
            params = re.search(r"^    params:\n(.*?)(^    \w+:|\Z)", body, re.M | re.S).group(1)
            for wildcard in set(re.findall(r"\{(\w+)\}", output)):
                assert re.search(rf"\bwc\.{wildcard}\b", params), (
                    f"{path.name}: rule {name}'s wildcard {wildcard} reaches no param"
                )
            checked += 1
    assert checked >= 6
