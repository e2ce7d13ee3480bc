"""Which runs the evaluation tables compare, derived from the workflow config.

Imported by every rule file when Snakemake parses the workflow, so it stays free of heavy
imports; it reads a config the schema filled (:func:`care.config.check_config`). A run is one
(model, variant): fine-tuned backbones with each variant, zero-shot baselines (variant
``zero_shot``) and the human counselor (``counselor``/``human``).

Protocol replicates of a fine-tuned run are separate trainings whose directory carries a tag
after the variant (``results/models/{backbone}/{variant}-{tag}/fold{k}``):

- ``seed<N>``: the same run trained with seed N (``training.seeds``: the first seed is the
  untagged run, each further seed a replicate; the tables average over them);
- ``testsel``: checkpoints selected on the test fold itself (the paper's public configs,
  ``evaluation.sensitivity.test_fold_selection``), reported in rows of their own, labelled
  "test-fold selection (optimistic)"; the headline is always ``training.selection``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: text baselines (care.infer.lexical; kept here, free of heavy imports, for the rule files):
#: model -> variant directory, and the tables' labels
TEXT_BASELINES = {"lexical": "tfidf_ridge", "length": "word_count"}
TEXT_BASELINE_LABELS = {"lexical": "Lexical (TF-IDF + ridge)", "length": "Dialogue length (OLS)"}
TEST_FOLD_TAG = "testsel"
TEST_FOLD_LABEL = "test-fold selection (optimistic)"
BASE_VARIANTS = ("rationale", "score_only")
#: Wildcard pattern of a fine-tuned run's variant directory: base variant, optional tag.
VARIANT_PATTERN = rf"(?:{'|'.join(BASE_VARIANTS)})(?:-(?:{TEST_FOLD_TAG}|seed\d+))?"


def split_variant(name: str) -> tuple[str, str]:
    """(base variant, tag) of a variant directory name: ``rationale-seed7`` -> (rationale,
    seed7); an untagged name has tag ''."""
    base, _, tag = name.partition("-")
    return base, tag


def training_overrides(variant: str, training: dict) -> dict:
    """The ``training`` keys a tagged replicate changes (none for the untagged run beyond the
    first configured seed)."""
    _, tag = split_variant(variant)
    seeds = run_seeds(training)
    if tag == TEST_FOLD_TAG:
        return {"selection": "heldout_fold", "seed": seeds[0]}
    if tag.startswith("seed"):
        return {"seed": int(tag[4:])}
    return {"seed": seeds[0]}


def run_seeds(training: dict) -> list[int]:
    """Training seeds of each fine-tuned run: ``training.seeds``, else ``training.seed``."""
    seeds = [int(s) for s in training["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"training.seeds: repeated seed in {seeds}")
    return seeds or [int(training["seed"])]


def replicate_variants(variant: str, training: dict) -> list[str]:
    """The variant directories of one fine-tuned run: untagged first seed, then seed tags."""
    return [variant] + [f"{variant}-seed{s}" for s in run_seeds(training)[1:]]


def run(model: str, variant: str, label: str, kind: str) -> dict[str, str]:
    return {"model": model, "variant": variant, "label": label, "kind": kind}


def fine_tuned(model: str, variant: str, label: str, training: dict, **extra) -> dict:
    """A fine-tuned run with its seed replicates (``replicates``: the variant directories)."""
    return {
        **run(model, variant, label, "fine_tuned"),
        "replicates": replicate_variants(variant, training),
        **extra,
    }


@dataclass
class EvaluationRuns:
    backbones: list[str]
    care_variant: str
    selection: str
    baselines: list[dict] = field(default_factory=list)
    care: list[dict] = field(default_factory=list)
    ablation: list[dict] = field(default_factory=list)
    human_model: str | None = None

    sensitivity: list[dict] = field(default_factory=list)

    @property
    def table2(self) -> list[dict]:
        """Human counselor, zero-shot baselines, CARE per backbone (the paper's rows), then the
        test-fold-selection sensitivity rows if configured."""
        return self.baselines + self.care + self.sensitivity

    @property
    def table4(self) -> list[dict]:
        """The lexical baseline (the line every model is read against), then the ablation."""
        return [r for r in self.baselines if r["model"] == "lexical"] + self.ablation

    @property
    def fine_tuned_variants(self) -> list[tuple[str, str]]:
        """Every (backbone, variant directory) the tables read: replicates included."""
        out = []
        for r in self.care + self.ablation + self.sensitivity:
            for v in r.get("replicates", [r["variant"]]):
                if (r["model"], v) not in out:
                    out.append((r["model"], v))
        return out

    @property
    def rationale(self) -> list[dict]:
        """Fine-tuned runs that generate rationales (Table 3, the human sheet)."""
        return [r for r in self.care if r["variant"] == "rationale"]

    @property
    def all(self) -> list[dict]:
        """Every run once (replicates are not runs of their own)."""
        seen, out = set(), []
        for r in self.table2 + self.ablation:
            if (r["model"], r["variant"]) not in seen:
                seen.add((r["model"], r["variant"]))
                out.append(r)
        return out


def evaluation_runs(config: dict) -> EvaluationRuns:
    variants = list(config["variants"])
    backbones = list(config["backbones"])
    care_variant = "rationale" if "rationale" in variants else variants[0]
    baselines_cfg = config["baselines"]
    baselines = []
    if baselines_cfg["counselor"]:
        baselines.append(run("counselor", "human", "Human counselor", "counselor"))
    baselines += [
        run(name, variant, TEXT_BASELINE_LABELS[name], "text")
        for name, variant in TEXT_BASELINES.items()
        if baselines_cfg[name]
    ]
    baselines += [
        run(b["name"], "zero_shot", b["label"], "zero_shot") for b in baselines_cfg["zero_shot"]
    ]
    training = config["training"]
    selection = training["selection"]
    care_label = {
        b: f"CARE ({b})" if care_variant == "rationale" else f"CARE ({b}, {care_variant})"
        for b in backbones
    }
    care = [
        fine_tuned(b, care_variant, care_label[b], training, selection=selection)
        for b in backbones
    ]
    ablation = [
        fine_tuned(b, v, f"{b} · {v}", training, selection=selection)
        for b in backbones
        for v in variants
    ]
    evaluation = config["evaluation"]
    sensitivity = []
    if evaluation["sensitivity"]["test_fold_selection"]:
        sensitivity = [
            {
                **run(b, f"{care_variant}-{TEST_FOLD_TAG}", f"{care_label[b]}, {TEST_FOLD_LABEL}",
                      "fine_tuned"),
                "replicates": [f"{care_variant}-{TEST_FOLD_TAG}"],
                "selection": "heldout_fold",
            }
            for b in backbones
        ]
    human = evaluation["human_eval"]
    _check_backbone(human["model"], backbones, "evaluation.human_eval.model", variants)
    source = evaluation["log_odds"]["source"]
    if source != "expert":
        _check_backbone(source, backbones, "evaluation.log_odds.source", variants)
    return EvaluationRuns(
        backbones=backbones,
        care_variant=care_variant,
        baselines=baselines,
        care=care,
        ablation=ablation,
        sensitivity=sensitivity,
        selection=selection,
        human_model=human["model"] or (backbones[0] if backbones else None),
    )


def _check_backbone(name: str | None, backbones: list[str], key: str, variants: list[str]):
    """A config value naming a backbone's generated rationales must name a configured one."""
    if name is None:
        return
    if name not in backbones:
        raise ValueError(f"{key}: {name!r} is not a configured backbone {backbones}")
    if "rationale" not in variants:
        raise ValueError(f"{key}: {name!r} needs the 'rationale' variant to have rationales")
