"""Project-wide test configuration. Area fixtures live in each tests/<area>/conftest.py."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip (with the reason printed) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared data absent: {path} (tests that need public traces skip without it)")
    return path
