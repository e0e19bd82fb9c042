import os
from pathlib import Path

import pytest

FIXTURES = Path(
    os.environ.get("DWS_FIXTURES", Path(__file__).resolve().parents[3] / "tests" / "fixtures")
)


def fixture_names():
    names = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").exists())
    assert names, f"no reference fixtures under {FIXTURES}"
    return names


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
