"""The error hierarchy: one base class, one class per ORC code, built from the service's error body."""

from __future__ import annotations

import msgspec
import pytest

import breaker_client
from breaker_client import (
    AuthenticationError,
    CircuitOpenError,
    ClientError,
    ErrorCode,
    NotFoundError,
    ServiceError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
)
from breaker_client._errors import error_from_response


def body(code: str, message: str = "m", details: object = None) -> bytes:
    return msgspec.json.encode(
        {"error": {"code": code, "message": message, "correlation_id": "c-1", "details": details}}
    )


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_orc_code_has_its_own_class(code: ErrorCode) -> None:
    error = error_from_response(418, body(code))

    assert type(error).code is code
    assert isinstance(error, ServiceError)
    assert isinstance(error, ClientError)


def test_error_carries_the_body() -> None:
    error = error_from_response(422, body("ORC_001", "bad name", {"path": "$.name"}))

    assert isinstance(error, ValidationError)
    assert error.message == "bad name"
    assert error.status == 422
    assert error.correlation_id == "c-1"
    assert error.details == {"path": "$.name"}
    assert error.error_code == "ORC_001"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, AuthenticationError), (404, NotFoundError), (503, ServiceUnavailableError), (500, ServiceError)],
)
def test_a_body_that_is_not_the_contract_is_classed_by_status(status: int, cls: type[ServiceError]) -> None:
    error = error_from_response(status, b"<html>proxy error</html>")

    assert type(error) is cls
    assert error.status == status


def test_an_unknown_code_keeps_its_code() -> None:
    error = error_from_response(409, body("ORC_999"))

    assert type(error) is ServiceError
    assert error.error_code == "ORC_999"


def test_circuit_open_error_carries_orc_005_and_retry_after() -> None:
    error = CircuitOpenError("sms", 12.5)

    assert isinstance(error, ClientError)
    assert not isinstance(error, ServiceError)
    assert error.code is ErrorCode.UNAVAILABLE
    assert error.status == 503
    assert error.retry_after_s == 12.5
    assert "sms" in str(error)


def test_transport_error_is_a_client_error() -> None:
    assert issubclass(TransportError, ClientError)


def test_every_public_exception_derives_from_client_error() -> None:
    exported = [getattr(breaker_client, name) for name in breaker_client.__all__]
    errors = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, BaseException)]

    assert len(errors) == 14
    assert all(issubclass(error, ClientError) for error in errors)
