import pytest

from pipeline.registry import STAGE_NAMES, STAGES, TABLES, select_stages, upstream


def test_every_stage_reads_only_what_earlier_stages_produce():
    produced = {"ingest"}
    for stage in STAGES:
        assert set(upstream(stage)) <= produced, stage.name
        produced.add(stage.name)


def test_selection_by_only_from_and_to():
    assert [s.name for s in select_stages(only=["aum_tiers", "ingest"])] == ["ingest", "aum_tiers"]
    assert [s.name for s in select_stages(start="segments")] == [
        "segments",
        "segment_migrations",
        "segment_summaries",
    ]
    assert [s.name for s in select_stages(start="rfm_scores", stop="aum_tiers")] == [
        "rfm_scores",
        "aum_tiers",
    ]
    assert [s.name for s in select_stages(stop="customer_features")] == [
        "ingest",
        "customer_features",
    ]
    assert [s.name for s in select_stages()] == list(STAGE_NAMES)
    with pytest.raises(KeyError):
        select_stages(only=["nope"])


def test_output_tables_are_plural_nouns_named_after_their_stage():
    mass_nouns = {"relationship_depth", "feature_coverage"}  # the names; no plural
    for stage in STAGES[1:]:
        assert stage.output == stage.name
        assert stage.output.endswith("s") or stage.output in mass_nouns, stage.output
    assert {"customer_features", "segments", "segment_migrations"} <= set(TABLES)


def test_previous_inputs_are_not_upstream_dependencies():
    segments = next(s for s in STAGES if s.name == "segment_migrations")
    assert "previous_segments" in segments.uses
    assert upstream(segments) == ["segments"]
