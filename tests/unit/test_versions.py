"""Which PostgreSQL versions zsnap drives, and how doctor names them."""

from __future__ import annotations

import pytest

from zsnap.errors import UsageError
from zsnap.pg.versions import describe, refuse_unsupported


@pytest.mark.parametrize("version", [150000, 150018, 160010, 170006, 180006])
def test_fifteen_to_eighteen_are_driven(version: int) -> None:
    refuse_unsupported(version)


@pytest.mark.parametrize("version", [140020, 130000, 190000, 200001])
def test_others_are_refused_in_one_line(version: int) -> None:
    with pytest.raises(UsageError, match=rf"^PostgreSQL {version // 10000} is not supported: "
                                         r"zsnap drives 15 to 18$"):
        refuse_unsupported(version)


def test_the_tested_versions_are_named_as_such() -> None:
    assert describe(180006) == "PostgreSQL 18.6 (tested)"
    assert describe(150018) == "PostgreSQL 15.18 (tested)"
    assert describe(170006) == "PostgreSQL 17.6 (supported, not in zsnap's test suite)"
