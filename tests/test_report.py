"""The run report (one self-contained HTML file) and the backtest that feeds it."""

from __future__ import annotations

from datetime import date, timedelta
from html.parser import HTMLParser

import numpy as np
import pytest

from models.churn import lift_table
from pipeline.backtest import backtest_dates
from pipeline.errors import UsageError
from tests.conftest import quiet


def test_backtest_dates_keep_month_ends_and_accept_weeks_and_days():
    assert backtest_dates(date(2026, 1, 31), date(2026, 5, 31), "1M") == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
    ]
    assert backtest_dates(date(2026, 1, 15), date(2026, 7, 14), "2m") == [
        date(2026, 1, 15),
        date(2026, 3, 15),
        date(2026, 5, 15),
    ]
    assert backtest_dates(date(2026, 1, 1), date(2026, 1, 20), "1W")[-1] == date(2026, 1, 15)
    assert len(backtest_dates(date(2026, 1, 1), date(2026, 1, 10), "3D")) == 4
    for bad in ("M", "0M", "1Y", "month"):
        with pytest.raises(UsageError, match="--step"):
            backtest_dates(date(2026, 1, 1), date(2026, 2, 1), bad)
    with pytest.raises(UsageError, match="after --to"):
        backtest_dates(date(2026, 2, 1), date(2026, 1, 1), "1M")


def test_lift_table_ranks_deciles_and_gains_reach_one():
    y = np.array([1] * 10 + [0] * 90)
    perfect = lift_table(y, np.linspace(1, 0, 100))
    assert perfect[0]["lift"] == pytest.approx(10.0)  # every churner in the top decile
    assert perfect[0]["cumulative_gain"] == 1.0 and perfect[1]["lift"] == 0.0
    reversed_ = lift_table(y, np.linspace(0, 1, 100))
    assert reversed_[0]["lift"] == 0.0 and reversed_[-1]["lift"] == pytest.approx(10.0)
    assert [r["cumulative_gain"] for r in reversed_][-1] == 1.0
    assert sum(r["examples"] for r in perfect) == 100


class _Sections(HTMLParser):
    """Collects each <section id>'s text, its <svg> aria-labels, table rows, and any tag that
    would load something (script, link, img, iframe, or a src= attribute)."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.loaders: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("script", "link", "img", "iframe", "object", "embed") or "src" in attributes:
            self.loaders.append(tag)
        if tag == "section":
            self.current = attributes["id"]
            self.sections[self.current] = {"text": "", "charts": [], "rows": 0}
        elif self.current and tag == "svg":
            self.sections[self.current]["charts"].append(attributes.get("aria-label", ""))
        elif self.current and tag == "tr":
            self.sections[self.current]["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.sections[self.current]["text"] += data


def test_backtest_and_report_on_the_sample_bank(small_bank, published_copy):
    from pipeline.backtest import run_backtest
    from pipeline.evaluate import evaluate_nbp
    from pipeline.report import write_report

    _, config = published_copy
    manifest = small_bank[2]
    end_on = config.generate.end_on
    first, last = date(2026, 6, 30), date(2026, 7, 31)
    assert last + timedelta(days=90) <= end_on  # both horizons are over

    result = run_backtest(config, first, last, "1M", quiet())
    rows = result["dates"]
    assert [r["as_of"] for r in rows] == ["2026-06-30", "2026-07-31"]
    for row in rows:
        assert row["churn_horizon_over"] and row["nbp_horizon_over"]
        assert row["churn_examples"] > 300
        assert row["churn_roc_auc"] > 0.6  # better than chance on what happened next
        assert 0 <= row["nbp_hit_rate_at_k"] <= 1 and 0 <= row["nbp_baseline_hit_rate_at_k"] <= 1
        assert row["cluster_k"] >= 2
    assert rows[0]["cluster_ari_previous"] is None  # no earlier backtest date
    assert -1 <= rows[1]["cluster_ari_previous"] <= 1
    assert 0 <= rows[1]["cluster_same_id_share"] <= 1
    assert not (config.paths.temp / f"backtest-{first}-{last}").exists()  # scratch removed
    evaluate_nbp(config, last, quiet())

    path = write_report(config, end_on, manifest.run_id)
    assert path == config.paths.warehouse / "reports" / f"report_{end_on}.html"
    parser = _Sections()
    parser.feed(path.read_text())
    sections = parser.sections
    assert list(sections) == [
        "run-summary",
        "input-reconciliation",
        "validation",
        "segment-sizes",
        "migrations",
        "cluster-profiles",
        "churn-model",
        "nbp-evaluation",
        "feature-coverage",
        "backtest",
    ]
    assert parser.loaders == []  # self-contained: nothing to fetch
    assert manifest.run_id in sections["run-summary"]["text"]
    assert sections["run-summary"]["rows"] > len(manifest.stages)
    inputs = sections["input-reconciliation"]
    assert "transactions" in inputs["text"] and "NO" not in inputs["text"].split()
    assert "malformed" in inputs["text"]  # the sample bank's reject reasons
    assert "0 failed" in sections["validation"]["text"]
    sizes = sections["segment-sizes"]
    assert "customers by service_tier" in sizes["charts"] and "mass" in sizes["text"]
    assert "first as-of date" in sections["migrations"]["text"]  # one run: nothing to compare
    assert sections["cluster-profiles"]["charts"] and sections["cluster-profiles"]["rows"] > 2
    churn = sections["churn-model"]
    assert any(c.startswith("Lift chart") for c in churn["charts"])
    assert any(c.startswith("Calibration plot") for c in churn["charts"])
    assert "roc_auc" in churn["text"] and "recency baseline" in churn["text"]
    nbp = sections["nbp-evaluation"]
    assert "popularity" in nbp["text"] and "2026-07-31" in nbp["text"]
    assert "questionnaire" in sections["feature-coverage"]["text"]
    backtest = sections["backtest"]
    assert backtest["charts"] and backtest["rows"] == 1 + len(rows)
    assert "2026-06-30" in backtest["text"]


def test_report_for_a_date_never_run_is_a_usage_error(published_copy):
    from pipeline.report import write_report

    _, config = published_copy
    with pytest.raises(UsageError, match="custseg run --as-of 2020-01-31"):
        write_report(config, date(2020, 1, 31))
