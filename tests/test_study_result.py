"""The study result on disk: what is written is what is read, with its provenance; a part
that is missing, or written by other code, is never read."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from whypretrain import errors, integrity, presets
from whypretrain.study import catalogue
from whypretrain.provenance import Sources, sources_of


@pytest.fixture
def params(tmp_path):
    return presets.resolve("ci", {"workdir": str(tmp_path)})


def disjoint_parts():
    frame = pd.DataFrame({"seed": [0, 1], "measure": ["share_new", "share_new"],
                          "value": [0.25, 0.75]})
    return {p: frame.assign(part=p) for p in catalogue.GROUPS["disjoint"]}


def test_a_group_reads_back_as_written_with_its_sources(params):
    parts = disjoint_parts()
    sources = {p: Sources(("r" * 16,), ("a" * 16, "b" * 16), ("whypretrain study --preset ci",))
               for p in parts}
    catalogue.write(params, "disjoint", parts, sources, notes={"disjoint": "computed"})
    result = catalogue.StudyResult.read(params)
    assert result.current("disjoint") and not result.current("near")
    for name, frame in parts.items():
        got = result.part(name)
        pd.testing.assert_frame_equal(got, frame)
        # the sources as written, and the part's name (the caption names the part it draws)
        assert sources_of(got) == sources[name] + Sources(parts=(name,))
    assert result.note("disjoint") == "computed"
    assert json.loads((result.path / "study.json").read_text())["params"]["preset"] == "ci"


def test_a_missing_part_names_the_command_that_makes_it(params):
    result = catalogue.StudyResult.read(params)
    with pytest.raises(errors.MissingResults, match="whypretrain analyze --preset ci"):
        result.part("near/summary")
    with pytest.raises(errors.MissingResults, match="whypretrain study --preset ci"):
        result.part("sensitivity")
    with pytest.raises(ValueError, match="no part of a study result"):
        result.part("near/nothing")
    assert not result.path.exists()   # reading wrote nothing


def test_a_part_written_by_other_code_is_not_read(params):
    catalogue.write(params, "disjoint", disjoint_parts(), {})
    manifest = catalogue.folder(params) / "study.json"
    data = json.loads(manifest.read_text())
    data["parts"]["disjoint/knowledge"]["code"] = "another version"
    integrity.write(manifest, json.dumps(data).encode())  # as that code wrote it: recorded
    result = catalogue.StudyResult.read(params)
    assert not result.current("disjoint")
    with pytest.raises(errors.MissingResults, match="another version of the library"):
        result.part("disjoint/knowledge")
    assert result.part("disjoint/metrics")["value"].tolist() == [0.25, 0.75]


def test_a_group_is_written_whole_or_not_at_all(params):
    parts = disjoint_parts()
    parts.pop("disjoint/replicates")
    with pytest.raises(ValueError, match="group disjoint holds"):
        catalogue.write(params, "disjoint", parts, {})
    assert not catalogue.folder(params).exists()


def test_the_key_is_what_changes_the_study_not_where_it_runs(params):
    key = catalogue.key(params)
    assert catalogue.key({**params, "workdir": "/elsewhere", "device": "cpu",
                             "data_root": "data"}) == key
    assert catalogue.key({**params, "tau": 0.1}) != key
    assert catalogue.key({**params, "seeds": (0, 1, 2)}) != key


# --- the catalogue: producers, keys, reading never computes ---------------------------------
def test_a_part_knows_its_producer_code_and_key(params):
    catalogue.write(params, "disjoint", disjoint_parts(), {})
    entry = catalogue.StudyResult.read(params).entry("disjoint/knowledge")
    assert entry["producer"] == "whypretrain.study.pipeline:transfer_group"
    assert entry["code"] == catalogue.code_key("whypretrain.study.pipeline")
    other = catalogue.write({**params, "tau": 0.2}, "disjoint", disjoint_parts(), {})
    assert other.entry("disjoint/knowledge")["key"] != entry["key"]   # its inputs are its key


def test_the_code_key_covers_what_the_producer_imports_and_nothing_else():
    modules = set()
    todo = ["whypretrain.report.parts"]
    while todo:
        m = todo.pop()
        if m not in modules:
            modules.add(m)
            todo += catalogue._imports(m)
    # the findings' producer runs the findings and the measures, never a chart
    assert {"whypretrain.report.findings", "whypretrain.measures.stats"} <= modules
    assert "whypretrain.report.charts" not in modules
    assert "whypretrain.book.build" not in modules


def test_a_derived_part_is_stale_when_a_part_it_read_changed(params):
    result = catalogue.write(params, "disjoint", disjoint_parts(), {})
    inputs = result.keys(("disjoint",))
    assert set(inputs) == set(catalogue.GROUPS["disjoint"])
    frame = pd.DataFrame({"claim": ["x"], "value": [1.0]})
    derived = {p: frame for p in catalogue.GROUPS["findings"]}
    result = catalogue.write(params, "findings", derived, {}, inputs=inputs)
    assert result.current("findings")
    catalogue.write({**params}, "disjoint", {p: f.assign(value=f["value"] * 2)
                                             for p, f in disjoint_parts().items()},
                    {"disjoint/knowledge": Sources(("another results folder",))})
    assert not catalogue.StudyResult.read(params).current("findings")


def test_reading_never_computes(params, monkeypatch):
    """A page's read goes to disk only: with every compute path replaced by a stub that fails,
    a stored part reads back and a missing one names `whypretrain study`."""
    from whypretrain.report import notebook, parts
    from whypretrain.study import pipeline

    def fail(*args, **kwargs):
        pytest.fail("a read computed")
    for module, name in [(pipeline, "compute"), (pipeline, "near_group"),
                         (pipeline, "sensitivity_group"), (parts, "store"), (parts, "derive")]:
        monkeypatch.setattr(module, name, fail)
    catalogue.write(params, "disjoint", disjoint_parts(), {})
    result = notebook.study_result(params, compute=False, groups=("disjoint",))
    assert result.part("disjoint/knowledge")["value"].tolist() == [0.25, 0.75]
    with pytest.raises(errors.MissingResults, match="run `whypretrain study --preset ci"):
        notebook.study_result(params, compute=False, groups=("near",))


def test_the_book_command_on_an_empty_workdir_writes_nothing(tmp_path, capsys):
    from whypretrain import cli

    workdir = tmp_path / "w"
    workdir.mkdir()
    status = cli.main(["book", "--preset", "ci", "--set", f"workdir={workdir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "whypretrain study --preset ci" in err[0], err
    assert list(workdir.iterdir()) == []
