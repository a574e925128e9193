"""Generated documents must match what the code and data say today."""

from pathlib import Path

from cds_service.devtools import catalogue, sandbox_urls

REPO = Path(__file__).resolve().parents[2]


def test_rule_catalogue_is_current():
    committed = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == catalogue.render(), (
        "docs/rules.md is stale: python -m cds_service.devtools.catalogue > docs/rules.md"
    )


def test_catalogue_covers_every_rule_with_sources_and_codes():
    text = catalogue.render()
    from cds_service.guidance.rules import ALL

    for rule in ALL:
        section = text.split(f"## `{rule.id}`", 1)[1].split("\n## ", 1)[0]
        assert "**When:**" in section and "**Then:**" in section
        assert "**Sources:**" in section


def test_readme_sandbox_appendix_is_current():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert sandbox_urls.appendix() in readme, (
        "README appendix is stale: python -m cds_service.devtools.sandbox_urls --write README.md"
    )


def test_readme_names_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "\nrun:" in makefile and "\ntest:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_scenarios_exist():
    import re

    from cds_service.devtools.scenarios import list_scenarios

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"hypermobility-cds fire ([a-z0-9-]+)", readme))
    assert named and named <= set(list_scenarios())
