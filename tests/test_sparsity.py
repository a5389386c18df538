"""Sparsity measures, the lab's sample conditions and the premise of the findings (issue 34)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from whypretrain.measures import knowledge, sparsity
from whypretrain.provenance import Sources, attach
from whypretrain.report import findings
from whypretrain.study import pipeline
from whypretrain.study.games import MODELS

N = 4
SIZE = 1 << N
TERMS = 2 * (SIZE - 1)  # both kinds, the empty set excluded


def popcounts() -> torch.Tensor:
    return torch.tensor([bin(m).count("1") for m in range(SIZE)])


def one_salient_term() -> torch.Tensor:
    I = torch.zeros(2, SIZE, dtype=torch.float64)
    I[0, 0] = 50.0   # the empty set: no item, and not in the max under "exclude"
    I[1, 0b0110] = -3.0
    return I


def all_equal() -> torch.Tensor:
    I = torch.full((2, SIZE), 0.5, dtype=torch.float64)
    I[:, 0] = 0.0
    return I


# --- the measures on hand-made interactions ----------------------------------------------------

def test_one_salient_term_holds_everything():
    m = sparsity.measures(one_salient_term(), tau=0.05)
    assert int(m["items"]) == 1
    assert float(m["items_share"]) == pytest.approx(1 / TERMS)
    assert float(m["items_mass"]) == 1.0
    assert int(m["terms_90"]) == 1
    # with the empty set as a term: two items (3 >= 0.05 * 50), and the empty set alone holds
    # 50 / 53 > 90% of sum |I|
    included = sparsity.measures(one_salient_term(), tau=0.05, empty_set="include")
    assert int(included["items"]) == 2 and int(included["terms_90"]) == 1
    assert float(included["items_mass"]) == 1.0
    assert sparsity.terms(N, "include") == 2 * SIZE


def test_all_terms_equal_need_ninety_percent_of_the_terms():
    m = sparsity.measures(all_equal(), tau=0.05)
    assert int(m["items"]) == TERMS
    assert float(m["items_share"]) == 1.0 and float(m["items_mass"]) == 1.0
    assert int(m["terms_90"]) == math.ceil(0.9 * TERMS)   # 27 of 30
    assert float(m["terms_90_share"]) == pytest.approx(27 / 30)


def test_terms_for_mass_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    I = torch.randn(5, 2, SIZE, generator=gen, dtype=torch.float64) ** 3
    got = sparsity.terms_for_mass(I, 0.9)
    for sample in range(5):
        strengths = sorted(I[sample].abs().flatten().tolist(), reverse=True)
        total, held = sum(strengths), 0.0
        for k, s in enumerate(strengths, 1):
            held += s
            if held >= 0.9 * total:
                break
        assert int(got[sample]) == k
    assert int(sparsity.terms_for_mass(torch.zeros(2, SIZE))) == 0
    with pytest.raises(ValueError, match="mass"):
        sparsity.terms_for_mass(I, 0.0)


def test_items_mass_is_the_strength_the_salient_items_hold():
    I = all_equal()
    I[0, 1] = 100.0            # tau = 0.05 of it is 5 > 0.5: one item
    m = sparsity.measures(I, tau=0.05)
    assert int(m["items"]) == 1
    assert float(m["items_mass"]) == pytest.approx(100 / (100 + 0.5 * (TERMS - 1)))
    K = knowledge.salient_items(I, 0.05)
    assert int((K != 0).sum()) == int(m["items"])   # the salience of measures/knowledge.py


# --- the lab's sample conditions on constructed games -----------------------------------------

def test_mean_by_size_against_a_loop():
    v = torch.randn(SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sizes = popcounts()
    expected = [v[sizes == k].mean().item() for k in range(N + 1)]
    assert sparsity.mean_by_size(v).tolist() == pytest.approx(expected)


def test_conditions_on_constructed_games():
    size = popcounts().double()
    games = torch.stack([
        size,                                   # rises by 1 per player: span 4
        -size,                                  # falls
        0.1 * size,                             # rises, but v(N) - v(empty) = 0.4 < 1
        (size - 2) ** 2,                        # falls to 0 at size 2, then rises: span 0
        torch.where(size == N, 3.0, 0.0) + 0 * size,  # flat, then a jump at N: rises
    ])
    c = sparsity.conditions(games)
    assert c["rising"].tolist() == [True, False, True, False, True]
    assert c["span"].tolist() == pytest.approx([4.0, -4.0, 0.4, 0.0, 3.0])
    assert c["meets"].tolist() == [True, False, False, False, True]
    assert sparsity.conditions(games, span_min=0.3)["meets"].tolist() == \
        [True, False, True, False, True]


def test_table_and_summary():
    I = torch.stack([one_salient_term(), all_equal()])
    v = torch.stack([popcounts().double(), -popcounts().double()])
    t = sparsity.table(I, v, 0.05, sample_ids=[7, 9])
    assert t["sample"].tolist() == [7, 9]
    assert t["items"].tolist() == [1, TERMS] and t["meets"].tolist() == [True, False]
    per_sample = pd.concat([t.assign(seed=0, model="probe", epoch=3),
                            t.assign(seed=1, model="probe", epoch=3).assign(items=[3, 5])])
    s = sparsity.summary(per_sample).set_index("model")
    # per seed: the mean over samples; then over seeds
    assert s.loc["probe", "items"] == pytest.approx(((1 + TERMS) / 2 + 4) / 2)
    assert s.loc["probe", "items_low"] == 4 and s.loc["probe", "items_high"] == (1 + TERMS) / 2
    assert s.loc["probe", "meets"] == 0.5 and s.loc["probe", "games"] == 4
    with pytest.raises(ValueError, match="do not belong"):
        sparsity.table(I, v[:, :8], 0.05)


# --- the study's tables of seeds' results ------------------------------------------------------

def fake_seed(seed: int, values: torch.Tensor, I: torch.Tensor | None = None):
    """What pipeline.sparsity_table and lab_samples read of a SeedResults: three final models
    (rows in MODELS order), samples 10 and 11."""
    I = torch.zeros(values.shape[:-1] + (2, SIZE), dtype=torch.float64) if I is None else I
    return SimpleNamespace(seed=seed, sample_ids=[10, 11], labels=[(m, 3) for m in MODELS],
                           row_of=lambda model: MODELS.index(model),
                           result=SimpleNamespace(values=values, stacked=lambda: I))


def test_lab_samples_keep_what_every_final_model_of_every_seed_meets():
    rising = popcounts().double()
    ok = rising.expand(3, 2, SIZE).clone()
    other = ok.clone()
    other[2, 1] = -rising           # seed 1's scratch model falls on sample 11
    loaded = [fake_seed(0, ok), fake_seed(1, other)]
    assert pipeline.lab_samples(loaded) == {10}
    table = pd.DataFrame({"sample": [10, 11, 10], "value": [1.0, 2.0, 3.0]})
    kept = pipeline.kept_samples(loaded, {"sample_filter": "lab"})(table)
    assert kept["value"].tolist() == [1.0, 3.0]
    assert pipeline.kept_samples(loaded, {"sample_filter": "all"})(table) is table
    # the same samples from the study's sparsity table (its final models only)
    I = torch.zeros(3, 2, 2, SIZE, dtype=torch.float64)
    part = pipeline.sparsity_table([fake_seed(0, ok, I), fake_seed(1, other, I)], 0.05,
                                   "exclude")
    early = part.assign(epoch=0, meets=False)          # an earlier checkpoint does not count
    assert sparsity.lab_kept(pd.concat([part, early])) == [10]
    assert findings.lab_filter_text(FakeResult({"near/sparsity": part})) == "1 of 2 samples"


def test_sparsity_table_has_a_row_per_seed_model_and_sample():
    I = torch.stack([one_salient_term(), all_equal()]).expand(3, 2, 2, SIZE)
    values = popcounts().double().expand(3, 2, SIZE)
    t = pipeline.sparsity_table([fake_seed(0, values, I), fake_seed(1, values, I)], 0.05,
                                "exclude")
    assert len(t) == 2 * 3 * 2
    assert list(t.columns[:4]) == ["seed", "model", "epoch", "sample"]
    assert t.groupby("sample")["items"].unique().map(list).to_dict() == {10: [1], 11: [TERMS]}


# --- the premise: a dense model's claims read "premise fails" ---------------------------------

class FakeResult:
    """The one part sparsity_of reads, per setting."""

    def __init__(self, parts: dict[str, pd.DataFrame]):
        self.parts = parts

    def part(self, name: str) -> pd.DataFrame:
        if name not in self.parts:
            raise findings.MissingResults(name, "whypretrain study")
        return attach(self.parts[name].copy(), Sources(("results-hash",)))


def sparsity_part(dense: str | None) -> pd.DataFrame:
    """Two seeds, two samples, the final models (epoch 3) and an earlier fine-tuned one (epoch
    0, dense, which the premise does not read); ``dense``: the final model whose interactions
    are made dense (every term equal)."""
    frames = []
    for seed in (0, 1):
        for model, epoch in [*((m, 3) for m in MODELS), ("finetune", 0)]:
            I = all_equal() if model == dense or epoch == 0 else one_salient_term()
            v = popcounts().double()
            t = sparsity.table(torch.stack([I, I]), torch.stack([v, v]), 0.05, [0, 1])
            frames.append(t.assign(seed=seed, model=model, epoch=epoch))
    return pd.concat(frames, ignore_index=True)


def judged(settings=("near", "far")) -> pd.DataFrame:
    return pd.DataFrame([dict(setting=s, claim=c, verdict=findings.EXCEEDS, reproduces=True)
                         for s in settings for c in findings.CLAIM_KEYS])


def test_a_dense_model_makes_its_claims_read_premise_fails():
    result = FakeResult({"near/sparsity": sparsity_part(None),
                         "far/sparsity": sparsity_part("scratch")})
    sparse = findings.premise_inputs(result)
    assert set(sparse) == {"near", "far"}      # disjoint has no sparsity part: not measured
    assert sparse["near"]["sparse"].all()
    assert sparse["far"].loc["scratch", "terms_90_share"] == pytest.approx(0.9)
    assert not sparse["far"].loc["scratch", "sparse"]
    out = findings.with_premise(judged(("near", "disjoint", "far")), sparse)
    by = out.set_index(["setting", "claim"])
    for claim in findings.CLAIM_KEYS:
        assert by.loc[("near", claim), "verdict"] == findings.EXCEEDS
        reads_scratch = "scratch" in findings.PREMISE_MODELS.get(claim, ())
        far = by.loc[("far", claim)]
        assert far["verdict"] == (findings.PREMISE_FAILS if reads_scratch
                                  else findings.EXCEEDS), claim
        assert far["reproduces"] == (not reads_scratch), claim   # the headline count too
        if reads_scratch:
            assert far["premise"] == "fails: scratch 90.0%"
        assert by.loc[("disjoint", claim), "premise"] in ("n/a", "not measured")
    assert by.loc[("far", "accuracy_gap"), "premise"] == "n/a"
    assert by.loc[("near", "share_new"), "premise"] == "holds"
    assert findings.PREMISE_FAILS in findings.VERDICTS
    text = findings.as_markdown(out.assign(
        ours="x", null=np.nan, effect="", paper="p", measure="m", rule="r", null_text="n",
        paper_verdict="agrees"))
    assert "**premise fails**; paper's range: agrees<br>(fails: scratch 90.0% of terms" in text


def test_a_dense_probe_fails_every_knowledge_claim_but_not_convergence():
    sparse = findings.premise_inputs(FakeResult({"near/sparsity": sparsity_part("probe")}))
    out = findings.with_premise(judged(("near",)), sparse).set_index("claim")
    failing = set(out.index[out["verdict"] == findings.PREMISE_FAILS])
    assert failing == {"share_discarded", "share_new", "learnable", "discard_order"}


def test_the_bound_is_inclusive_and_nan_fails():
    assert sparsity.sparse_enough(sparsity.SPARSE_BOUND)
    assert not sparsity.sparse_enough(sparsity.SPARSE_BOUND + 1e-9)
    assert not sparsity.sparse_enough(float("nan"))
