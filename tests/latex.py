"""Compile generated LaTeX tables with a real engine, each in a standalone document."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ENGINE = shutil.which("pdflatex")
needs_latex = pytest.mark.skipif(
    ENGINE is None,
    reason="no LaTeX engine: apt-get install texlive-latex-base texlive-latex-recommended "
    "(CI installs them)",
)
PREAMBLE = r"""\documentclass{article}
\usepackage[utf8]{inputenc}
\usepackage[T1]{fontenc}
\usepackage{booktabs,graphicx}
\begin{document}
"""


def assert_compiles(tex: Path, workdir: Path) -> str:
    """Typeset ``tex`` in an article: no error, no overfull box (the table fits the page)."""
    assert "\\usepackage{booktabs,graphicx}" in tex.read_text(encoding="utf-8").splitlines()[0]
    doc = workdir / f"standalone-{tex.stem}.tex"
    doc.write_text(PREAMBLE + f"\\input{{{tex.resolve()}}}\n\\end{{document}}\n", encoding="utf-8")
    done = subprocess.run(
        [ENGINE, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    log = (workdir / doc.with_suffix(".log").name).read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, f"{tex.name} does not compile:\n{log[-3000:]}"
    assert "Overfull \\hbox" not in log, f"{tex.name} overflows the text width:\n{log[-3000:]}"
    assert "Table 1: Table" not in log
    return log
