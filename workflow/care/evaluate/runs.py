"""Which runs the evaluation tables compare, derived from the workflow config.

Imported by ``workflow/rules/evaluate.smk`` when Snakemake parses the workflow, so it stays
free of heavy imports. A run is one (model, variant): fine-tuned backbones with each variant,
zero-shot baselines (variant ``zero_shot``) and the human counselor (``counselor``/``human``).
Sections that are absent (an older config, a stage not configured) give no runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _entries(section) -> list[tuple[str, str]]:
    """(name, label) of a config section given as a mapping or a list of {name, label}."""
    if isinstance(section, dict):
        return [(name, (spec or {}).get("label", name)) for name, spec in section.items()]
    out = []
    for entry in section or []:
        if isinstance(entry, dict):
            out.append((entry["name"], entry.get("label", entry["name"])))
        else:
            out.append((str(entry), str(entry)))
    return out


def run(model: str, variant: str, label: str, kind: str) -> dict[str, str]:
    return {"model": model, "variant": variant, "label": label, "kind": kind}


@dataclass
class EvaluationRuns:
    backbones: list[str]
    care_variant: str
    baselines: list[dict] = field(default_factory=list)
    care: list[dict] = field(default_factory=list)
    ablation: list[dict] = field(default_factory=list)
    selection: str = "unspecified"
    human_model: str | None = None

    @property
    def table2(self) -> list[dict]:
        """Human counselor, zero-shot baselines, then CARE per backbone (the paper's rows)."""
        return self.baselines + self.care

    @property
    def rationale(self) -> list[dict]:
        """Fine-tuned runs that generate rationales (Table 3, the human sheet)."""
        return [r for r in self.care if r["variant"] == "rationale"]

    @property
    def all(self) -> list[dict]:
        seen, out = set(), []
        for r in self.table2 + self.ablation:
            if (r["model"], r["variant"]) not in seen:
                seen.add((r["model"], r["variant"]))
                out.append(r)
        return out


def evaluation_runs(config: dict) -> EvaluationRuns:
    variants = list(config["variants"])
    backbones = [name for name, _ in _entries(config.get("backbones", {}))]
    care_variant = "rationale" if "rationale" in variants else variants[0]
    baselines_cfg = config.get("baselines", {}) or {}
    baselines = []
    if baselines_cfg.get("counselor", False):
        baselines.append(run("counselor", "human", "Human counselor", "counselor"))
    baselines += [
        run(name, "zero_shot", label, "zero_shot")
        for name, label in _entries(baselines_cfg.get("zero_shot", []))
    ]
    care = [
        run(
            b,
            care_variant,
            f"CARE ({b})" if care_variant == "rationale" else f"CARE ({b}, {care_variant})",
            "fine_tuned",
        )
        for b in backbones
    ]
    ablation = [run(b, v, f"{b} · {v}", "fine_tuned") for b in backbones for v in variants]
    evaluation = config.get("evaluation", {}) or {}
    human = evaluation.get("human_eval", {}) or {}
    _check_backbone(human.get("model"), backbones, "evaluation.human_eval.model", variants)
    source = (evaluation.get("log_odds", {}) or {}).get("source", "expert")
    if source != "expert":
        _check_backbone(source, backbones, "evaluation.log_odds.source", variants)
    return EvaluationRuns(
        backbones=backbones,
        care_variant=care_variant,
        baselines=baselines,
        care=care,
        ablation=ablation,
        selection=str((config.get("training", {}) or {}).get("selection", "unspecified")),
        human_model=human.get("model") or (backbones[0] if backbones else None),
    )


def _check_backbone(name: str | None, backbones: list[str], key: str, variants: list[str]):
    """A config value naming a backbone's generated rationales must name a configured one."""
    if name is None:
        return
    if name not in backbones:
        raise ValueError(f"{key}: {name!r} is not a configured backbone {backbones}")
    if "rationale" not in variants:
        raise ValueError(f"{key}: {name!r} needs the 'rationale' variant to have rationales")
