"""The explain section of an HTML report: a summary table and one card per feature; images as data: URIs.

:func:`render_section` returns the section's inner HTML for one model or two (a comparison), so the analysis
report can add it as one more ``<section>``; :func:`render_page` makes a self-contained page of it. Heat maps
colour positive attribution red and negative blue, each map scaled to the 99th percentile of its ``|attribution|``
(captum's visualization default clips the top 2 %; pixel attributions are spiky).
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from analysis.report.format import CSS, fmt, table

CARD_CSS = """
.cards{display:flex;flex-direction:column;gap:14px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 10px}
.card h4{margin:0 0 4px 0}.stats{font-size:12px;color:#444;margin:0 0 6px 0}.exs{display:flex;flex-wrap:wrap;gap:10px}
.ex{font-size:11px;text-align:center}
.ex img{display:inline-block;margin:1px;image-rendering:pixelated;width:88px;height:88px;object-fit:contain}
.tok{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;line-height:1.9;margin:2px 0}
.tex{flex-basis:100%;border-top:1px solid #eee;padding-top:3px}.tok span{padding:1px 2px;border-radius:3px}
.tok .peak{outline:2px solid #222}.cap{font-size:11px;color:#555}
"""

DELTA_WARN = 0.1  # a relative completeness delta above this is flagged in the report

DEFINITIONS = [
    ("response", "a feature's response to an input: its largest activation over positions (pixels of the site's "
                 "grid, or non-padding tokens); top examples are the samples with the largest responses"),
    ("firing density", "fraction of all positions over the scanned samples where the feature is > 0"),
    ("selectivity", "top response / mean of max(activation, 0) over all positions; high = fires rarely but strongly"),
    ("class selectivity", "(μ_max − μ_rest)/(μ_max + μ_rest) of the class-conditional mean responses (0 = no class "
                          "preference, 1 = one class only); needs labels"),
    ("Gini", "Gini index of |attribution| over the pixels/tokens of one map (0 = spread evenly, → 1 = on one)"),
    ("top-5% mass", "fraction of the total |attribution| on the 5% of pixels/tokens with the most (0.05 = uniform)"),
    ("completeness delta", "Σ attribution − (f(x) − f(baseline)) of integrated gradients, relative to "
                           "|f(x) − f(baseline)|; small means the integration converged"),
]

SUMMARY_ROWS = [
    ("features", "features explained"), ("examples", "examples attributed"),
    ("firing_density_mean", "firing density (mean)"), ("selectivity_median", "selectivity (median)"),
    ("class_selectivity_mean", "class selectivity (mean)"), ("feature_attr_gini_mean", "feature attribution Gini"),
    ("feature_attr_top5_mass_mean", "feature attribution top-5% mass"), ("class_attr_gini_mean", "class attribution Gini"),
    ("class_attr_top5_mass_mean", "class attribution top-5% mass"),
    ("feature_delta_rel_median", "feature IG completeness delta (relative, median)"),
    ("class_delta_rel_median", "class IG completeness delta (relative, median)"),
]


# ---------------------------------------------------------------------------------------------- images


def _png(rgb: np.ndarray, size: int = 96) -> str:
    from PIL import Image

    img = Image.fromarray(rgb)
    scale = size / max(img.size)
    if scale != 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.NEAREST if scale > 1 else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _colors(values: np.ndarray) -> np.ndarray:
    """Signed values scaled to [-1, 1] → RGBA in [0, 1] (blue negative, red positive)."""
    import matplotlib

    return matplotlib.colormaps["bwr"]((np.clip(values, -1, 1) + 1) / 2)


def overlay(image: np.ndarray, heat: np.ndarray, box: list[int] | None = None) -> np.ndarray:
    """``heat`` ([H, W], signed) over a grey version of ``image`` ([H, W, 3] uint8), opacity ∝ |heat|; the
    receptive-field ``box`` outlined in yellow. ``|heat|`` above its 99th percentile is shown at full colour."""
    scale = float(np.percentile(np.abs(heat), 99)) or float(np.abs(heat).max()) or 1.0
    h = heat / scale
    grey = image.astype(np.float64).mean(2, keepdims=True).repeat(3, 2) / 255
    alpha = np.clip(np.abs(h), 0, 1)[..., None] * 0.85
    out = (1 - alpha) * grey + alpha * _colors(h)[..., :3]
    out = (out * 255).round().astype(np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        if (y1 - y0, x1 - x0) != image.shape[:2]:
            yellow = np.array([255, 215, 0], dtype=np.uint8)
            out[y0:y1, [x0, x1 - 1]] = yellow
            out[[y0, y1 - 1], x0:x1] = yellow
    return out


def _token_line(tokens: list[str], values: np.ndarray, start: int, stop: int, peak: int | None) -> str:
    scale = float(np.abs(values[: len(tokens)]).max()) or 1.0
    spans = []
    for t in range(start, stop):
        v = float(values[t]) / scale
        rgb = "220,40,40" if v >= 0 else "40,80,220"
        cls = ' class="peak"' if t == peak else ""
        tok = tokens[t]
        spans.append(f'<span{cls} style="background:rgba({rgb},{abs(v) * 0.8:.2f})" title="{v:+.3f}">'
                     f"{html.escape(tok)}</span>")
    return "".join(spans)


# ---------------------------------------------------------------------------------------------- cards


def _name(names: list[str] | None, i: int | None) -> str:
    if i is None:
        return "—"
    return html.escape(str(names[i])) if names is not None and 0 <= i < len(names) else str(i)


def _stats_line(res: dict, f: dict) -> str:
    d = f["firing_density"]
    log_d = f"{math.log10(d):.2f}" if d and d > 0 else "−∞"
    parts = [f"firing density {fmt(d)} (log10 {log_d})", f"selectivity {fmt(f['selectivity'])}",
             f"top response {fmt(f['top'])}", f"mean {fmt(f['mean'])}"]
    if f.get("class_selectivity") is not None:
        parts.append(f"class selectivity {fmt(f['class_selectivity'])} (prefers "
                     f"{_name(res.get('label_names'), f.get('top_class'))})")
    return " · ".join(parts)


def _example_caption(res: dict, e: dict) -> str:
    label = "" if e["label"] is None else f"label {_name(res.get('label_names'), e['label'])} · "
    return (f'<div class="cap">response {fmt(e["value"])}<br>{label}pred {_name(res.get("class_names"), e["pred"])}'
            f'<br>Gini {fmt(e["feature_gini"])}</div>')


def _image_card(res: dict, f: dict) -> str:
    arr = res["arrays"]
    cells = []
    for e in f["examples"]:
        img = arr["images"][e["row"]]
        y0, y1, x0, x1 = e["box"]
        imgs = [_png(img[y0:y1, x0:x1]), _png(overlay(img, arr["feature_maps"][e["map"]], e["box"]))]
        if arr["class_maps"] is not None:
            imgs.append(_png(overlay(img, arr["class_maps"][e["row"]])))
        cells.append(f'<div class="ex">{"".join(imgs)}{_example_caption(res, e)}</div>')
    return "".join(cells)


def _text_card(res: dict, f: dict) -> str:
    from analysis.interpret.examples import window

    arr = res["arrays"]
    rows = []
    for e in f["examples"]:
        toks = arr["tokens"][e["row"]]
        start, stop = window(len(toks), e["position"])
        line = _token_line(toks, arr["feature_maps"][e["map"]], start, stop, e["position"])
        cls = ""
        if arr["class_maps"] is not None:
            cls = f'<div class="tok">class: {_token_line(toks, arr["class_maps"][e["row"]], start, stop, None)}</div>'
        rows.append(f'<div class="tex"><div class="tok">feature: {line}</div>{cls}{_example_caption(res, e)}</div>')
    return "".join(rows)


def _cards(res: dict) -> str:
    make = _image_card if res["input_kind"] == "image" else _text_card
    legend = ("each example: receptive-field crop · feature attribution over the image (receptive field in yellow)"
              + (" · class attribution of the prediction" if res["arrays"]["class_maps"] is not None else "")
              if res["input_kind"] == "image" else
              "each example: the tokens around the peak (outlined), coloured by the feature's attribution"
              + (", then by the predicted class's attribution" if res["arrays"]["class_maps"] is not None else ""))
    cards = "".join(f'<div class="card"><h4>feature {f["index"]}</h4><p class="stats">{_stats_line(res, f)}</p>'
                    f'<div class="exs">{make(res, f)}</div></div>' for f in res["features"])
    return f'<p class="cap">{html.escape(legend)}</p><div class="cards">{cards}</div>'


# ---------------------------------------------------------------------------------------------- section


def _verdict(results: list[tuple[str, dict]]) -> str:
    (la, a), (lb, b) = results
    sa, sb = a["summary"], b["summary"]
    lines = []
    for key, what in (("feature_attr_gini_mean", "feature attributions"), ("class_attr_gini_mean", "class attributions"),
                      ("class_selectivity_mean", "features (class selectivity)")):
        va, vb = sa.get(key), sb.get(key)
        if va is None or vb is None:
            continue
        word = "more" if va > vb else "less" if va < vb else "equally"
        measure = "class-selective" if "selectivity" in key else "concentrated (Gini)"
        lines.append(f"<li>{html.escape(what)}: <b>{html.escape(la)}</b> {fmt(va)} vs <b>{html.escape(lb)}</b> "
                     f"{fmt(vb)} (change {va - vb:+.3f}): {word} {measure}.</li>")
    return f"<p>Measured, not presumed (means over each model's own selected features):</p><ul>{''.join(lines)}</ul>"


def render_section(results: list[tuple[str, dict]]) -> str:
    """Inner HTML of the explain section for ``[(label, explain result), …]`` (one model, or two to compare)."""
    from analysis.interpret.metrics import ExplainSummary, compare

    first = results[0][1]
    head = (f"<p>Site <code>{html.escape(first['site'])}</code>: method <code>{html.escape(first['method'])}</code>"
            f", class attributions <code>{html.escape(str(first['class_method']))}</code>, "
            f"{first['settings']['n_steps']} integration steps; features chosen by "
            f"{html.escape(first['selection'])}.</p>")
    defs = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in DEFINITIONS)
    headers = ["quantity", *[label for label, _ in results]]
    delta = compare(results[0][1]["summary"], results[1][1]["summary"]) if len(results) == 2 else None
    if delta is not None:
        headers.append(f"change ({results[0][0]} − {results[1][0]})")
    rows = [[what, *[r["summary"].get(key) for _, r in results], *([delta.get(key)] if delta is not None else [])]
            for key, what in SUMMARY_ROWS]
    more = [["samples scanned", *[r["samples"] for _, r in results]], ["site", *[r["site"] for _, r in results]],
            *[[f"time: {k}", *[r["timing"].get(k) for _, r in results]] for k in first["timing"]]]
    rows += [row + ([None] if delta is not None else []) for row in more]
    parts = [f"<style>{CARD_CSS}</style>", head, table(headers, rows)]
    for label, r in results:
        worst = ExplainSummary.from_json(r["summary"]).worst_delta_rel_median
        if worst is not None and worst > DELTA_WARN:
            parts.append(f"<p><b>{html.escape(label)}</b>: median relative completeness delta {fmt(worst)} &gt; "
                         f"{DELTA_WARN}: the integration has not converged; raise the number of steps.</p>")
    if len(results) == 2:
        parts.append(_verdict(results))
    parts.append(f"<details><summary>definitions</summary><dl>{defs}</dl></details>")
    for label, res in results:
        parts.append(f"<h3>{html.escape(label)}: {len(res['features'])} features of {html.escape(res['site'])} "
                     f"({res['channels']} features, {res['samples']} samples scanned)</h3>{_cards(res)}")
    return "".join(parts)


def render_page(results: list[tuple[str, dict]], command: str) -> str:
    """A self-contained HTML page with the explain section."""
    title = " vs ".join(label for label, _ in results)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sparsezoo explain: "
            f"{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>sparsezoo explain: {html.escape(title)}</h1><p>command: <code>{html.escape(command)}</code></p>"
            f'<section id="explain"><h2>Feature explanations</h2>{render_section(results)}</section></body></html>\n')
