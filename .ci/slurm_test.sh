#!/usr/bin/env bash
# CI step: start a single-node SLURM cluster on this machine and submit the tiny demo DAG
# through profiles/slurm (tests/test_slurm.py); its tables must equal a local run's.
# Run from anywhere after .ci/run has made .venv; needs root (or sudo) for the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -eq 0 ]]; then
    .ci/slurm_setup.sh
else
    sudo --preserve-env=SLURM_PARTITION,SLURM_SETUP_TIMEOUT .ci/slurm_setup.sh
fi
sinfo

if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
status=0
CARE_SLURM=1 python -m pytest -q -m slurm -rA tests/test_slurm.py || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- squeue --states=all" >&2
    squeue --states=all >&2 || true
    echo "--- slurmctld/slurmd logs" >&2
    tail -n 40 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
fi
exit $status
