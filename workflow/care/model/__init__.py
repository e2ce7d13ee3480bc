"""The model floor that fine-tuning, inference and drafting stand on.

- :mod:`care.model.backbone`: chat families, tiny builders, loading a checkpoint and its
  tokenizer, end-of-turn tokens, model shapes;
- :mod:`care.model.sources`: model sources (a directory, a GGUF file, a package shipping
  one) and their import;
- :mod:`care.model.fingerprint`: "the same model" (answer caches, training run identity);
- :mod:`care.model.attention`: the shared-prefix attention and masks of packed rows.
"""
