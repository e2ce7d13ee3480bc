"""A counselor-facing report of one session as a self-contained HTML page.

The page holds the numbered transcript (with strategy and reaction labels when the corpus has
them) and, per dimension, the predicted score, the model's probability over the scale points
(the mean of the items' distributions, as inline SVG bars) and every item's score, probability
and rationale. The turns a rationale cites (:func:`care.prompts.cited_turns`) are highlighted in
the transcript, and the citations in the rationale link to them. Everything is inline (CSS and
SVG; no scripts, fonts or images from anywhere), so the file can be mailed or archived alone.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from care import prompts
from care.errors import CareInputError
from care.evaluate.figures import dimension_color
from care.instrument import Instrument
from care.io import atomic_open
from care.names import file_stem
from care.sessions import Session

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# --------------------------------------------------------------------------- pieces


def prob_svg(probs, points: list[int], color: str, width: int = 150, height: int = 64) -> Markup:
    """Vertical bars of a distribution over the scale points, the most likely one outlined."""
    if probs is None or len(probs) != len(points):
        return Markup('<span class="na">no probabilities (score-only answer or API model)</span>')
    probs = np.asarray(probs, dtype=float)
    slot = width / len(points)
    top = int(np.argmax(probs))
    plot_h = height - 16
    parts = [f'<svg class="probs" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="probability over scale">']
    for k, (p, point) in enumerate(zip(probs, points, strict=True)):
        bar_h = max(p * plot_h, 0.5)
        x = k * slot + 3
        stroke = ' stroke="#1a202c" stroke-width="1.5"' if k == top else ""
        parts.append(
            f'<rect x="{x:.1f}" y="{plot_h - bar_h:.1f}" width="{slot - 6:.1f}" '
            f'height="{bar_h:.1f}" fill="{color}"{stroke}><title>{point}: {p:.2f}</title></rect>'
            f'<text x="{x + (slot - 6) / 2:.1f}" y="{height - 3}" text-anchor="middle" '
            f'font-size="11">{point}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def link_citations(rationale: str | None, n_turns: int) -> Markup:
    """Escape a rationale and turn each cited turn number into a link to that turn."""
    if not rationale:
        return Markup("")
    text = str(escape(rationale))

    def link(match: re.Match) -> str:
        def one(num: re.Match) -> str:
            n = int(num.group())
            return f'<a href="#turn-{n}">{n}</a>' if 1 <= n <= n_turns else num.group()

        return re.sub(r"\d+", one, match.group())

    # the same citation grammar cited_turns() reads, so links and highlights agree
    return Markup(prompts._CITE.sub(link, text))


def _fmt(value) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- page model


def report_context(
    session: Session, predictions: pd.DataFrame, instrument: Instrument, notice=None
) -> dict:
    """Everything the template shows, computed here so the template only lays it out."""
    rows = predictions[predictions["session_id"] == session.session_id].set_index("item_id")
    if rows.empty:
        raise CareInputError("predictions", f"no predictions for session {session.session_id!r}",
                             field="session_id")
    lang = session.language
    points = instrument.scale_points
    n_turns = len(session.turns)
    cited_by: dict[int, list[dict]] = {}
    dims = []
    for k, dim in enumerate(instrument.dimensions):
        color = dimension_color(k)
        items, dist = [], []
        for item_id in dim.items:
            r = rows.loc[item_id] if item_id in rows.index else None
            probs = None if r is None or r.get("probs") is None else list(r["probs"])
            if probs is not None and len(probs) == len(points):
                dist.append(probs)
            rationale = None if r is None else r.get("rationale")
            rationale = None if rationale is None or pd.isna(rationale) else str(rationale)
            cites = [n for n in prompts.cited_turns(rationale or "") if 1 <= n <= n_turns]
            for n in cites:
                cited_by.setdefault(n, []).append(
                    {"dim": dim.id, "label": dim.label(lang), "item": item_id, "color": color})
            items.append({
                "id": item_id, "wording": instrument.items[item_id].wording(lang),
                "score": _fmt(None if r is None else r["score"]),
                "expected": _fmt(None if r is None else r.get("score_expected")),
                "parsed": bool(r is not None and r.get("parsed", True)),
                "error": None if r is None else r.get("parse_error"),
                "probs": prob_svg(probs, points, color, width=120, height=52),
                "rationale": link_citations(rationale, n_turns), "cites": cites,
            })
        scores = instrument.dimension_scores(
            {i: (None if i not in rows.index or pd.isna(rows.loc[i, "score"])
                 else float(rows.loc[i, "score"])) for i in dim.items})
        mean_probs = np.mean(dist, axis=0).tolist() if dist else None
        dims.append({
            "id": dim.id, "label": dim.label(lang), "color": color,
            "description": dim.description.get(lang) or dim.description.get("en", ""),
            "score": _fmt(scores[dim.id]), "probs": prob_svg(mean_probs, points, color),
            "entries": items,
        })
    names = prompts.labels(lang)
    turns = [{
        "n": n, "speaker": t.speaker, "speaker_label": names[t.speaker], "text": t.text,
        "label": t.strategy if t.speaker == "counselor" else t.reaction,
        "cited_by": _group_citations(cited_by.get(n, [])),
    } for n, t in enumerate(session.turns, start=1)]
    first = rows.iloc[0]
    return {
        "session": session, "dims": dims, "turns": turns, "scale": points,
        "scale_text": prompts.scale_text(instrument, lang), "instrument": instrument.name,
        "model": f"{first.get('model', '?')} / {first.get('variant', '?')} / fold "
                 f"{first.get('fold', '?')}",
        "n_cited": len(cited_by), "notice": notice,
    }


def _group_citations(cites: list[dict]) -> list[dict]:
    """One badge per citing dimension: its label, color and the items that cite the turn."""
    grouped: dict[str, dict] = {}
    for c in cites:
        entry = grouped.setdefault(c["dim"], {"label": c["label"], "color": c["color"],
                                              "item_ids": []})
        entry["item_ids"].append(c["item"])
    return list(grouped.values())


def render_session(session: Session, predictions: pd.DataFrame, instrument: Instrument,
                   notice=None) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    return env.get_template("session_report.html.j2").render(
        **report_context(session, predictions, instrument, notice))


def write_session_report(session, predictions, instrument, out: str | Path, notice=None) -> Path:
    with atomic_open(out) as f:
        f.write(render_session(session, predictions, instrument, notice))
    return Path(out)


# --------------------------------------------------------------------------- choosing sessions


def select_sessions(scores: pd.DataFrame, *, lowest: int = 0, highest: int = 0,
                    ids: list[str] | None = None) -> list[str]:
    """Explicit ids, then the sessions with the lowest / highest mean predicted alliance."""
    dims = [c for c in scores.columns if c not in ("session_id", "counselor_id")]
    overall = scores.assign(overall=scores[dims].mean(axis=1)).dropna(subset=["overall"])
    ordered = overall.sort_values(["overall", "session_id"])["session_id"].tolist()
    known = set(scores["session_id"])
    chosen = []
    for n, sid in enumerate(ids or []):
        if sid not in known:
            raise CareInputError("config", f"session {sid!r} is not in the predictions",
                                 field=f"application.report_sessions.ids.{n}")
        chosen.append(sid)
    chosen += ordered[:lowest] + (ordered[-highest:] if highest else [])
    return list(dict.fromkeys(chosen))


def write_reports(sessions: list[Session], predictions: pd.DataFrame, instrument: Instrument,
                  scores: pd.DataFrame, out_dir: str | Path, notice=None,
                  **selection) -> list[Path]:
    """One page per chosen session under ``out_dir`` plus an ``index.html`` linking them."""
    out_dir = Path(out_dir)
    by_id = {s.session_id: s for s in sessions}
    chosen = select_sessions(scores, **selection)
    paths = []
    for sid in chosen:
        paths.append(write_session_report(by_id[sid], predictions, instrument,
                                          out_dir / f"{file_stem(sid)}.html", notice))
    overall = scores.set_index("session_id")
    dims = [c for c in scores.columns if c not in ("session_id", "counselor_id")]
    links = "\n".join(
        f'<li><a href="{file_stem(sid)}.html">{escape(sid)}</a> (counselor '
        f"{escape(by_id[sid].counselor_id)}; "
        + ", ".join(f"{d} {_fmt(overall.loc[sid, d])}" for d in dims) + ")</li>"
        for sid in chosen)
    with atomic_open(out_dir / "index.html") as f:
        f.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                "<title>Session reports</title></head>\n<body><h1>Session reports</h1>\n"
                f"{notice.html() if notice else ''}\n"
                f"<ul>\n{links}\n</ul>\n</body></html>\n")
    return paths


# --------------------------------------------------------------------------- screenshots


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: str | Path, png: str | Path, *, width: int = 1200, height: int = 2000,
               browser: str | None = None, timeout: float = 120) -> Path:
    """Render ``html`` in headless Chromium and save a PNG (for checks and for the docs)."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found (install Debian's `chromium`)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="care-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", Path(html).resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return png
