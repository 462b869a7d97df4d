"""The settings' reference in .env.example and docs/deploying.md is the one their code describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.settings_reference import GENERATED, written
from worker.config.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", list(GENERATED), ids=lambda path: path.name)
def test_the_written_reference_matches_the_settings(path: Path) -> None:
    assert path.read_text() == written(path), f"{path.name} drifted: run `python -m tests.support.settings_reference`"


def test_every_setting_is_described() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []
