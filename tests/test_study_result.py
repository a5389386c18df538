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
        assert sources_of(got) == sources[name]
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
