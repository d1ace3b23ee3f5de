"""The README is the input contract a bank maps its extracts to: keep it in step with the code."""

from pipeline.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_USAGE, EXIT_VALIDATION
from pipeline.registry import STAGES
from tests.conftest import REPO
from transforms.sources import SOURCES

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands():
    first_lines = "\n".join(README.splitlines()[:6])
    assert "make demo" in first_lines and "make test" in first_lines


def test_readme_documents_every_source_column():
    for source in SOURCES.values():
        assert f"#### `{source.name}` ({source.kind}" in README
        for column in source.columns:
            assert f"| `{column.name}` | {column.type} |" in README, (source.name, column.name)


def test_readme_documents_exit_codes_and_stages():
    for code in (EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT, EXIT_VALIDATION):
        assert f"| {code} |" in README
    for stage in STAGES:
        assert stage.name in README
