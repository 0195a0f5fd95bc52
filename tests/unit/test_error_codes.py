"""The one domain error and the one map of its codes to HTTP statuses."""

from __future__ import annotations

from typing import get_args

from cti.errors import DomainError, ErrorCode
from cti.screenpop.errors import STATUS


def test_every_error_code_has_an_http_status():
    assert set(STATUS) == set(get_args(ErrorCode))


def test_an_error_as_json_carries_its_field_and_details():
    error = DomainError("stale_version", "version: 1 was sent", "version", details={"current": {}})
    assert error.as_json() == {
        "error": "stale_version",
        "message": "version: 1 was sent",
        "field": "version",
        "current": {},
    }
    assert str(error) == "version: 1 was sent"
