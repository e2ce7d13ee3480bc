# The run's record: results/provenance.json (config as resolved, git commit, package versions,
# input checksums, hardware, seeds, times), written after every other output of `all`, and
# its summary for the HTML report's first page; the end-of-run summary on the console.

import sys
from datetime import datetime, timezone

from care.provenance import COMMAND_ENV, STARTED_ENV

# Jobs inherit these: the provenance job records when and how this run was started.
_os.environ.setdefault(STARTED_ENV, datetime.now(timezone.utc).isoformat(timespec="seconds"))
_os.environ.setdefault(COMMAND_ENV, shlex.join(["snakemake", *sys.argv[1:]]))

# The run's inputs (the corpora, instrument, expert sheet, prompts, DeepSpeed config, external
# checkpoints): their checksums go into the record, with those of the tables.
PROVENANCE_SOURCES = sorted(
    {
        INSTRUMENT,
        SESSIONS,
        *([UNLABELED] if UNLABELED else []),
        *([RAT["edited_sheet"]] if EXPERT_RATIONALES else []),
        *([TRAINING["deepspeed"]] if TRAINING["deepspeed"] else []),
        *(model_input(b["path"]) for b in TRAIN_BACKBONES.values() if "path" in b),
        *PROMPT_FILES,
    }
)
PROVENANCE_OUTPUTS = list(ALL_TARGETS)  # a copy: `all` gets the record below


rule provenance:
    input:
        sources=PROVENANCE_SOURCES,
        outputs=PROVENANCE_OUTPUTS,
    output:
        record=report(
            "results/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"record": "provenance.json"},
        ),
        summary="results/provenance.rst",
    log:
        "logs/provenance.log",
    conda:
        CARE_ENV
    params:
        config=as_json(config),
        tables=lambda wc, input: " ".join(p for p in input.outputs if p.endswith(".csv")),
    shell:
        "care provenance --config {params.config} --inputs {input.sources} {params.tables} "
        "--outputs {input.outputs} --out {output.record} --rst {output.summary} 2> {log}"


# Maintainers: `snakemake --cores all readme` after the demo rewrites the README's generated
# results block (Table 2, provenance) and its screenshot from this run's outputs;
# `care readme --check` (and tests/test_readme.py) fail when the README and a run disagree.
rule readme:
    input:
        table2="results/table2.csv",
        provenance="results/provenance.json",
        instrument=INSTRUMENT,
        page=["results/application/session_report.html"] if UNLABELED else [],
        digests=["results/application/digests.html"] if UNLABELED else [],
    output:
        "results/readme_block.md",
    log:
        "logs/readme.log",
    conda:
        CARE_ENV
    params:
        screenshot=lambda wc, input: (
            f"--page {input.page} --image docs/img/session_report.png "
            f"--digest-page {input.digests} --digest-image docs/img/digest.png"
            if input.page
            else ""
        ),
    shell:
        "care readme --write --table2 {input.table2} --instrument {input.instrument} "
        "--provenance {input.provenance} {params.screenshot} --readme README.md "
        "--out {output} 2> {log}"


ALL_TARGETS.append("results/provenance.json")


# The end of a run: outputs built per kind, Table 2's Pearson r, the provenance record.
onsuccess:
    from care.summary import run_summary

    print(run_summary(ALL_TARGETS, _os.environ.get(STARTED_ENV), instrument=INSTRUMENT))
