"""The triage report: `report.html` with `img/` beside it (docs/triage.md).

A thumbnail per prompt (`thumbnail`, drawn by the process that sampled it, when it has the
image): the image plane at the start slice, cropped to the square the model saw, the
agreement over it and the outlines of the commonest modes in colours. `write_report` (rank
0) writes the ranked table, a histogram of the scores and what the score means
(triage/score.py's docstring). matplotlib's Agg canvas, no pyplot (no display needed).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .. import worklist as wl
from ..io.atomic import atomic_output, atomic_write_bytes

MODE_COLOURS = ("#00e5ff", "#76ff03", "#ff4081", "#ffea00", "#ff9100", "#d500f9")
THUMB_PX = 168
HISTOGRAM = "img/score_histogram.png"


def display_plane(plane: np.ndarray, modality: str) -> np.ndarray:
    """A plane as 0..1 grey for a thumbnail: CT in the lung window (-1350..150 HU), 8-bit
    data as is, anything else between its 1st and 99th percentiles."""
    a = np.asarray(plane, dtype=np.float32)
    if a.ndim == 3:  # colour: its luma
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if modality == "CT":
        lo, hi = -1350.0, 150.0
    elif modality == "8bit":
        lo, hi = 0.0, 255.0
    else:
        lo, hi = (float(v) for v in np.percentile(a, (1, 99)))
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def _crop(bounds, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The square the model saw (bounds y0, x0, y1, x1), clipped to the image."""
    h, w = shape
    y0, x0, y1, x1 = (int(v) for v in bounds)
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if y1 - y0 < 4 or x1 - x0 < 4:
        return slice(0, h), slice(0, w)
    return slice(y0, y1), slice(x0, x1)


def _save(fig, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")


def thumbnail(plane: np.ndarray, modality: str, res, path: Path) -> Path:
    """The prompt's picture: the plane (at the start slice), the agreement over it and the
    representative outline of each of the commonest modes (MODE_COLOURS, rank order)."""
    from matplotlib.figure import Figure

    agreement = res.agreement if res.start is None else res.agreement[res.key]
    ys, xs = _crop(res.bounds, agreement.shape)
    fig = Figure(figsize=(THUMB_PX / 100, THUMB_PX / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(display_plane(plane, modality)[ys, xs], cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    shown = agreement[ys, xs]
    ax.imshow(np.ma.masked_where(shown <= 0, shown), cmap="magma", vmin=0, vmax=1, alpha=0.55,
              interpolation="nearest")
    outlined = [m for m in res.modes if res.masks[m.representative].any()]
    for colour, mode in zip(MODE_COLOURS, outlined):
        mask = res.masks[mode.representative]
        mask = (mask if res.start is None else mask[res.key])[ys, xs]
        if mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.3)
    ax.set_axis_off()
    _save(fig, path)
    return path


def histogram(scores: list[float], path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 2.4), dpi=100)
    ax = fig.add_subplot()
    ax.hist(scores, bins=np.linspace(0, 1, 21), color="#3a6ea5", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("disagreement score (0: experts would agree, 1: they would not)")
    ax.set_ylabel("prompts")
    ax.set_title(f"scores of {len(scores)} prompts", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    _save(fig, path)
    return path


def _paragraphs(text: str) -> str:
    """A docstring as HTML: paragraphs, indented lines as a formula block."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if all(line.startswith("    ") for line in lines):
            out.append(f"<pre>{html.escape(chr(10).join(x.strip() for x in lines))}</pre>")
        else:
            out.append(f"<p>{html.escape(' '.join(x.strip() for x in lines))}</p>")
    return "\n".join(out)


def _num(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _size(row: wl.Row) -> str:
    if row.size is None:
        return ""
    v = row.size
    text = f"{v:.0f}" if v >= 10 else f"{v:.1f}" if v >= 1 else f"{v:.2g}"
    return f"{text} {row.size_unit}"


def _modes_cell(result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    modes = result["result"]["modes"]
    items = []
    colours = iter(MODE_COLOURS)
    for m in modes[:len(MODE_COLOURS)]:
        text = m["size"]["text"]
        swatch = ""
        if not m["size"]["empty"]:
            swatch = f'<span class="sw" style="background:{next(colours, "#888")}"></span>'
        items.append(f"<li>{swatch}{100 * m['frequency']:.0f}% {html.escape(text)}</li>")
    more = len(modes) - len(MODE_COLOURS)
    if more > 0:
        items.append(f"<li>... {more} more</li>")
    return f"<ul class=modes>{''.join(items)}</ul>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px}
.meta{color:#555;font-size:13px;margin:0 0 4px}
.explain{font-size:13px;line-height:1.45;max-width:900px}
.explain pre{background:#f4f4f4;padding:6px 10px;display:inline-block;margin:2px 0}
table{border-collapse:collapse;font-size:13px;margin-top:10px}
th{background:#eef1f5;text-align:left;padding:6px 8px;position:sticky;top:0}
td{padding:4px 8px;border-top:1px solid #e3e3e3;vertical-align:middle}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.img{padding:3px}td.img img{display:block;width:168px;height:168px;background:#000}
tr.error td{background:#fff4f4}.err{color:#a00}.err div{max-width:560px}
.key{font-weight:600}td.case{min-width:200px}.small{color:#666;font-size:12px}
ul.modes{list-style:none;margin:0;padding:0}ul.modes li{white-space:nowrap}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
border:1px solid #555;vertical-align:-1px}
.warn{color:#a60;font-size:12px}
"""


def _row_html(row: wl.Row, result: dict[str, Any] | None) -> str:
    e = html.escape
    if not row.ok:
        return (f'<tr class="error"><td class=num>-</td><td class=img></td>'
                f'<td><span class=key>{e(row.key)}</span><br><span class=small>'
                f'{e(row.prompt)}</span></td><td colspan=5 class=err><div>{e(row.status)}: '
                f'{e(row.error)}</div></td></tr>')
    thumb = f'<img src="{quote("img/" + row.key + ".png")}" alt="{e(row.key)}">'
    where = f"slice {row.slices}" if row.slices else ""
    start = (result or {}).get("result", {}).get("start")
    if "-" in row.slices:
        where = f"slices {row.slices}" + ("" if start is None else f", picture: slice {start}")
    warn = ""
    if result and result.get("outside_scope"):
        warn = f'<br><span class=warn>outside the model\'s scope: ' \
               f'{e("; ".join(result["outside_scope"]))}</span>'
    return (f"<tr><td class=num>{row.rank}</td><td class=img>{thumb}</td>"
            f"<td class=case><span class=key>{e(row.key)}</span><br><span class=small>{e(row.prompt)}"
            f"{'<br>' + e(where) if where else ''}</span>{warn}</td>"
            f"<td class=num><b>{_num(row.score)}</b></td>"
            f"<td class=num>{'' if row.finding_probability is None else f'{100 * row.finding_probability:.0f}%'}</td>"
            f"<td class=num>{_num(row.disagreement)}</td><td class=num>{e(_size(row))}</td>"
            f"<td>{_modes_cell(result)}</td></tr>")


def write_report(out: Path, info: dict[str, Any], rows: list[wl.Row],
                 results: dict[str, dict[str, Any]]) -> Path:
    """report.html (and img/score_histogram.png) of a merged run."""
    e = html.escape
    out = Path(out)
    scores = [r.score for r in rows if r.ok]
    histogram(scores, out / HISTOGRAM)
    model = info.get("model", {})
    inputs = info.get("inputs", {})
    ok = len(scores)
    bad = [r for r in rows if not r.ok]
    dist = ("samples drawn given a finding at the prompt; the finding probability is the "
            "model's estimate that experts would outline one" if info.get("given_finding")
            else "the benchmark distribution (--unconditional: 'no finding' samples included)")
    definition = (info.get("score") or {}).get("definition", "")
    table = "\n".join(_row_html(r, results.get(r.key)) for r in rows)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Triage worklist</title>
<style>{CSS}</style></head><body>
<h1>Triage worklist: {ok} prompt{'s' * (ok != 1)} ranked by expert disagreement</h1>
<p class=meta>Model: {e(str(model.get('name')))}, sha256 {e(str(model.get('sha256', ''))[:12])};
N = {info.get('n')} samples, {info.get('steps')} steps, seed {info.get('seed')} (prompt i: seed + i);
{e(dist)}.</p>
<p class=meta>Input {e(str(inputs.get('path')))} ({e(str(inputs.get('kind')))}), run started
{e(str(info.get('created', '')))}{f'; {len(bad)} prompt(s) without a result, listed last' if bad else ''}.</p>
<h2>What the score means</h2>
<div class=explain>{_paragraphs(definition)}
<p>Rows are ranked by score, highest first: the cases experts would most disagree about come
first. Each picture shows the image plane where sampling started (the square the model saw),
the share of samples marking each pixel (dark red to yellow) and the outline of each
hypothesis (mode), coloured as in the Modes column. "Outline disagreement" is the part given
a finding (1 - mean pairwise IoU of the samples); the size is the median of the commonest
outlined mode (mm&sup3; for a slab, mm&sup2; for one plane).</p></div>
<img src="{HISTOGRAM}" alt="histogram of the scores" width=640 height=240>
<table><thead><tr><th>Rank</th><th>Image</th><th>Case</th><th>Score</th>
<th>Finding<br>probability</th><th>Outline<br>disagreement</th><th>Size</th><th>Modes</th>
</tr></thead><tbody>
{table}
</tbody></table></body></html>
"""
    return atomic_write_bytes(out / wl.REPORT_HTML, doc.encode("utf-8"))
