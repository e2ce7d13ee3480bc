"""Evaluation and rendering: the paper's Tables 2-5, Figure 3 and the HTML report's parts.

- :mod:`.metrics`: dimension scores per session and per-fold Pearson/Spearman/MSE/coverage.
- :mod:`.bootstrap`: client-resampling bootstrap intervals and paired tests.
- :mod:`.textmetrics`: BLEU, ROUGE-1/L and BERTScore of generated vs expert rationales.
- :mod:`.logodds`: log-odds ratios with an informative Dirichlet prior (Monroe et al. 2008).
- :mod:`.human_eval`: rating sheets for human evaluation of rationales, and their summary.
- :mod:`.tables`: the tables as CSV, Markdown and LaTeX; :mod:`.figures`: the figures.
"""
