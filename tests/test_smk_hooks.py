"""care.smk_hooks: the private Snakemake names the output cache relies on still exist."""

import asyncio
import types

import pytest
import snakemake.io as smk_io
from care import smk_hooks
from care.cachedir import directory_digest


@pytest.fixture
def restore_checksum(monkeypatch):
    """Undo the patch after the test (monkeypatch restores the original attribute)."""
    monkeypatch.setattr(smk_io._IOFile, "checksum", smk_io._IOFile.checksum)


def test_installed_snakemake_has_the_hooks():
    # Fails on a Snakemake release that renamed or reshaped the private names: then
    # re-check care/smk_hooks.py against its sources and move the pin in pyproject.toml.
    assert smk_hooks.hook_problems() == []


def test_changed_checksum_signature_is_reported(monkeypatch):
    async def checksum(self, threshold=None, *, force=False):  # a parameter gone
        return None

    monkeypatch.setattr(smk_io._IOFile, "checksum", checksum)
    found = smk_hooks.hook_problems()
    assert any("_IOFile.checksum takes" in line for line in found)


def test_directory_hashed_by_content_files_forwarded(tmp_path, restore_checksum):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    smk_hooks.patch_directory_checksum()
    smk_hooks.patch_directory_checksum()  # rule files included twice: one patch
    patched = smk_io._IOFile.checksum
    assert not getattr(patched.care_original, smk_hooks.PATCH_MARK, False)

    directory = smk_io._IOFile(str(model), None)
    digest = asyncio.run(patched(directory, force=True))
    assert digest == f"sha256:{directory_digest(model)}"

    calls = []

    async def original(self, threshold=None, force=False, algorithm=None):
        calls.append((str(self), threshold, force, algorithm))
        return "sha256:file"

    smk_io._IOFile.checksum = original
    smk_hooks.patch_directory_checksum()
    plain = smk_io._IOFile(str(model / "config.json"), None)
    assert asyncio.run(smk_io._IOFile.checksum(plain, 7, force=True)) == "sha256:file"
    assert calls == [(str(model / "config.json"), 7, True, None)]


def test_bare_cache_names_rules_when_read():
    rules = []
    workflow = types.SimpleNamespace(rules=rules)
    names = smk_hooks.CacheableRules(workflow)
    assert names  # a bare --cache is on even before the rules are parsed
    cached = types.SimpleNamespace(name="train", cache=types.SimpleNamespace(output=True))
    rules += [cached, types.SimpleNamespace(name="table2", cache=None)]
    assert list(names) == ["train"] and len(names) == 1
