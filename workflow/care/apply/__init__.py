"""Application of a trained CARE model to an unlabeled corpus (the paper's section 7).

- :mod:`care.apply.predict`: score every session of the corpus with one fine-tuned model.
- :mod:`care.apply.profiles`: counselor alliance profiles against the corpus mean (Figure 2).
- :mod:`care.apply.patterns`: OLS of predicted alliance on counselor-strategy x client-reaction
  pattern rates (Appendix D, Table 8).
- :mod:`care.apply.digest`: per-counselor digest of recurring problems in low-alliance sessions.
- :mod:`care.apply.session_report`: a self-contained HTML report of one session.
"""
