"""The catalogue's derived group, ``findings``: the claims table and the specification table,
computed from the study result's other parts and stored beside them, so that the book reads
its verdicts instead of recomputing them on every read.

``store(params)`` computes them when they are not current (``whypretrain study`` calls it after
the analysis, a notebook when its ``compute`` switch is on); ``whypretrain book`` and the
notebooks only read them (``result.part("findings/claims")``). The group's code key
(``catalogue.code_key``) covers this module and what it imports (the findings and the
measures), not the charts: an edit to a chart recomputes no table.
"""
from __future__ import annotations

import pandas as pd

from whypretrain.provenance import attach, sources_of
from whypretrain.report import findings
from whypretrain.study.catalogue import DERIVED_FROM, StudyResult, write


def derive(result: StudyResult) -> dict[str, pd.DataFrame]:
    """The ``findings`` group's parts, from ``result``'s other parts (reads only)."""
    spec = findings.specification_table(result)
    joint = findings.joint_tests(findings.specification_effects(result))
    return {"findings/claims": findings.transfer_table(result),
            "findings/specifications": spec,
            "findings/joint": attach(joint, sources_of(spec)),
            "findings/and_only": findings.and_only_claims(spec)}


def store(params: dict) -> StudyResult:
    """The study result with its ``findings`` group current: computed from the parts it reads
    (``MissingResults`` naming the command when one of them is missing) unless the stored one
    is current."""
    result = StudyResult.read(params)
    if result.current("findings"):
        return result
    result.require(DERIVED_FROM["findings"])
    tables = derive(result)
    return write(params, "findings", tables, {p: sources_of(t) for p, t in tables.items()},
                 inputs=result.keys(DERIVED_FROM["findings"]))
