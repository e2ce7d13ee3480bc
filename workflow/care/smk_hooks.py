"""The workflow's only uses of Snakemake internals: the between-workflow output cache.

``workflow/rules/common.smk`` calls :func:`install_cache_hooks` under ``snakemake --cache``.
Two things there have no public mechanism in Snakemake 9.20-9.27.1 (checked in their sources:
``cli.py`` ``--cache``, ``settings/types.py`` ``WorkflowSettings.cache``,
``spawn_jobs.py`` ``general_args``, ``caching/hash.py`` ``ProvenanceHashMap``,
``caching/rule.py``, ``io/__init__.py`` ``_IOFile.checksum``/``is_checksum_eligible``; the
``cache:`` directive's only options are ``True``, ``"omit-software"`` and
``"omit-storage-content"``, the last one for storage-plugin files only):

- A bare ``--cache`` (every rule with a ``cache:`` directive) arrives as an empty list,
  which ``spawn_jobs`` drops from a cluster job's command line, so cluster jobs cache
  nothing. :class:`CacheableRules` names the rules (read after all rule files are parsed).
  The public alternative is naming the rules on the command line (``--cache train
  infer_finetuned ...``), which docs/scale.md's bare ``--cache`` would then have to list.
- Under a cluster executor each job's own Snakemake computes the cache key with only that
  job in its DAG, so an upstream model directory is hashed as a plain input, and
  ``_IOFile.checksum(force=True)`` opens it as a file (``IsADirectoryError``).
  :func:`patch_directory_checksum` hashes directories by content
  (:func:`care.cachedir.directory_digest`).

Both depend on private names, so :func:`hook_problems` checks them against the installed
Snakemake before anything is patched, and ``--cache`` stops with what changed (a run without
``--cache`` touches no private name). That check, not the version, guards the hooks, so
``pyproject.toml`` allows Snakemake from 9.26 (the oldest release whose cache tests passed)
to the next major release; ``tests/test_smk_hooks.py`` fails in CI on the first release that
changes a name.
"""

from __future__ import annotations

import inspect
import os

from care.versions import ALLOW_ENV, problems, tested_ranges

#: ``_IOFile.checksum``'s parameters, as the patch forwards them.
CHECKSUM_PARAMS = ("self", "threshold", "force", "algorithm")
#: Marks the patched method, so including the rule files twice patches once.
PATCH_MARK = "care_directories"


class CacheableRules(list):
    """A bare ``--cache`` (all rules that have a ``cache`` directive), resolved when read."""

    def __init__(self, workflow):
        super().__init__()
        self._workflow = workflow

    def _names(self) -> list[str]:
        return [r.name for r in self._workflow.rules if r.cache and r.cache.output]

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __bool__(self) -> bool:
        return True


def hook_problems() -> list[str]:
    """What in the installed Snakemake no longer matches the private names used here."""
    import snakemake.io as smk_io
    import snakemake.spawn_jobs as spawn_jobs
    from snakemake.caching import hash as cache_hash
    from snakemake.settings.types import WorkflowSettings

    found = problems(["snakemake"], tested_ranges(), reasons={})
    checksum = getattr(getattr(smk_io, "_IOFile", None), "checksum", None)
    original = getattr(checksum, "care_original", checksum)
    if original is None or not inspect.iscoroutinefunction(original):
        found.append("snakemake.io._IOFile.checksum is gone or no longer a coroutine")
    elif tuple(inspect.signature(original).parameters) != CHECKSUM_PARAMS:
        found.append(
            "snakemake.io._IOFile.checksum takes "
            f"{tuple(inspect.signature(original).parameters)}, not {CHECKSUM_PARAMS}"
        )
    if "checksum(force=True)" not in inspect.getsource(cache_hash.ProvenanceHashMap):
        found.append("the cache key no longer hashes inputs with checksum(force=True)")
    if "cache" not in getattr(WorkflowSettings, "__dataclass_fields__", {}):
        found.append("WorkflowSettings has no field 'cache'")
    if '"workflow_settings.cache"' not in inspect.getsource(spawn_jobs):
        found.append("cluster jobs no longer get --cache from workflow_settings.cache")
    return found


def patch_directory_checksum() -> None:
    """Let the cache key hash a directory input by content instead of failing."""
    import snakemake.io as smk_io

    from care.cachedir import directory_digest

    original = smk_io._IOFile.checksum
    if getattr(original, PATCH_MARK, False):
        return

    async def checksum(self, threshold=None, force=False, algorithm=None):
        if force and os.path.isdir(self.file):
            return f"sha256:{directory_digest(self.file)}"
        return await original(self, threshold, force=force, algorithm=algorithm)

    setattr(checksum, PATCH_MARK, True)
    checksum.care_original = original
    smk_io._IOFile.checksum = checksum


def install_cache_hooks(workflow):
    """Check the cache directory and hooks, then install them; returns the checked
    :class:`care.cachedir.CacheDir`. Errors are Snakemake ``WorkflowError`` s."""
    from snakemake.exceptions import WorkflowError
    from snakemake.logging import logger

    from care.cachedir import CACHE_ENVVAR, ensure_private_cache
    from care.errors import CareInputError

    if not os.environ.get(CACHE_ENVVAR):
        # Snakemake would warn and then fail every cached job ("Cache backend unavailable").
        raise WorkflowError(
            f"--cache needs {CACHE_ENVVAR}: export {CACHE_ENVVAR}=/a/private/shared/dir "
            "(docs/scale.md)"
        )
    try:
        cache = ensure_private_cache(os.environ[CACHE_ENVVAR])
    except CareInputError as exc:
        raise WorkflowError(f"refusing to use the output cache: {exc}") from None
    logger.info(cache.describe())
    found = hook_problems()
    if found:
        message = "--cache relies on Snakemake internals that changed:\n  " + "\n  ".join(found)
        if os.environ.get(ALLOW_ENV) != "1":
            raise WorkflowError(f"{message}\n(set {ALLOW_ENV}=1 to try anyway)")
        logger.warning(f"{message}\n({ALLOW_ENV}=1: continuing)")
    if not list(workflow.workflow_settings.cache):
        workflow.workflow_settings.cache = CacheableRules(workflow)
    patch_directory_checksum()
    return cache
