import os
import shutil

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _needs_root_and_zfs() -> None:
    # CI runs as root with zfs-fuse installed by scripts/bootstrap.sh; a failure here is real.
    assert os.geteuid() == 0, "integration tests build labs and need root"
    assert shutil.which("zpool"), "no zpool: run scripts/bootstrap.sh"
