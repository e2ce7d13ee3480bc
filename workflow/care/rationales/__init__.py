"""Rationale augmentation (paper, section 4.2): LLM drafts, the expert sheet, imported edits.

- :mod:`care.rationales.draft`: one draft per (session, item) from a chat backend or the
  ``extractive`` drafter (:mod:`care.rationales.extractive`).
- :mod:`care.rationales.sheet`: export the drafts to an .xlsx a reviewer edits; import and
  validate the edited sheet into ``results/rationales.parquet``.
- :mod:`care.rationales.stats`: length and edit statistics (``rationale_stats.csv``).
"""
