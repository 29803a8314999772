"""The docs' reference tables are the generated ones, so they cannot drift; the README
stays a short front page that links to every docs page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.options import options_table
from tools.configdoc import SERVICES, table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
URL_API = ROOT / "docs" / "url-api.md"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_settings_table_matches_the_schema(service: str) -> None:
    text = CONFIGURATION.read_text()
    found = re.search(
        rf"<!-- {service}-settings:begin -->\n(.*?)\n<!-- {service}-settings:end -->", text, re.S
    )
    assert found, f"docs/configuration.md lacks the {service} settings table markers"
    assert found.group(1).strip() == table(service), (
        "regenerate with: python -m tools.configdoc --write docs/configuration.md"
    )


def test_options_table_matches_the_parser_table() -> None:
    found = re.search(
        r"<!-- edge-options:begin -->\n(.*?)\n<!-- edge-options:end -->", URL_API.read_text(), re.S
    )
    assert found and found.group(1).strip() == options_table()


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_readme_is_a_front_page_whose_links_all_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/url-api.md" in links and "docs/configuration.md" in links
    for link in links:
        assert (ROOT / link).exists(), link
