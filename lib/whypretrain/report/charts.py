"""Altair figures of the book, and how they render.

Rendering (this part): ``setup()`` is the one call a notebook makes before its first chart. In
the book (the runner sets ``WHYPRETRAIN_BOOK=1`` for the kernels it starts) it enables the
``whypretrain`` renderer, whose HTML only calls the page-global ``window.vegaEmbed`` that the
book loads once per page from its own ``_static/wp/vega-bundle.js``: no CDN, and many charts on
one Sphinx page do not clash. Everywhere else (JupyterLab, VS Code) Altair's default renderer is
left alone, because it is the right one there. Both ways the theme and the vegafusion data
transformer (charts of big tables carry the aggregated data only) are enabled.

Figures (added by the pages' authors below the rendering section): one function per figure that
takes a results table and returns an ``alt.Chart`` with title, axis titles and tooltips.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from whypretrain.distributed import BOOK_ENV, in_book  # noqa: F401  (where a kernel runs)

RENDERER = "whypretrain"
THEME = "whypretrain"

# One qualitative palette for the three models compared everywhere in the book.
MODEL_COLORS = {"probe": "#4c78a8", "finetune": "#f58518", "scratch": "#54a24b"}

WIDTH = 430
HEIGHT = 300

_TEMPLATE = """\
<div id="{div}" class="whypretrain-chart" style="width: 100%;"></div>
<script type="text/javascript">
(function () {{
  var spec = {spec};
  var opts = {opts};
  function draw() {{
    var el = document.getElementById("{div}");
    if (!window.vegaEmbed) {{
      el.innerHTML = '<pre class="whypretrain-chart-error">vega-bundle.js is not loaded</pre>';
      return;
    }}
    window.vegaEmbed(el, spec, opts).catch(function (err) {{
      el.innerHTML = '<pre class="whypretrain-chart-error"></pre>';
      el.firstChild.textContent = String(err);
    }});
  }}
  if (window.vegaEmbed) {{ draw(); }} else {{ window.addEventListener("load", draw); }}
}})();
</script>
"""


def _embed_options() -> dict[str, Any]:
    # The "open in editor" action would post the spec to vega.github.io: keep export only.
    return {"actions": {"export": True, "source": False, "compiled": False, "editor": False}}


def book_renderer(spec: dict, **metadata: Any) -> dict[str, str]:
    """Altair renderer for the book: a div plus a call to the page-global ``vegaEmbed``."""
    from altair.utils._vegafusion_data import compile_with_vegafusion, using_vegafusion

    mode = "vega-lite"
    if using_vegafusion():  # the transforms run here; the page gets a Vega spec with small data
        spec = compile_with_vegafusion(spec)
        mode = "vega"
    opts = dict(_embed_options(), mode=mode, **metadata.get("embed_options", {}))
    html = _TEMPLATE.format(
        div=f"wp-chart-{uuid.uuid4().hex}",
        # "</" inside a JSON string would end the <script> element early.
        spec=json.dumps(spec, separators=(",", ":")).replace("</", "<\\/"),
        opts=json.dumps(opts),
    )
    return {"text/html": html, "text/plain": "<whypretrain chart>"}


def theme() -> dict[str, Any]:
    """The book's Altair theme: readable titles and labels, one size for every chart."""
    font = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
    return {
        "config": {
            "view": {"continuousWidth": WIDTH, "continuousHeight": HEIGHT, "stroke": None},
            "font": font,
            "title": {"fontSize": 15, "fontWeight": 600, "anchor": "start", "subtitleFontSize": 12,
                      "subtitleColor": "#555", "offset": 10},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "titleFontWeight": 500,
                     "gridColor": "#e6e6e6", "domainColor": "#888", "tickColor": "#888"},
            "legend": {"labelFontSize": 12, "titleFontSize": 12, "orient": "bottom"},
            "header": {"labelFontSize": 12, "titleFontSize": 13},
            "range": {"category": list(dict.fromkeys(MODEL_COLORS.values()))
                      + ["#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]},
        }
    }


alt.renderers.register(RENDERER, book_renderer)
alt.theme.register(THEME, enable=False)(theme)


def setup(book: bool | None = None, vegafusion: bool = True) -> str:
    """Enable the theme, the vegafusion transformer and, for the book, the book renderer.

    ``book=None`` decides from the ``WHYPRETRAIN_BOOK`` environment variable (set by the runner);
    pass ``True``/``False`` to force. Returns the name of the active renderer.
    """
    alt.theme.enable(THEME)
    if vegafusion:
        alt.data_transformers.enable("vegafusion")
    else:
        alt.data_transformers.enable("default", max_rows=None)
    if in_book() if book is None else book:
        alt.renderers.enable(RENDERER)
    elif alt.renderers.active == RENDERER:
        alt.renderers.enable("default")
    return alt.renderers.active


def save(chart: alt.TopLevelMixin, path: str | os.PathLike, scale: float = 2.0) -> Path:
    """Write ``chart`` to ``path``: .png / .svg / .pdf (vl-convert, offline), .json (the spec)
    or .html (a standalone page with the JavaScript inlined, readable offline). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if path.suffix == ".png":
        kwargs["scale_factor"] = scale
    elif path.suffix == ".html":
        kwargs["inline"] = True
    chart.save(str(path), **kwargs)
    return path


# ---------------------------------------------------------------------------------------------
# Figures. One function per figure of the book; each says what the reader should see in its
# title / subtitle and names its input table's columns in the docstring.
# ---------------------------------------------------------------------------------------------

SET_COLORS = {"discarded": "#4c78a8", "preserved": "#f58518", "new": "#54a24b",
              "not salient": "#d0d0d0"}
MODEL_NAMES = {"probe": "pre-trained + linear probe", "finetune": "fine-tuned",
               "scratch": "from scratch"}


def _interval(base: alt.Chart, x: str, y_title: str, color: str = "model") -> alt.LayerChart:
    """Mean line with points and a shaded 95% interval (columns mean, ci_low, ci_high)."""
    names = [MODEL_NAMES[m] for m in MODEL_COLORS]
    hue = alt.Color(f"{color}:N", title=None, scale=alt.Scale(
        domain=names, range=list(MODEL_COLORS.values())))
    band = base.mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=hue)
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("mean:Q", title=y_title), color=hue,
        tooltip=[f"{color}:N", x, alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f"),
                 "n_seeds:Q"])
    return band + line


def training_curves(training: pd.DataFrame, value: str = "test_acc") -> alt.Chart:
    """Per-epoch curves of the target runs, mean and 95% interval over seeds.

    ``training``: the study result's ``near/training`` part (``curves.training_summary``):
    per metric, model and epoch the mean, ``ci_low``, ``ci_high`` and ``n_seeds``.
    """
    agg = training[training["metric"] == value].copy()
    agg["model"] = agg["model"].map(lambda m: MODEL_NAMES.get(m, m))
    title = {"test_acc": "test accuracy", "train_acc": "training accuracy",
             "test_loss": "test loss", "train_loss": "training loss"}.get(value, value)
    return _interval(alt.Chart(agg), "epoch:Q", title).properties(
        title=alt.Title(f"{title.capitalize()} on the target task, per epoch",
                        subtitle="line: mean over seeds; band: 95% interval over seeds"))


def knowledge_bars(summary: pd.DataFrame, kind: str = "count") -> alt.Chart:
    """Figure 2: K_probe (the paper's K_pretrain) = discarded + preserved,
    K_finetune = preserved + new.

    ``summary``: ``stats.summarize`` output (all-orders rows are used); ``kind``: ``count``
    or ``strength``.
    """
    from whypretrain.measures.knowledge import ALL_ORDERS
    rows = []
    parts = {"pre-trained (probe)": ("discard", "preserve"), "fine-tuned": ("preserve", "new")}
    names = {"discard": "discarded", "preserve": "preserved", "new": "new"}
    total = summary[(summary["order"] == ALL_ORDERS)
                    & summary["measure"].str.startswith(kind)].set_index("measure")
    for row, sets in parts.items():
        for s in sets:
            r = total.loc[f"{kind}_{s}"]
            rows.append(dict(model=row, set=names[s], mean=r["mean"], ci_low=r["ci_low"],
                             ci_high=r["ci_high"], n_seeds=r["n_seeds"]))
    data = pd.DataFrame(rows)
    order = ["discarded", "preserved", "new"]
    color = alt.Color("set:N", title="knowledge", sort=order,
                      scale=alt.Scale(domain=order, range=[SET_COLORS[o] for o in order]))
    unit = "items per sample" if kind == "count" else "interaction strength per sample"
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("model:N", title=None, sort=list(parts)),
        x=alt.X("mean:Q", title=f"{unit} (mean over seeds)", stack="zero"),
        color=color, order=alt.Order("set_order:Q"),
        tooltip=["model:N", "set:N", alt.Tooltip("mean:Q", format=".2f"),
                 alt.Tooltip("ci_low:Q", format=".2f"), alt.Tooltip("ci_high:Q", format=".2f")],
    ).transform_calculate(
        set_order="indexof(['discarded', 'preserved', 'new'], datum.set)"
    ).properties(height=110, title=alt.Title(
        f"Preserved, discarded and new knowledge ({kind})",
        subtitle="top bar: the pre-trained model's knowledge (read by the probe); bottom: the "
                 "fine-tuned model's; orange is shared"))


def knowledge_by_order(summary: pd.DataFrame, kind: str = "count") -> alt.Chart:
    """Figure 2 by order |S|: how much of each set sits at each order (mean over seeds)."""
    names = {"discard": "discarded", "preserve": "preserved", "new": "new"}
    data = summary[(summary["order"] >= 0)
                   & summary["measure"].isin([f"{kind}_{s}" for s in names])].copy()
    data["set"] = data["measure"].str.split("_").str[1].map(names)
    order = ["discarded", "preserved", "new"]
    base = alt.Chart(data)
    bars = base.mark_bar().encode(
        x=alt.X("order:O", title="order |S| of the interaction"),
        xOffset=alt.XOffset("set:N", sort=order),
        y=alt.Y("mean:Q", title=f"{kind} per sample (mean over seeds)"),
        color=alt.Color("set:N", sort=order, title="knowledge",
                        scale=alt.Scale(domain=order, range=[SET_COLORS[o] for o in order])),
        tooltip=["order:O", "set:N", alt.Tooltip("mean:Q", format=".2f"),
                 alt.Tooltip("ci_low:Q", format=".2f"), alt.Tooltip("ci_high:Q", format=".2f")])
    whiskers = base.mark_rule().encode(
        x="order:O", xOffset=alt.XOffset("set:N", sort=order), y="ci_low:Q", y2="ci_high:Q")
    return (bars + whiskers).properties(title=alt.Title(
        f"Knowledge by order ({kind})",
        subtitle="whiskers: 95% interval over seeds; the paper reports discarded knowledge is "
                 "mostly high-order"))


def learnability_chart(per_seed: pd.DataFrame) -> alt.Chart:
    """Figure 3: share of preserved knowledge that scratch training also learns, per seed,
    with the paper's range (``findings.LEARNABLE_RANGE``) shaded. ``per_seed``: columns
    ``seed, mean, ci_low, ci_high, n`` (``stats.aggregate`` of ratio_learnable by seed)."""
    from whypretrain.report.findings import LEARNABLE_RANGE
    low, high = LEARNABLE_RANGE
    band = alt.Chart(pd.DataFrame([{"low": low, "high": high}])
                     ).mark_rect(opacity=0.15, color="#888").encode(y="low:Q", y2="high:Q")
    base = alt.Chart(per_seed.assign(seed=per_seed["seed"].astype(str)))
    bars = base.mark_bar(color=MODEL_COLORS["scratch"], size=28).encode(
        x=alt.X("seed:N", title="seed"),
        y=alt.Y("mean:Q", title="learnable share of preserved knowledge",
                scale=alt.Scale(domain=[0, 1])),
        tooltip=["seed:N", alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f"),
                 alt.Tooltip("n:Q", title="samples")])
    whiskers = base.mark_rule().encode(x="seed:N", y="ci_low:Q", y2="ci_high:Q")
    return (band + bars + whiskers).properties(width=320, title=alt.Title(
        "Preserved knowledge a scratch model also learns",
        subtitle=f"bars: mean over samples, whiskers: 95% interval; grey band: the paper's "
                 f"{low:.0%}-{high:.0%}"))


def convergence_chart(summary: pd.DataFrame, measure: str = "jaccard_weighted") -> alt.Chart:
    """Figure 4: similarity of each epoch's interactions to the run's final ones, fine-tuning
    vs scratch, mean and 95% interval over seeds (``stats.summarize`` rows of ``measure``)."""
    data = summary[(summary["measure"] == measure) & (summary["epoch"] >= 0)].copy()
    data["model"] = data["model"].map(lambda m: MODEL_NAMES.get(m, m))
    reference = "the fine-tuned model's final" if measure.endswith("_vs_finetune") \
        else "its own final"
    kind = "weighted" if "weighted" in measure else "set"
    return _interval(alt.Chart(data), "epoch:Q", f"{kind} Jaccard similarity").properties(
        title=alt.Title(f"Convergence of knowledge ({kind} Jaccard)",
                        subtitle=[f"similarity of each epoch to {reference} interactions",
                                  "the paper: fine-tuning rises faster and more steadily"]))


SETTING_COLORS = {"near": "#4c78a8", "disjoint": "#f58518", "far": "#54a24b"}


def forest(table: pd.DataFrame) -> alt.Chart:
    """Each claim's effect (our value minus its null) with its 95% interval (crossed
    jackknife), one row per claim and a point per transfer setting; the null is the line at
    0 and the grey band the claim's smallest effect of interest (+-SESOI). ``table``:
    ``findings.transfer_table`` (or ``judge``). Claims are in their own units, so each row
    has its own x scale."""
    data = table[table["effect_mean"].notna()].copy()
    data["label"] = data["claim"].str.replace("_", " ")
    data["sesoi_low"], data["sesoi_high"] = -data["sesoi"], data["sesoi"]
    settings = list(dict.fromkeys(data["setting"]))
    color = alt.Color("setting:N", title="setting", sort=settings, scale=alt.Scale(
        domain=settings, range=[SETTING_COLORS.get(s, "#888") for s in settings]))
    y = alt.Y("setting:N", title=None, sort=settings, axis=None)
    base = alt.Chart().encode(y=y, color=color)
    band = alt.Chart().mark_rect(color="#ddd", opacity=0.6).encode(
        x="min(sesoi_low):Q", x2="max(sesoi_high):Q")
    zero = alt.Chart().mark_rule(color="#555", strokeDash=[4, 3]).encode(x=alt.datum(0))
    whiskers = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("effect_low:Q", title=None), x2="effect_high:Q")
    points = base.mark_point(filled=True, size=70).encode(
        x="effect_mean:Q", shape=alt.Shape("verdict:N", title="verdict"),
        tooltip=["label:N", "setting:N", "verdict:N", "paper_verdict:N",
                 alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("null:Q", format=".3f"),
                 alt.Tooltip("effect_mean:Q", format=".3f", title="effect"),
                 alt.Tooltip("effect_low:Q", format=".3f", title="95% low"),
                 alt.Tooltip("effect_high:Q", format=".3f", title="95% high"),
                 alt.Tooltip("sesoi:Q", title="SESOI"), "n_seeds:Q"])
    return alt.layer(band, zero, whiskers, points, data=data).properties(
        width=340, height=18 * max(1, len(settings))).facet(
        row=alt.Row("label:N", title=None, sort=[c.replace("_", " ") for c in
                                                 dict.fromkeys(data["claim"])],
                    header=alt.Header(labelAngle=0, labelAlign="left"))).resolve_scale(
        x="independent").properties(title=alt.Title(
            "Each claim against its null", subtitle=[
                "effect = our value minus its null, in the claim's own units; point: mean over "
                "seeds, line: its 95% interval (seeds and samples)", "dashed: the null (effect "
                "0); grey: +-the smallest effect of interest (SESOI)"]))


def ladder(rungs: pd.DataFrame, claim: str) -> alt.Chart:
    """One knowledge claim's null ladder (``findings.ladder_long``): the claim's value and
    every rung it is read against (face, replication, probe, unrelated, the learnable share's
    ceilings and comparators, chance) on one axis, a point per transfer setting with its 95%
    interval over seeds where it has one. The claim's own value is the dashed line of each
    setting's colour."""
    data = rungs[rungs["claim"] == claim].copy()
    if data.empty:
        raise ValueError(f"no ladder rows for claim {claim!r}")
    pct = claim != "discard_order"
    fmt = ".0%" if pct else ".2f"
    settings = list(dict.fromkeys(data["setting"]))
    order = list(dict.fromkeys(data["label"]))
    color = alt.Color("setting:N", title="setting", sort=settings, scale=alt.Scale(
        domain=settings, range=[SETTING_COLORS.get(s, "#888") for s in settings]))
    # shares: the axis is 0-100% and intervals beyond it are cut at its edge (two seeds give
    # intervals wider than any share can be)
    scale = alt.Scale(domain=[0, 1], clamp=True) if pct else alt.Scale(zero=False)
    x = alt.X("mean:Q", title="the claim's measure" + (" (share)" if pct else ""),
              axis=alt.Axis(format=fmt), scale=scale)
    base = alt.Chart(data).encode(
        y=alt.Y("label:N", title=None, sort=order, axis=alt.Axis(labelLimit=420)),
        yOffset=alt.YOffset("setting:N", sort=settings), color=color)
    whiskers = base.mark_rule(strokeWidth=2).encode(x=alt.X("low:Q", scale=scale),
                                                    x2="high:Q")
    points = base.mark_point(filled=True, size=60, opacity=1).encode(
        x=x, tooltip=["label:N", "setting:N", alt.Tooltip("mean:Q", format=fmt),
                      alt.Tooltip("low:Q", format=fmt, title="95% low"),
                      alt.Tooltip("high:Q", format=fmt, title="95% high")])
    own = alt.Chart(data[data["rung"] == "claim"]).mark_rule(strokeDash=[4, 3]).encode(
        x=alt.X("mean:Q", scale=scale), color=color)
    return alt.layer(whiskers, points, own).properties(
        width=360, height=22 * len(order), title=alt.Title(
            f"The null ladder of {claim.replace('_', ' ')}", subtitle=[
                "each rung: the same measure between models that should not differ, or a "
                "reference; point: mean over seeds, line: 95% interval",
                "dashed: our value (the first row); the verdict reads the rung marked as its "
                "null"]))


def ladders(rungs: pd.DataFrame) -> alt.VConcatChart:
    """``ladder`` of every claim in ``rungs`` (``findings.ladder_long``), one under another."""
    claims = list(dict.fromkeys(rungs["claim"]))
    return alt.vconcat(*(ladder(rungs, c) for c in claims)).resolve_scale(color="shared")


VERDICT_COLORS = {"exceeds the null": "#54a24b", "equivalent to the null": "#4c78a8",
                  "below the null": "#e45756", "inconclusive": "#9d9d9d", "n/a": "#dddddd",
                  "premise fails": "#b279a2"}


def specification_curve(spec: pd.DataFrame, joint: pd.DataFrame | None = None
                        ) -> alt.VConcatChart:
    """Each knowledge claim's effect (value minus null) with its 95% interval under every
    specification (``findings.specification_table``), sorted by effect, with the null (0,
    dashed) and the band of +-SESOI; a draw of players or samples (resampling, not a choice)
    is a hollow point, a gradient optimiser (it stops above the optimum) a triangle. Below,
    which choice each point makes. ``joint``: ``findings.joint_tests``; its sentence for each
    claim goes in the subtitle. A menu picks the claim; clicking a point highlights it in both
    panels."""
    data = spec.copy()
    data["rank"] = data.groupby("claim")["effect_mean"].rank(method="first")
    data["sesoi_low"], data["sesoi_high"] = -data["sesoi"], data["sesoi"]
    data["kind"] = data.get("kind", "specification")
    claims = list(dict.fromkeys(data["claim"]))
    pick = alt.param(name="claim", value=claims[0],
                     bind=alt.binding_select(options=claims, name="claim "))
    chosen = alt.selection_point(fields=["spec"], on="click", clear="dblclick")
    verdicts = [v for v in VERDICT_COLORS if v in set(data["verdict"])]
    base = alt.Chart(data).transform_filter(alt.datum.claim == pick)
    x = alt.X("rank:Q", title="specifications, sorted by effect", axis=alt.Axis(labels=False))
    tips = ["spec:N", "kind:N", "verdict:N", alt.Tooltip("mean:Q", format=".3f"),
            alt.Tooltip("null:Q", format=".3f"), "effect:N", alt.Tooltip("sesoi:Q")]
    opacity = alt.condition(chosen, alt.value(1.0), alt.value(0.35))
    band = base.mark_area(color="#ddd", opacity=0.6).encode(
        x=x, y=alt.Y("sesoi_low:Q", title="effect (value minus null)"), y2="sesoi_high:Q")
    zero = base.mark_rule(strokeDash=[6, 4], color="#333").encode(y=alt.datum(0))
    whiskers = base.mark_rule().encode(x=x, y="effect_low:Q", y2="effect_high:Q",
                                       opacity=opacity)
    kinds = ["specification", "resampling", "stops above the optimum"]
    points = base.mark_point(size=60).encode(
        x=x, y="effect_mean:Q", opacity=opacity, tooltip=tips,
        shape=alt.Shape("kind:N", title=None, scale=alt.Scale(
            domain=kinds, range=["circle", "circle", "triangle-up"])),
        fill=alt.condition(alt.datum.kind == "resampling", alt.value("white"),
                           alt.Color("verdict:N", scale=alt.Scale(
                               domain=verdicts, range=[VERDICT_COLORS[v] for v in verdicts]))),
        color=alt.Color("verdict:N", scale=alt.Scale(
            domain=verdicts, range=[VERDICT_COLORS[v] for v in verdicts]))).add_params(chosen)
    top = (band + zero + whiskers + points).properties(width=430, height=220)
    choices = base.mark_square(size=60).encode(
        x=x, y=alt.Y("parameter:N", title=None), opacity=opacity,
        color=alt.value("#4c78a8"), tooltip=["spec:N", "parameter:N", "value:N"]
    ).properties(width=430, height=16 * data["parameter"].nunique())
    subtitle = ["point: the effect (mean over seeds), line: its 95% interval, grey: +-SESOI, "
                "dashed: the null", "hollow: a new draw of players or samples (resampling, "
                "not a specification); triangle: SGD/Adam (stops above the optimum)"]
    if joint is not None:
        subtitle += [f"joint test, {k.replace('_', ' ')}: {t}" for k, t in joint["text"].items()]
    return alt.vconcat(top, choices).add_params(pick).properties(title=alt.Title(
        "Each claim's effect across its specifications", subtitle=subtitle))


def sensitivity_chart(table: pd.DataFrame, measures: list[str]) -> alt.Chart:
    """How each headline measure moves as one parameter varies: ``table`` holds per
    (parameter, value, measure) the ``mean``, ``std`` and ``n_seeds`` over seeds (the study
    result's ``sensitivity`` part)."""
    rows = table[table["measure"].isin(measures)]
    base = alt.Chart(rows)
    chart = base.mark_line(point=True).encode(
        x=alt.X("value:N", title=None, sort=None),
        y=alt.Y("mean:Q", title="mean over samples and seeds"),
        color=alt.Color("measure:N", title="measure"),
        tooltip=["parameter:N", "value:N", "measure:N", alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("std:Q", format=".3f", title="sd over seeds"), "n_seeds:Q"])
    return chart.properties(width=115, height=200).facet(
        column=alt.Column("parameter:N", title=None)).resolve_scale(x="independent").properties(
        title=alt.Title("Sensitivity of the findings", subtitle="one parameter varied at a "
                        "time; the others at the preset's values"))


# ---------------------------------------------------------------------------------------------
# images and players
# ---------------------------------------------------------------------------------------------
def _pixels(x, sample=None) -> pd.DataFrame:
    """Long table of a [C, H, W] image's pixels (channel mean), one row a pixel."""
    img = x.float().mean(0).numpy()
    h, w = img.shape
    rows, cols = np.mgrid[0:h, 0:w]
    df = pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(), "value": img.ravel()})
    if sample is not None:
        df.insert(0, "sample", sample)
    return df


def _patches(players, width: int, patch: int, sample=None) -> pd.DataFrame:
    cols_n = width // patch
    rows = []
    for k, idx in enumerate(players.tolist()):
        r, c = divmod(int(idx), cols_n)
        rows.append(dict(player=k, r0=r * patch, r1=(r + 1) * patch, c0=c * patch,
                         c1=(c + 1) * patch, rc=r * patch + patch / 2, cc=c * patch + patch / 2))
    df = pd.DataFrame(rows)
    if sample is not None:
        df.insert(0, "sample", sample)
    return df


def _image_layers(pixels: alt.Chart, patches: alt.Chart, size: int) -> alt.LayerChart:
    scale_x = alt.Scale(domain=[0, size], nice=False)
    scale_y = alt.Scale(domain=[0, size], nice=False, reverse=True)
    img = pixels.mark_rect().encode(
        x=alt.X("col:Q", scale=scale_x, axis=None), x2="col_end:Q",
        y=alt.Y("row:Q", scale=scale_y, axis=None), y2="row_end:Q",
        color=alt.Color("value:Q", scale=alt.Scale(scheme="greys", reverse=True), legend=None),
    ).transform_calculate(col_end="datum.col + 1", row_end="datum.row + 1")
    boxes = patches.mark_rect(fill=None, stroke="#e45756", strokeWidth=2).encode(
        x="c0:Q", x2="c1:Q", y="r0:Q", y2="r1:Q", tooltip=["player:N"])
    labels = patches.mark_text(color="#e45756", fontWeight="bold", fontSize=11).encode(
        x="cc:Q", y="rc:Q", text="player:N")
    return img + boxes + labels


def players_image(x, players, patch: int, title: str = "The sample and its players") -> alt.Chart:
    """One image with its n player patches outlined and numbered (bit i of a mask = player i)."""
    size = max(x.shape[-2:])
    chart = _image_layers(alt.Chart(_pixels(x)), alt.Chart(_patches(players, x.shape[-1], patch)),
                          size)
    return chart.properties(width=280, height=280, title=alt.Title(
        title, subtitle="red boxes: the players; every other pixel stays as it is when masking"))


def strength_by_rank(ranks: pd.DataFrame) -> alt.Chart:
    """Sparsity: |I| sorted from the strongest down, log-log, one line per method.

    ``ranks``: columns ``method, rank, strength`` (``study.strength_by_rank``)."""
    return alt.Chart(ranks).mark_line().encode(
        x=alt.X("rank:Q", title="rank of the interaction (strongest first)",
                scale=alt.Scale(type="log")),
        y=alt.Y("strength:Q", title="|I(S)|", scale=alt.Scale(type="log")),
        color=alt.Color("method:N", title=None),
        tooltip=["method:N", "rank:Q", alt.Tooltip("strength:Q", format=".4f")],
    ).properties(title=alt.Title("A few interactions carry the output",
                                 subtitle="|I| by rank: the sparser the explanation, the faster "
                                          "the line falls"))


def game_chart(values, n: int) -> alt.Chart:
    """The game of one sample: v(x_T) against the number of players present |T|."""
    from whypretrain.engine.interactions import popcount
    v = np.asarray(values, dtype=float)
    data = pd.DataFrame({"mask": np.arange(len(v)), "present": popcount(n).numpy(), "v": v})
    return alt.Chart(data).mark_circle(size=14, opacity=0.4).encode(
        x=alt.X("present:Q", title="players present |T|"),
        y=alt.Y("v:Q", title="v(x_T): log-odds of the true class"),
        tooltip=["mask:Q", "present:Q", alt.Tooltip("v:Q", format=".3f")],
    ).properties(title=alt.Title(f"All 2^{n} = {len(v)} outputs of the model on one sample",
                                 subtitle="each dot is one masked input x_T"))


def explorer_data(a, max_items: int = 25) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                   pd.DataFrame]:
    """The explorer's tables: pixels, players' patches, the ``max_items`` strongest
    interactions of each sample (``rel_pre`` / ``rel_ft``: ``|I| / max |I|`` in the probe and
    the fine-tuned model) and the patches of each interaction. Under ``empty_set="exclude"``
    the order-0 term is no row and is left out of the max (``knowledge``)."""
    from whypretrain.engine.interactions import popcount
    from whypretrain.measures.knowledge import KIND_NAMES, without_empty_set
    empty_set = a.params["empty_set"]
    pre = without_empty_set(a.interactions_of("probe"), empty_set)
    ft = without_empty_set(a.interactions_of("finetune"), empty_set)
    n = pre.shape[-1].bit_length() - 1
    orders = popcount(n).numpy()
    patch = a.params["patch"]
    width = a.x.shape[-1]
    pixels, patches, items, members = [], [], [], []
    for j, sid in enumerate(a.sample_ids):
        pixels.append(_pixels(a.x[j], sid))
        pp = _patches(a.players[j], width, patch, sid)
        patches.append(pp)
        rel_pre = (pre[j].abs() / pre[j].abs().max().clamp_min(1e-12)).numpy()
        rel_ft = (ft[j].abs() / ft[j].abs().max().clamp_min(1e-12)).numpy()
        strength = np.maximum(rel_pre, rel_ft)
        flat = np.argsort(-strength.ravel(), kind="stable")[:max_items]
        flat = [f for f in flat if strength.ravel()[f] > 0]  # excluded terms are exactly 0
        for rank, f in enumerate(flat):
            kind, mask = divmod(int(f), 1 << n)
            members_ = [i for i in range(n) if mask >> i & 1]
            label = f"{KIND_NAMES[kind]} {{{','.join(map(str, members_))}}}"
            item_id = f"{sid}:{kind}:{mask}"
            items.append(dict(sample=sid, item_id=item_id, label=label, rank=rank,
                              strength=float(strength.ravel()[f]),
                              order=int(orders[mask]), rel_pre=float(rel_pre[kind, mask]),
                              rel_ft=float(rel_ft[kind, mask]),
                              sign_pre=int(np.sign(float(pre[j][kind, mask]))),
                              sign_ft=int(np.sign(float(ft[j][kind, mask])))))
            for i in members_:
                row = pp.iloc[i]
                members.append(dict(sample=sid, item_id=item_id, r0=row.r0, r1=row.r1,
                                    c0=row.c0, c1=row.c1))
    return (pd.concat(pixels), pd.concat(patches), pd.DataFrame(items),
            pd.DataFrame(members, columns=["sample", "item_id", "r0", "r1", "c0", "c1"]))


def explorer(a, tau: float = 0.05, max_items: int = 25) -> alt.Chart:
    """The static explorer of one seed's results ``a`` (``results.SeedResults``).

    Pick a sample (dropdown) and a threshold (slider): the image with its players, the strongest
    interactions of the pre-trained and fine-tuned models, coloured preserved / discarded / new
    at that threshold, and counts by order. Click an interaction to see its patches on the
    image. Everything runs in the page (Vega signals): no kernel needed. The order-0 term is
    shown (and counts in the max) only under ``empty_set="include"`` (``knowledge``).
    """
    pixels, patches, items, members = explorer_data(a, max_items)
    size = max(a.x.shape[-2:])
    sample = alt.param(name="sample", value=a.sample_ids[0],
                       bind=alt.binding_select(options=list(a.sample_ids), name="sample "))
    tau_p = alt.param(name="tau", value=tau,
                      bind=alt.binding_range(min=0.01, max=0.5, step=0.01, name="tau "))
    pick = alt.selection_point(name="item", fields=["item_id"], empty=False, on="click")
    status = ("(datum.rel_pre >= tau && datum.rel_ft >= tau && datum.sign_pre == datum.sign_ft)"
              " ? 'preserved' : (datum.rel_pre >= tau ? 'discarded' : "
              "(datum.rel_ft >= tau ? 'new' : 'not salient'))")
    only = alt.datum.sample == sample
    order = list(SET_COLORS)
    color = alt.Color("status:N", title="at this tau", sort=order,
                      scale=alt.Scale(domain=order, range=[SET_COLORS[o] for o in order]))
    image = _image_layers(alt.Chart(pixels).transform_filter(only),
                          alt.Chart(patches).transform_filter(only), size)
    chosen = alt.Chart(members).mark_rect(
        fill="#f58518", opacity=0.45, stroke="#f58518").encode(
        x="c0:Q", x2="c1:Q", y="r0:Q", y2="r1:Q").transform_filter(only).transform_filter(pick)
    image = (image + chosen).properties(width=200, height=200, title="sample and players")
    by_strength = alt.EncodingSortField(field="strength", op="max", order="descending")
    item_data = alt.Chart(items).transform_filter(only).transform_calculate(
        status=status)
    bars = item_data.mark_bar().encode(
        y=alt.Y("label:N", sort=by_strength, title=None),
        x=alt.X("rel_ft:Q", title="|I| / max |I| in the fine-tuned model",
                scale=alt.Scale(domain=[0, 1])),
        color=color, opacity=alt.condition(pick, alt.value(1.0), alt.value(0.75)),
        tooltip=["label:N", "order:Q", alt.Tooltip("rel_pre:Q", format=".3f"),
                 alt.Tooltip("rel_ft:Q", format=".3f"), "sign_pre:Q", "sign_ft:Q", "status:N"],
    ).add_params(pick)
    ticks = item_data.mark_tick(color="black", thickness=2).encode(
        y=alt.Y("label:N", sort=by_strength), x="rel_pre:Q")
    rule = alt.Chart(pd.DataFrame([{}])).mark_rule(strokeDash=[4, 3]).encode(x="tau_x:Q") \
        .transform_calculate(tau_x="tau")
    strongest = (bars + ticks + rule).properties(width=190, height=380, title=alt.Title(
        "strongest interactions", subtitle="bar: fine-tuned; black tick: pre-trained (probe); "
                                           "dashed: tau; click a bar"))
    counts = item_data.transform_filter("datum.status != 'not salient'").mark_bar().encode(
        x=alt.X("order:O", title="order |S|"), y=alt.Y("count():Q", title="items"),
        color=alt.Color("status:N", sort=order, legend=None,
                        scale=alt.Scale(domain=order, range=[SET_COLORS[o] for o in order]))).properties(width=200, height=150, title="salient items by order (top "
                                                                 f"{max_items})")
    left = alt.vconcat(image, counts)
    return alt.hconcat(left, strongest).add_params(sample, tau_p).properties(
        title=alt.Title("Explorer: what the fine-tuned model keeps of the pre-trained knowledge",
                        subtitle="choose a sample and tau below the charts"))
