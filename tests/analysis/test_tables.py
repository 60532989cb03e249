"""Formatting helpers and the table writer."""

from __future__ import annotations

import pandas as pd

from metacam.analysis.outputs import OUTPUT_NAMES, OUTPUTS
from metacam.analysis.tables import fmt, fmt_ci, fmt_p, fmt_share, id_ranges, markdown, write_table


def test_formatting_helpers():
    assert id_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert id_ranges([]) == ""
    assert fmt(float("nan")) == "n/a" and fmt(3) == "3" and fmt(0.123456) == "0.1235" and fmt(True) == "yes"
    assert fmt_ci(0.5, 0.4, 0.6) == "+0.500 [+0.400, +0.600]" and fmt_ci(float("nan"), 0, 1) == "n/a"
    assert fmt_ci(-0.25, float("nan"), float("nan"), 2) == "-0.25"
    assert fmt_p(0.0004) == "4.0e-04" and fmt_p(0.2) == "0.200" and fmt_p(float("nan")) == "n/a"
    assert fmt_share(0.256) == "26%" and fmt_share(None) == "n/a"


def test_markdown_and_writer(tmp_path):
    frame = pd.DataFrame({"name": ["a|b"], "value": [1.5]})
    text = markdown(frame)
    assert text.splitlines() == ["| name | value |", "|---|---:|", "| a\\|b | 1.5000 |"]
    csv, md = write_table(frame, tmp_path, "t")
    assert pd.read_csv(csv).equals(frame) and md.read_text() == text


def test_every_output_is_documented_and_cleaned():
    assert "report.md" in OUTPUTS and all(OUTPUTS.values())
    for name in OUTPUTS:
        assert name in OUTPUT_NAMES
        if name.endswith(".csv") and name not in ("cre_curves.csv", "cre_per_unit.csv", "failed_rows.csv"):
            assert name.replace(".csv", ".md") in OUTPUT_NAMES
    assert "anova.csv" in OUTPUT_NAMES  # an older version's output is removed when stale
