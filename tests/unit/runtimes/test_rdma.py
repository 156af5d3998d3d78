"""One rule for "this node has RDMA": an RDMA verbs device among the devices found."""

from __future__ import annotations

import pytest

from slurmserve.runtimes import _common as docker


@pytest.mark.parametrize("devices,rdma", [
    ("/dev/infiniband/uverbs0 /dev/infiniband/rdma_cm", True),
    (["/dev/gdrdrv", "/dev/infiniband/uverbs3"], True),
    ("/dev/infiniband/rdma_cm /dev/gdrdrv", False),
    ("", False),
    ([], False),
    ("/dev/not-uverbs0", False),
])
def test_has_rdma(devices, rdma: bool) -> None:
    assert docker.has_rdma(devices) is rdma
