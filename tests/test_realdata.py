"""Real data in: the importer, `care data validate` for humans, ids that cannot escape, configs
that stand alone (issues 12 and 17)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from care import importer
from care.apply import digest, predict, session_report
from care.config import check_config
from care.errors import CareInputError
from care.instrument import load_instrument
from care.io import write_jsonl
from care.names import MAX_ID_LENGTH, file_stem
from care.sessions import check_corpus, load_sessions

from .conftest import REPO, copy_workflow, run_snakemake

HOSTILE_IDS = ["../../../x", "..", ".", "a/b", "/etc/passwd", "a\\b", "C:\\x", "CON", "nul.txt",
               "lpt1", "李-01", "é" * 100, "x" * MAX_ID_LENGTH, "with space", "-rf", "a:b*?<>|"]


def care(*args):
    from care.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stderr=err.getvalue(), stdout=out.getvalue())


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- ids


def test_file_stem_is_safe_and_unique_for_hostile_ids():
    stems = [file_stem(i) for i in HOSTILE_IDS]
    assert len(set(stems)) == len(stems)
    for value, stem in zip(HOSTILE_IDS, stems, strict=True):
        assert stem and len(stem) <= 69, value
        assert set(stem) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        assert not stem.startswith(".")
        assert stem.split(".")[0].lower() not in {"con", "nul", "lpt1", "prn", "aux"}
    assert file_stem("c001-s01") == "c001-s01"  # ordinary ids keep their name


@pytest.mark.parametrize("bad, why", [
    ("a\x00b", "control characters"), ("a\nb", "control characters"),
    ("x" * 300, "at most 128 characters"), (" a", "whitespace"), ("a\u2028b", "control"),
])
def test_ids_a_file_name_cannot_hold_are_refused_naming_the_line(tmp_path, small_corpus,
                                                                 instrument, bad, why):
    _, records, _ = small_corpus
    recs = [dict(r) for r in records[:4]]
    recs[2]["counselor_id"] = bad
    path = tmp_path / "s.jsonl"
    write_jsonl(path, recs)
    with pytest.raises(CareInputError) as err:
        load_sessions(path, instrument)
    assert err.value.line == 3 and err.value.field == "counselor_id" and why in err.value.message


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory, instrument):
    """A corpus whose session and counselor ids are the hostile ones, with predictions."""
    from care.corpus import CorpusSpec, generate

    from .test_apply import fake_rows

    spec = CorpusSpec(n_clients=6, sessions_per_client=(3, 3), n_counselors=2,
                      turns_per_session=(8, 10), seed=3)
    records, refs = generate(spec, instrument, labeled=True, prefix="h")
    rename = dict(zip([r["session_id"] for r in records], HOSTILE_IDS, strict=False))
    clients = sorted({r["client_id"] for r in records})
    for r in records:
        r["session_id"] = rename.get(r["session_id"], r["session_id"])
        # two counselors: '../../../x' and 'a/b'
        r["counselor_id"] = HOSTILE_IDS[3 * (clients.index(r["client_id"]) % 2)]
    for r in refs:
        r["session_id"] = rename.get(r["session_id"], r["session_id"])
    tmp = tmp_path_factory.mktemp("hostile")
    path = tmp / "corpus.jsonl"
    write_jsonl(path, records)
    sessions = predict.load_corpus(path, instrument)
    frame = predict.prediction_frame(fake_rows(records, refs, instrument), sessions, instrument,
                                     model="m", variant="rationale", fold=1)
    return {"path": path, "records": records, "refs": refs, "sessions": sessions,
            "predictions": frame, "scores": predict.session_scores(frame, instrument)}


def test_hostile_ids_stay_inside_every_per_session_and_per_counselor_output(
        tmp_path, instrument, hostile_corpus):
    work = tmp_path / "deep" / "er" / "out"
    work.mkdir(parents=True)
    c = hostile_corpus
    assert load_sessions(c["path"], instrument)  # the contract accepts them
    session_report.write_reports(c["sessions"], c["predictions"], instrument, c["scores"],
                                 work / "sessions", ids=[s.session_id for s in c["sessions"]])
    digest.write_digests(c["predictions"], c["scores"], instrument, c["sessions"],
                         work / "digests", counselors=[], min_sessions=1, threshold=3.0,
                         top_k=3, n_examples=1)
    written = files_under(tmp_path)
    assert all(work in p.parents for p in written), sorted(map(str, written))
    pages = files_under(work / "sessions")
    assert len(pages) == len(c["sessions"]) + 1  # one per session (none overwritten) + index
    assert len(files_under(work / "digests")) == 2 * 2 + 2  # md+html per counselor, indexes


def test_hostile_ids_survive_the_expert_sheet_round_trip(tmp_path, hostile_corpus):
    c = hostile_corpus
    refs = tmp_path / "refs.jsonl"
    write_jsonl(refs, c["refs"])
    inst = REPO / "workflow/instruments/wai_sr.yaml"
    steps = [
        ["rationales", "draft", "--sessions", c["path"], "--instrument", inst, "--backend",
         "extractive", "--spec", "{}", "--cache-dir", tmp_path / "cache",
         "--out", tmp_path / "drafts.jsonl"],
        ["rationales", "export", "--drafts", tmp_path / "drafts.jsonl", "--sessions", c["path"],
         "--instrument", inst, "--out", tmp_path / "sheet.xlsx"],
        ["rationales", "simulate-edits", "--sheet", tmp_path / "sheet.xlsx", "--references",
         refs, "--editor", "e1", "--out", tmp_path / "edited.xlsx"],
        ["rationales", "import", "--sheet", tmp_path / "edited.xlsx", "--drafts",
         tmp_path / "drafts.jsonl", "--instrument", inst, "--out", tmp_path / "r.parquet"],
    ]
    for step in steps:
        done = care(*step)
        assert done.returncode == 0, done.stderr
    got = set(pd.read_parquet(tmp_path / "r.parquet")["session_id"])
    assert got == {r["session_id"] for r in c["records"]}
    assert all(tmp_path in p.parents for p in files_under(tmp_path))


def test_backbone_names_cannot_name_a_path():
    base = {"data": {"sessions": "s.jsonl"}, "rationales": {"edited_sheet": "x.xlsx"}}
    for name in ("../x", "a/b", ".hidden", "counselor"):
        with pytest.raises(CareInputError) as err:
            check_config({**base, "backbones": {name: {"path": "/m"}}}, ["my.yaml"])
        assert "my.yaml" in str(err.value) and err.value.field == "backbones"


# --------------------------------------------------------------------------- validation


def _bad_corpus(tmp_path, records) -> Path:
    recs = json.loads(json.dumps(records[:9]))
    recs[0]["client_ratings"]["3"] = "5"
    recs[1]["client_ratings"]["4"] = 4.5
    recs[2]["turns"][1]["text"] = " \t "
    recs[3]["turns"] = [t for t in recs[3]["turns"] if t["speaker"] == "client"]
    recs[4]["session_id"] = "a\x00b"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    return path


def test_validate_reports_every_error_with_line_and_field(tmp_path, small_corpus):
    _, records, _ = small_corpus
    path = _bad_corpus(tmp_path, records)
    out = tmp_path / "table.tsv"
    done = care("data", "validate", "--sessions", path, "--instrument",
                REPO / "workflow/instruments/wai_sr.yaml", "--out", out)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and not out.exists()
    want = [(1, "client_ratings.3", "is not a number: write it without quotes"),
            (2, "client_ratings.4", "not an integer"),
            (3, "turns.1.text", "blank"),
            (4, "turns", "no counselor turns"),
            (5, "session_id", "control characters")]
    assert len(lines) == len(want), done.stderr
    for line, (n, field, text) in zip(lines, want, strict=True):
        assert line.startswith(f"care data validate: error: {path}:{n}: field '{field}':"), line
        assert text in line
    limited = care("data", "validate", "--sessions", path, "--instrument",
                   REPO / "workflow/instruments/wai_sr.yaml", "--max-errors", "2")
    assert limited.stderr.count("care data validate: error:") == 3  # 2 errors + "stopped after"
    assert "stopped after 2 errors" in limited.stderr


def test_fractional_ratings_are_allowed_when_the_instrument_says_so(tmp_path, small_corpus):
    _, records, _ = small_corpus
    inst = yaml.safe_load((REPO / "workflow/instruments/wai_sr.yaml").read_text())
    inst["scale"]["integer"] = False
    (tmp_path / "i.yaml").write_text(yaml.safe_dump(inst, allow_unicode=True))
    recs = json.loads(json.dumps(records))
    recs[0]["client_ratings"]["4"] = 4.5
    write_jsonl(tmp_path / "s.jsonl", recs)
    sessions = load_sessions(tmp_path / "s.jsonl", load_instrument(tmp_path / "i.yaml"))
    assert sessions[0].client_ratings["4"] == 4.5


def test_bom_is_accepted_and_missing_languages_warn(tmp_path, small_corpus, instrument):
    _, records, _ = small_corpus
    recs = json.loads(json.dumps(records))
    for r in recs:
        r["language"] = "fr"
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in recs).encode())
    check = check_corpus(path, instrument, languages={"en", "zh"})
    assert not check.errors and len(check.sessions) == len(recs)
    assert any("no wording" in w for w in check.warnings)
    assert any("no prompt templates" in w for w in check.warnings)


def test_summary_counts(tmp_path, small_corpus):
    path, records, _ = small_corpus
    done = care("data", "validate", "--sessions", path, "--instrument",
                REPO / "workflow/instruments/wai_sr.yaml", "--summary")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"sessions: {len(records)}" in text
    assert f"clients: {len({r['client_id'] for r in records})}" in text
    n4 = sum(1 for r in records if r["client_ratings"]["4"] == 5)
    assert f"5:{n4}" in next(line for line in text.splitlines() if "goal/4:" in line)
    assert "strategy labels: " in text and "reaction labels: " in text
    assert "dialogue length (whitespace words): min" in text


def test_config_errors_name_the_config_file():
    with pytest.raises(CareInputError) as err:
        check_config({"data": {"sessions": "x"}, "rationales": {"edited_sheet": "e.xlsx"},
                      "max_length": "long"}, ["/home/me/study.yaml"])
    assert str(err.value).startswith("/home/me/study.yaml: field 'max_length': invalid config")


def test_config_defaults_fill_a_minimal_config():
    config = check_config({"data": {"sessions": "x.jsonl", "unlabeled": None},
                           "rationales": {"edited_sheet": "e.xlsx"}})
    assert config["demo_corpus"] == {"enabled": False}
    assert config["folds"]["n_folds"] == 5 and config["prompts"] == "workflow/prompts"
    assert config["rationales"]["backend"] == "extractive"
    assert "application" not in config and config["backbones"] == {}


# --------------------------------------------------------------------------- import


def _conversations(n=6):
    out = []
    for k in range(n):
        dialog = [{"role": "system", "content": "conversation start"}]
        for t in range(4):
            dialog.append({"role": "supporter", "content": f"How are you, {t}?",
                           "annotation": {"strategy": "Question"}})
            dialog.append({"role": "seeker", "content": f"I am fine {t}." if t else "  "})
        out.append({"conv": f"conv {k}", "user": f"u{k // 2}", "lang": "en", "dialog": dialog,
                    "survey": {"empathy": str(1 + k % 5), "relevance": 2 + k % 3}})
    out[1]["survey"]["empathy"] = "n/a"
    out[2]["dialog"] = [t for t in out[2]["dialog"] if t["role"] != "supporter"]
    return out


MAPPING = {
    "session_id": "conv", "client_id": "user", "language": {"field": "lang"}, "turns": "dialog",
    "turn": {"speaker": "role", "text": "content", "strategy": "annotation.strategy"},
    "speakers": {"supporter": "counselor", "seeker": "client"},
    "client_ratings": {"empathy": "survey.empathy", "relevance": "survey.relevance"},
}


def test_import_conversations_reports_what_it_dropped(tmp_path, caplog):
    src = tmp_path / "convs.json"
    src.write_text(json.dumps(_conversations()), encoding="utf-8")
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(MAPPING))
    with caplog.at_level("INFO"):
        done = care("data", "import", "conversations", "--input", src, "--mapping",
                    tmp_path / "map.yaml", "--out", tmp_path / "s.jsonl", "--unlabeled-out",
                    tmp_path / "u.jsonl", "--instrument-out", tmp_path / "inst.yaml",
                    "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sessions_read"] == 6
    assert report["dropped_sessions"] == {"no counselor turn": 1}
    assert report["dropped_turns"] == {"speaker 'system' not in the mapping's speakers": 6,
                                       "empty text": 6}
    assert report["dropped_ratings"] == {"item empathy: not a number ('n/a')": 1}
    # conv 1 lost a rating: it and its client's other session (conv 0) go unlabeled
    assert report["sessions_written"] == 3 and report["unlabeled_written"] == 2
    assert report["converted_ratings"] == 4
    inst = load_instrument(tmp_path / "inst.yaml")  # the skeleton is a valid instrument
    assert set(inst.item_ids) == {"empathy", "relevance"} and inst.integer
    sessions = load_sessions(tmp_path / "s.jsonl", inst)
    assert [s.counselor_id for s in sessions] == ["unknown"] * 3
    assert all(t.strategy == "Question" for s in sessions for t in s.turns
               if t.speaker == "counselor")
    assert load_sessions(tmp_path / "u.jsonl", inst, labeled=False)
    assert "sessions dropped: 1 (no counselor turn)" in caplog.text


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_import_turn_table(tmp_path, suffix):
    rows, ratings = [], []
    for k, conv in enumerate(_conversations(4)):
        for n, t in enumerate(conv["dialog"]):
            rows.append({"sid": conv["conv"], "cid": conv["user"], "th": f"t{k % 2}",
                         "who": t["role"], "utterance": t["content"], "n": str(10 - n)})
        ratings.append({"session": conv["conv"], "e": conv["survey"]["empathy"],
                        "r": str(conv["survey"]["relevance"])})
    turns, rates = tmp_path / f"turns{suffix}", tmp_path / f"ratings{suffix}"
    for frame, path in ((pd.DataFrame(rows), turns), (pd.DataFrame(ratings), rates)):
        if suffix == ".parquet":
            frame.to_parquet(path)
        else:
            frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    mapping = {"session_id": "sid", "client_id": "cid", "counselor_id": "th", "language": "en",
               "turn": {"speaker": "who", "text": "utterance", "order": "n"},
               "speakers": {"supporter": "counselor", "seeker": "client"},
               "client_ratings": {"empathy": "e", "relevance": "r"},
               "ratings_session_id": "session"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    done = care("data", "import", "turns", "--turns", turns, "--ratings", rates, "--mapping",
                tmp_path / "m.yaml", "--out", tmp_path / "s.jsonl")
    assert done.returncode == 0, done.stderr
    recs = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["session_id"] for r in recs] == ["conv 3"]  # 0, 1 (n/a) unlabeled; 2 dropped
    assert recs[0]["turns"][0]["text"] == "I am fine 3."  # ordered by the `n` column
    assert recs[0]["counselor_id"] == "t1" and recs[0]["client_ratings"] == {
        "empathy": 4, "relevance": 2}


def test_import_mapping_errors_name_the_key(tmp_path):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({**MAPPING, "speakers": {"a": "therapist"}}))
    done = care("data", "import", "conversations", "--input", tmp_path / "x.json", "--mapping",
                tmp_path / "m.yaml", "--out", tmp_path / "s.jsonl")
    assert done.returncode == 2 and "field 'speakers.a'" in done.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_importer_reads_json_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in _conversations()), encoding="utf-8")
    records, report = importer.import_conversations(path, MAPPING)
    assert len(records) == 5 and report.sessions_read == 6


def test_import_makes_ids_for_a_corpus_without_them(tmp_path):
    """--make-ids row numbers the records; hash digests them, so the ids survive reordering
    and a conversation given twice is one session."""
    convs = [{k: v for k, v in c.items() if k != "conv"} for c in _conversations()]
    mapping = {k: v for k, v in MAPPING.items() if k != "session_id"}
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in convs), encoding="utf-8")
    rows, _ = importer.import_conversations(path, mapping, "row")
    assert [r["session_id"] for r in rows] == ["row-000001", "row-000002", "row-000004",
                                               "row-000005", "row-000006"]  # 3: no counselor
    hashed, _ = importer.import_conversations(path, mapping, "hash")
    path.write_text("\n".join(json.dumps(c) for c in [*convs[::-1], convs[0]]),
                    encoding="utf-8")
    again, _ = importer.import_conversations(path, mapping, "hash")
    ids = [r["session_id"] for r in hashed]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"h-[0-9a-f]{16}", i) for i in ids)
    assert sorted(r["session_id"] for r in again) == sorted([*ids, ids[0]])
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    done = care("data", "import", "conversations", "--input", path, "--mapping",
                tmp_path / "m.yaml", "--make-ids", "hash", "--out", tmp_path / "s.jsonl",
                "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["dropped_sessions"] == {
        "no counselor turn": 1, "duplicate session id": 1, "incomplete client ratings "
        "(no --unlabeled-out)": 2}


def test_ids_come_from_the_mapping_or_the_option_never_both(tmp_path):
    no_ids = {k: v for k, v in MAPPING.items() if k != "session_id"}
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(no_ids))
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(MAPPING))
    with pytest.raises(CareInputError, match="--make-ids row"):
        importer.load_mapping(tmp_path / "none.yaml")
    with pytest.raises(CareInputError, match="makes the session ids"):
        importer.load_mapping(tmp_path / "both.yaml", "row")


# --------------------------------------------------------------------------- config


@pytest.mark.slow
def test_a_user_config_stands_alone(tmp_path, small_corpus):
    """No demo rule, file or key in a run with a user's config (--configfile, or a profile)."""
    work = copy_workflow(tmp_path)
    path, _, _ = small_corpus
    checkpoint = tmp_path / "checkpoint"  # a local model directory (only its config is read)
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (work / "my.yaml").write_text(yaml.safe_dump({
        "data": {"sessions": str(path), "unlabeled": None},
        "variants": ["score_only"],
        "backbones": {"m": {"path": str(checkpoint)}},
        "rationales": {"edited_sheet": "edited.xlsx"},
    }))
    # a fine-tune needs a recipe no default gives: said before any job runs
    dry = run_snakemake(work, "-n", "results/table2.csv", "--configfile", "my.yaml")
    assert dry.returncode != 0
    assert "my.yaml: field 'training': invalid config: 'learning_rate' is a required property" in (
        dry.stdout + dry.stderr
    )
    config = yaml.safe_load((work / "my.yaml").read_text())
    config["training"] = {"learning_rate": 5.0e-7, "per_device_train_batch_size": 1,
                          "num_train_epochs": 10}
    (work / "my.yaml").write_text(yaml.safe_dump(config))
    for args in (["results/table2.csv", "--configfile", "my.yaml"],
                 ["--configfile", "my.yaml", "--", "results/table2.csv"]):
        dry = run_snakemake(work, "-n", *args)
        out = dry.stdout + dry.stderr
        assert dry.returncode == 0, out[-3000:]
        assert "results/demo" not in out and "demo_corpus" not in out
        assert "results/models/m/score_only/fold5" in out and "llama" not in out
    profile = work / "myprofile"
    profile.mkdir()
    (profile / "config.yaml").write_text("configfile: my.yaml\n")
    dry = run_snakemake(work, "-n", "--profile", "myprofile", "results/table2.csv")
    assert dry.returncode == 0 and "results/demo" not in dry.stdout + dry.stderr


# --------------------------------------------------------------------------- degenerate cases


def one_dimension_instrument(tmp_path) -> Path:
    inst = yaml.safe_load((REPO / "workflow/instruments/wai_sr.yaml").read_text())
    items = [i["id"] for i in inst["items"]]
    inst["dimensions"] = [{"id": "overall", "name": {"en": "Overall"}, "items": items}]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(inst, allow_unicode=True))
    return path


def test_table5_with_one_dimension_says_why_it_is_empty(tmp_path, small_corpus):
    path, records, refs = small_corpus
    inst = one_dimension_instrument(tmp_path)
    table = tmp_path / "sessions.tsv"
    assert care("data", "validate", "--sessions", path, "--instrument", inst, "--out", table
                ).returncode == 0
    pd.DataFrame({"session_id": [r["session_id"] for r in refs],
                  "item_id": [r["item_id"] for r in refs],
                  "final": [r["rationale"] for r in refs]}).to_parquet(tmp_path / "r.parquet")
    done = care("evaluate", "table5", "--expert", tmp_path / "r.parquet", "--sessions-table",
                table, "--instrument", inst, "--out", tmp_path / "table5.csv")
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "table5.md").read_text()
    assert "has a single dimension" in md and "other two" not in md


def test_figure2_with_one_counselor_says_so(tmp_path, instrument, hostile_corpus, caplog):
    from care.apply.profiles import figure2

    scores = hostile_corpus["scores"].assign(counselor_id="unknown")
    with caplog.at_level("WARNING"):
        profiles = figure2(scores, instrument, stem=tmp_path / "figure2", table=None,
                           min_sessions=1)
    assert "one counselor" in caplog.text and (tmp_path / "figure2.png").stat().st_size > 0
    assert profiles["counselor_id"].nunique() == 2  # the corpus and its one counselor


def test_table8_without_reaction_labels_is_a_note_not_an_error(tmp_path, instrument,
                                                              hostile_corpus):
    from care.apply.patterns import Taxonomy, pattern_rates, regress, write_table8

    from .test_apply import TAXONOMY

    records = json.loads(json.dumps(hostile_corpus["records"]))
    for r in records:
        for t in r["turns"]:
            t.pop("reaction", None)
    path = tmp_path / "c.jsonl"
    write_jsonl(path, records)
    sessions = predict.load_corpus(path, instrument)
    taxonomy = Taxonomy.from_config(TAXONOMY)
    table = regress(pattern_rates(sessions, taxonomy, path), hostile_corpus["scores"],
                    instrument, taxonomy)
    assert table["coef"].isna().all() and (table["n_sessions"] == 0).all()
    write_table8(table, instrument, tmp_path / "table8.csv")
    assert "no labeled exchanges" in (tmp_path / "table8.md").read_text()


def test_locked_sheet_column_edits_are_logged(tmp_path, hostile_corpus, caplog):
    c = hostile_corpus
    inst = REPO / "workflow/instruments/wai_sr.yaml"
    assert care("rationales", "draft", "--sessions", c["path"], "--instrument", inst,
                "--backend", "extractive", "--cache-dir", tmp_path / "cache",
                "--out", tmp_path / "d.jsonl").returncode == 0
    assert care("rationales", "export", "--drafts", tmp_path / "d.jsonl", "--sessions",
                c["path"], "--instrument", inst, "--out", tmp_path / "s.xlsx").returncode == 0
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / "s.xlsx")
    ws = wb["rationales"]
    head = [cell.value for cell in ws[1]]
    ws.cell(row=3, column=head.index("draft") + 1, value="my edit, in the wrong column")
    wb.save(tmp_path / "edited.xlsx")
    with caplog.at_level("WARNING"):
        done = care("rationales", "import", "--sheet", tmp_path / "edited.xlsx", "--drafts",
                    tmp_path / "d.jsonl", "--instrument", inst, "--out", tmp_path / "r.parquet")
    assert done.returncode == 0, done.stderr
    assert "row 3" in caplog.text or ":3" in caplog.text
    assert "locked column 'draft' was edited" in caplog.text


def test_prompts_name_only_the_instrument_they_are_given(tmp_path):
    from care.prompts import build_messages
    from care.rationales.draft import drafting_messages
    from care.sessions import Session, Turn

    inst = {"name": "SRS", "scale": {"min": 0, "max": 10, "labels": {
                p: {"en": f"level {p}", "zh": f"{p}级"} for p in range(11)}},
            "dimensions": [{"id": "fit", "items": ["a", "b"]}],
            "items": [{"id": i, "text": {"en": f"item {i}", "zh": f"条目{i}"}} for i in "ab"]}
    (tmp_path / "i.yaml").write_text(yaml.safe_dump(inst, allow_unicode=True))
    inst = load_instrument(tmp_path / "i.yaml")
    for lang in ("en", "zh"):
        session = Session("s", "c", "t", lang, (Turn("counselor", "hi"), Turn("client", "ok")),
                          {"a": 7.0, "b": 3.0})
        texts = [m["content"] for m in build_messages(inst, ["a", "b"], "rationale", lang, "x")]
        texts += [m["content"] for m in drafting_messages(inst, session, "a", "x")]
        joined = " ".join(texts)
        for word in ("WAI", "Working Alliance", "Goal", "Task", "Bond", "工作同盟", "目标"):
            assert word not in joined, (lang, word)
        assert "SRS" in joined


def test_summary_counts_dialogue_tokens_of_a_model_tokenizer(tmp_path, small_corpus):
    from care.model.backbone import FAMILIES, train_tokenizer

    path, records, _ = small_corpus
    texts = [t["text"] for r in records for t in r["turns"]]
    tok = train_tokenizer(texts, FAMILIES["llama"], 400)
    tok.chat_template = FAMILIES["llama"].chat_template
    tok.save_pretrained(tmp_path / "tok")
    done = care("data", "validate", "--sessions", path, "--instrument",
                REPO / "workflow/instruments/wai_sr.yaml", "--summary", "--tokenizer",
                tmp_path / "tok")
    assert done.returncode == 0, done.stderr
    lengths = [len(tok("\n".join(t["text"] for t in r["turns"]),
                       add_special_tokens=False)["input_ids"]) for r in records]
    line = next(x for x in done.stdout.splitlines() if x.startswith("dialogue length (tokens"))
    assert f"max {max(lengths)}" in line and f"min {min(lengths)}" in line


def test_long_dialogues_are_cut_with_few_tokenizations():
    """A 2,000-turn dialogue: the fewest dropped middle turns that fit, in O(log n) counts."""
    from care.prompts import fit_dialogue

    lines = [f"[{n}] Client: " + "word " * (1 + n % 7) for n in range(1, 2001)]
    calls = []

    def count(text):
        calls.append(1)
        return len(text.split())

    text, dropped = fit_dialogue(lines, 500, count, "en")
    assert count(text) <= 500 and len(calls) < 20
    longer = fit_dialogue(lines, 500, lambda t: len(t.split()), "en")
    assert longer == (text, dropped)
    middle = len(lines) // 2
    k = dropped - 1  # one turn fewer dropped no longer fits
    fewer = "\n".join([*lines[:middle - k // 2], f"[... {k} turns omitted ...]",
                       *lines[middle + (k + 1) // 2:]])
    assert len(fewer.split()) > 500
