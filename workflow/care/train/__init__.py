"""Fine-tuning: DeepSpeed ZeRO full-parameter SFT per (backbone, variant, fold).

:mod:`care.train.run` drives one fine-tune (examples, launch, selection, export),
:mod:`care.train.launch` starts the ranks, :mod:`care.train.trainer` is the per-rank HF
``Trainer``, :mod:`care.train.checkpoints` keeps the checkpoint directory (lock, retention),
and :mod:`care.train.select` scores each epoch's checkpoint.
"""
