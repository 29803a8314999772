"""The README's reference tables are the generated ones, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.options import options_table
from tools.configdoc import SERVICES, table

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_settings_table_matches_the_schema(service: str) -> None:
    text = README.read_text()
    found = re.search(
        rf"<!-- {service}-settings:begin -->\n(.*?)\n<!-- {service}-settings:end -->", text, re.S
    )
    assert found, f"README lacks the {service} settings table markers"
    assert found.group(1).strip() == table(service), (
        f"regenerate with: python -m tools.configdoc {service}"
    )


def test_options_table_matches_the_parser_table() -> None:
    found = re.search(
        r"<!-- edge-options:begin -->\n(.*?)\n<!-- edge-options:end -->", README.read_text(), re.S
    )
    assert found and found.group(1).strip() == options_table()


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()
