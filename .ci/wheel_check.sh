#!/usr/bin/env bash
# CI: the package works outside an editable install. Build the wheel, install it into a
# fresh venv and run `care --help`, `care data demo-corpus` and `care data validate` from
# outside the repository.
#
# The fresh venv gets the wheel with --no-deps and sees the dependencies of the CI venv
# (the one .ci/run made, active when this runs) through a .pth line: a fully separate
# install of torch, transformers, ... would cost minutes and gigabytes for no extra check
# (the dependency ranges are checked by the resolver in .ci/run and by care/versions.py).
# The CI venv's editable `care` is not visible there (.pth files inside a path added this
# way are not processed), so the `care` that runs is the wheel's.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" .
rm -rf workflow/*.egg-info build
deps="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/dist/care_alliance-*.whl
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$site/ci-dependencies.pth"

cd "$work"  # nothing of the source tree on the path
where="$("$work/venv/bin/python" -c 'import care; print(care.__file__)')"
case "$where" in "$work"/venv/*) ;; *) echo "care imported from $where, not the wheel" >&2; exit 1 ;; esac
"$work/venv/bin/care" --help >/dev/null
instrument="$("$work/venv/bin/python" -c \
    'from care.resources import resource_path; print(resource_path("instruments", "wai_sr.yaml"))')"
"$work/venv/bin/care" data demo-corpus --spec '{"n_clients": 6, "seed": 1}' --instrument "$instrument" \
    --sessions sessions.jsonl --references references.jsonl
"$work/venv/bin/care" data validate --sessions sessions.jsonl --instrument "$instrument"
echo "wheel check: care --help, care data demo-corpus and care data validate ran from the installed wheel ($where)"
