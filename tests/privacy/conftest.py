"""Requests for privacy tests: written in their JSON form, decoded by the real OpenRTB decoder."""

import msgspec
import pytest

from openbid.openrtb import decode_bid_request


@pytest.fixture(scope="session")
def make_request():
    """Builds a bid request from `regs`, `user` and `device` objects in JSON form."""

    def build(regs=None, user=None, device=None):
        data = {"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
        for name, value in (("regs", regs), ("user", user), ("device", device)):
            if value is not None:
                data[name] = value
        return decode_bid_request(msgspec.json.encode(data))

    return build
