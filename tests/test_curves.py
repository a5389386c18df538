"""Measures on curves over epochs, on hand-made curves whose answer is known."""
from __future__ import annotations

import pandas as pd
import pytest

from whypretrain.measures import curves


def convergence_table(own: dict[str, dict[int, float]], ref: dict[str, dict[int, float]]
                      ) -> pd.DataFrame:
    rows = [dict(seed=0, model=model, epoch=e, sample=s, measure=measure, order=-1, value=v)
            for measure, curves_ in (("jaccard_weighted", own),
                                     ("jaccard_weighted_vs_finetune", ref))
            for model, curve in curves_.items() for e, v in curve.items() for s in (0, 1)]
    return pd.DataFrame(rows)


def test_area_over_checkpoints_is_the_mean_of_the_line_through_them():
    # a straight line 0.1 .. 0.9 over epochs 0..8, then 1 at the last epoch 9
    every = {e: 0.1 + 0.1 * e for e in range(9)} | {9: 1.0}
    sparse = {e: every[e] for e in (0, 1, 2, 4, 8, 9)}
    full = curves.convergence_measures(convergence_table({"scratch": every}, {"scratch": every}))
    some = curves.convergence_measures(convergence_table({"scratch": sparse}, {"scratch": sparse}))
    area = lambda m: m.set_index("measure").loc["area", "value"]  # noqa: E731
    assert area(full) == pytest.approx(0.5)          # mean of 0.1 .. 0.9
    assert area(some) == pytest.approx(area(full))   # the same mean from 6 of 10 epochs


def test_reach_leaves_out_the_last_epoch_where_fine_tuning_is_its_own_reference():
    never = {0: 0.1, 1: 0.2, 2: 0.3}
    own = {"finetune": {**never, 3: 1.0}, "scratch": {**never, 3: 1.0}}
    ref = {"finetune": {**never, 3: 1.0}, "scratch": {**never, 3: 0.35}}
    m = curves.convergence_measures(convergence_table(own, ref))
    reach = m[m["measure"] == "reach"].set_index("model")["value"]
    assert reach["finetune"] == reach["scratch"] == 4      # neither got there: T + 1
    ref["finetune"][2] = 0.6                                 # fine-tuning gets there at 2
    m = curves.convergence_measures(convergence_table(own, ref))
    assert m[m["measure"] == "reach"].set_index("model")["value"]["finetune"] == 2


def test_accuracy_epochs_is_the_first_epoch_at_the_fraction_of_the_final_accuracy():
    metrics = pd.DataFrame([dict(seed=0, model=m, epoch=e, test_acc=a)
                            for m, accs in (("finetune", [0.1, 0.9, 0.95, 1.0]),
                                            ("scratch", [0.1, 0.3, 0.6, 1.0]))
                            for e, a in enumerate(accs)])
    e = curves.accuracy_epochs(metrics, fraction=0.9)
    assert e.loc[0, "finetune"] == 1 and e.loc[0, "scratch"] == 3
    assert curves.final_accuracy(metrics).loc[0].tolist() == [1.0, 1.0]
