"""Live exploration in Jupyter (ipywidgets). The static book gets the embedded state only; the
charts that must work without a kernel use Altair parameters instead (``charts.explorer``)."""
from __future__ import annotations

from whypretrain.measures import knowledge

SETS = ("probe", "finetune", "preserve", "discard", "new")


def set_sizes(a, tau: float, empty_set: str | None = None) -> dict[str, float]:
    """Mean number of items per explained sample in each K set at ``tau`` (``a``: one seed's
    ``results.SeedResults``; ``empty_set``: the preset's unless given)."""
    sets = knowledge.knowledge_sets(a.items_of("probe", tau, empty_set=empty_set),
                                    a.items_of("finetune", tau, empty_set=empty_set))
    return {name: float(sets[name].flatten(-2).sum(-1).float().mean()) for name in SETS}


def knowledge_slider(a, tau: float = 0.05):
    """A tau slider over one seed's results ``a`` that recomputes the K set sizes live."""
    import ipywidgets as w

    slider = w.FloatSlider(value=tau, min=0.01, max=0.5, step=0.01, description="tau",
                           continuous_update=False, readout_format=".2f")
    table = w.HTML()

    def update(_=None):
        sizes = set_sizes(a, slider.value)
        cells = "".join(f"<tr><td>K_{k}</td><td style='text-align:right'>{v:.2f}</td></tr>"
                        for k, v in sizes.items())
        table.value = (f"<table><tr><th>set</th><th>items per sample (mean over "
                       f"{len(a.sample_ids)} samples)</th></tr>{cells}</table>")

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, table])
