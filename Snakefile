# care-alliance: the CARE pipeline from transcripts to the paper's tables and figures.
#
#   snakemake --cores all results/table2.csv     # the main table (builds what it needs)
#   snakemake --cores all                        # every table, figure and the report
#
# Rules live in workflow/rules/, one file per stage; the logic in the `care` package.

from snakemake.utils import min_version

from care.config import validate_config, without_job_keys

min_version("9.0")


# A config given on the command line (--configfile, or a profile's `configfile:`) stands
# alone over the schema's defaults: config.yaml (the demo) is read only when none is given,
# so no demo key leaks into a user's run. (Snakemake would merge the two.) Cluster jobs get
# the same --configfile list as the main run, so they load the same config.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


# Fills the schema's defaults; an error names the config file(s).
validate_config(config, workflow, "workflow/schemas/config.schema.yaml")


# The HTML report: snakemake --report results/report.html (tables, figures, captions).
report: "workflow/report/workflow.rst"


# Each stage file appends its final outputs to ALL_TARGETS.
ALL_TARGETS = []


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/rationales.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/report.smk"


# Under a cluster executor (profiles/slurm) these light rules run on the submitting node
# instead of as jobs. The one list of the workflow's local rules, by stage.
localrules:
    all,
    # data
    validate_sessions,
    folds,
    # rationales
    export_expert_sheet,
    import_expert_edits,
    rationale_stats,
    # inference
    counselor_baseline,
    # evaluation
    table2,
    table3,
    table4,
    table5,
    human_eval_export,
    human_eval_import,
    # figures
    figure3,
    scatter_figure,
    ablation_figure,
    training_curves,
    # the run's record
    provenance,
    readme,


rule all:
    default_target: True
    input:
        ALL_TARGETS,
