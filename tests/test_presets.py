"""Parameters: every value of every type, alone and in combination, either resolves into
parameters the study's first steps accept, or stops at once with one ``ParameterError`` line
that names the parameter, having read and written nothing (Hypothesis draws the values)."""
from __future__ import annotations

import math
import os
import re
import tempfile
from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from whypretrain.train import data, models, loops
from whypretrain.measures import knowledge
from whypretrain.engine import masking
from whypretrain.report import notebook
from whypretrain import presets
from whypretrain.study import extraction, games
from whypretrain.errors import ParameterError

PARAMS = presets.PARAMS
# the parameters the checks between parameters read: drawn more often
TOGETHER = ("source", "target", "arch", "weights", "source_folder", "target_folder",
            "image_size", "patch", "n", "target_per_class", "device", "player_choice")
TEXT = ("", " ", "nan", "inf", "-inf", "1e999", "-1", "0", "1", "0.5", "true", "no", "1,2",
        "(0, 1)", "0,0", " 3 ", "many", "a\x00b")
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**400, 10**400),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                 st.sampled_from(TEXT), st.lists(st.integers(-3, 5), max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
STRINGS = {"source_folder": ["", "src", "a\x00b"], "target_folder": ["", "tgt"],
           "weights": ["", "w.pth"], "workdir": [".", "", "w", "a\x00b"],
           "data_root": ["data", "", "d"],
           "device": ["auto", "cpu", "cuda", "cuda:1", "mps", "gpu", "", "CPU"]}


def _plausible(name: str) -> st.SearchStrategy:
    """Values of the parameter's own type, around and beyond its range."""
    spec = PARAMS[name]
    if spec.choices is not None:
        return st.sampled_from(spec.choices)
    kind = spec.type
    if kind is bool:
        return st.booleans()
    if kind is str:
        return st.sampled_from(STRINGS[name])
    if kind is tuple:
        return st.lists(st.integers(-2, 10**10), max_size=4).map(tuple) | st.just((0,))
    if name in ("n", "patch", "image_size"):  # where the players' constraints bite
        return st.integers(-1, 40) | st.sampled_from([224, 256, 512, 513])
    if name == "resolution":  # a few, so that each model is built once
        return st.sampled_from([15, 16, 32, 48, 512, 513])
    if kind is int:
        numbers = st.integers(int(spec.low) - 2, int(spec.high) + 2) | st.sampled_from(
            [int(spec.low), int(spec.high), 10**30])
        return numbers | st.sampled_from(spec.words) if spec.words else numbers
    edges = [spec.low, spec.high, math.nan, math.inf, -math.inf, 1e-300, 5e-324]
    return st.floats(spec.low - 0.5, spec.high + 0.5) | st.sampled_from(edges)


def _value(name: str) -> st.SearchStrategy:
    """Mostly the parameter's own type, as a Python value or as the command line's text; at
    times anything at all."""
    own = _plausible(name)
    return st.one_of(own, own, own, own, own.map(str), own.map(str), JUNK)


@st.composite
def overrides(draw) -> tuple[str, dict]:
    preset = draw(st.sampled_from([*presets.PRESETS, "ci", "ci", "nope"]))
    names = draw(st.lists(st.sampled_from(TOGETHER), max_size=4, unique=True)
                 | st.lists(st.sampled_from(sorted(PARAMS)), max_size=3, unique=True))
    out = {name: draw(_value(name)) for name in names}
    if draw(st.integers(0, 19)) == 13:
        out["tua"] = 0.1  # a misspelt name
    return preset, out


@lru_cache(maxsize=None)
def _train_set(name: str):
    """The full training split of an embedded target set (read once, outside the tmp dir)."""
    return data._load({"target": name}, "target")[0]


@lru_cache(maxsize=None)
def _forward(arch: str, channels: int, resolution: int, side: int) -> tuple[int, ...]:
    """The output shape of the model training builds for ``arch`` (random init, ``channels``
    input channels) on two zero images of ``side`` pixels; each shape is tried once."""
    stats = ([0.0] * channels, [1.0] * channels)  # what efficientnet_lite0's adapter undoes
    names = dict(source="imagenet", target="uci" if channels == 1 else "folder")
    model = models.build({"arch": arch, "weights": "", "resolution": resolution, **names}, 3,
                         stats).eval()
    with torch.no_grad():
        return tuple(model(torch.zeros(2, channels, side, side)).shape)


def _accepted_downstream(p: dict) -> None:
    """The first steps of `whypretrain analyze` on ``p``, without training: the device, the
    seeds, the target's images and players, the model on every set it is trained on, the
    engine and the knowledge on small games."""
    device = loops.device_of(p)
    torch.zeros(1, device=device)
    with loops.num_threads(p["threads"]):
        pass
    torch.Generator().manual_seed(games.player_seed(10**4, p["player_seed"]))
    for seed in p["seeds"]:
        loops._generator(seed, p["epochs"])
    side = presets.image_side(p)
    channels = presets.DATASETS[presets._family(p["target"])].channels
    image = torch.zeros(channels, side, side)
    image[:, side // 3: side // 2, side // 4:] = 1.0  # some ink
    players = masking.choose_players(image, p["n"], p["patch"], p["seeds"][0], p["player_choice"])
    assert len(set(players.tolist())) == p["n"]
    assert masking.player_masks(players, (side, side), p["patch"]).shape == (p["n"], side, side)
    if presets.DATASETS[presets._family(p["target"])].side is not None:  # embedded: no files
        data._per_class(_train_set(p["target"]), p["target_per_class"])
    if p["arch"] in ("smallcnn", "efficientnet_lite0", "resnet18"):  # the cheap builds
        fed = {role: (presets.DATASETS[presets._family(p[role])].channels,
                      presets.image_side(p, role)) for role in presets.trained_on(p)}
        if p["arch"] not in presets.TORCHVISION:  # channels from data.channels: all the same
            assert all(c == data.channels(p) for c, _ in fed.values())
        for c, s in fed.values():
            resolution = p["resolution"] if p["arch"] == "efficientnet_lite0" else 0
            assert _forward(p["arch"], c, resolution, s) == (2, 3)
    n = min(p["n"], 4)  # small games: the engine's parameters are what is checked
    gen = torch.Generator().manual_seed(0)
    # joint extraction decomposes a seed's three final models together: games [model, sample]
    shape = (3, 2) if p["extraction"] == "joint" else (2,)
    values = torch.randn(*shape, 1 << n, dtype=torch.float64, generator=gen)
    engine = extraction.run_engine(values, {**p, "iterations": min(p["iterations"], 3)})
    knowledge.salient_items(engine.stacked(), p["tau"], p["empty_set"])


# an example runs in milliseconds; each model shape is built and run once (about a second).
# derandomize: CI draws the same 200 examples every run (a search with other seeds:
# `pytest tests/test_presets.py --hypothesis-seed=N` after removing it)
@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(overrides())
def test_any_parameters_resolve_and_run_or_stop_at_once_writing_nothing(case):
    preset, over = case
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as empty:
        os.chdir(empty)
        try:
            try:
                params = presets.resolve(preset, over)
            except ParameterError as err:
                message = str(err)
                assert "\n" not in message and message.strip()
                named = [w for w in re.findall(r"[a-z_]+", message)
                         if w in (*PARAMS, "preset", "tua")]
                event(f"stopped: {named[0]}")
                try:
                    notebook.notebook_params(preset, over)
                except ParameterError as same:  # the notebooks' first cell: the same line
                    assert str(same) == message
                else:
                    raise AssertionError("notebook_params accepted what resolve refused")
            else:
                event("resolved")
                assert params["preset"] == preset
                _accepted_downstream(params)
                event("accepted downstream")
            assert os.listdir(empty) == []  # nothing written, either way
        finally:
            os.chdir(before)


def test_checkpoints_are_all_or_a_count_of_at_least_two():
    """``checkpoints``: every epoch is "all", a number is about that many epochs (8 by
    default); 0, which meant every epoch before, says to write "all"."""
    resolve = presets.resolve
    assert resolve("ci")["checkpoints"] == 8 and games.EVERY_EPOCH == "all"
    for text, value in [("all", "all"), (" all", "all"), ("6", 6), ("2", 2), ("10000", 10000)]:
        assert resolve("ci", presets.parse_sets([f"checkpoints={text}"]))["checkpoints"] == value
    assert resolve("imagenet-uci")["checkpoints"] == 4
    for bad, words in [(0, ["checkpoints=all"]), ("0", ["checkpoints=all"]),
                       (1, ["'all' or [2, 10000]"]), (10001, ["'all' or [2, 10000]"]),
                       ("All", ["'all' or int"]), ("every", ["'all' or int"]),
                       (6.0, ["'all' or int"]), (True, ["'all' or int"])]:
        with pytest.raises(ParameterError) as err:
            resolve("ci", {"checkpoints": bad})
        assert "'checkpoints'" in str(err.value) and all(w in str(err.value) for w in words)
    assert "'all' or in [2, 10000]" in presets.describe()


# values at the edges of their ranges and of the constraints, end to end (about 40 s each)
EDGES = [
    dict(n=1, patch=28, player_choice="random", q_bound=0, tol=0.999999, tau=1e-300,
         baseline="blur", subtract_empty=True, mask_batch=1, batch_size=4096, threads=0,
         seeds="1000000000", player_seed=10**6, checkpoints=10000),
    dict(n=9, patch=9, optimizer="sgd", iterations=0, sparsify_lr=9.99, or_merge="keep",
         empty_set="include", tau=0.999999, pretrain_epochs=0, source="mnist-0-4",
         target="uci-5-9", target_per_class=87, batch_size=1, mask_batch=1 << 20, checkpoints=2),
]


@pytest.mark.slow
@pytest.mark.parametrize("edge", EDGES)
def test_edge_values_run_through_analyze(tmp_path, monkeypatch, edge):
    from whypretrain import cli

    monkeypatch.chdir(tmp_path)
    sets = {"epochs": 1, "only_correct": False, "seeds": "0", "workdir": str(tmp_path / "work"),
            **edge}
    argv = ["analyze", "--preset", "ci"] + [a for key, value in sets.items()
                                            for a in ("--set", f"{key}={value}")]
    assert cli.main(argv) == 0
    (folder,) = (tmp_path / "work" / "results").iterdir()   # one seed: one results folder
    assert len(list(folder.glob("table*.csv"))) == 1
