"""The ORC error catalogue: one code per kind of failure, with its HTTP status."""

from __future__ import annotations

import enum
from typing import Final


class ErrorCode(enum.StrEnum):
    """Error codes of the v1 contract."""

    VALIDATION = "ORC_001"
    BUSINESS_RULE = "ORC_002"
    WORKFLOW = "ORC_003"
    EXTERNAL_ERROR = "ORC_004"
    UNAVAILABLE = "ORC_005"
    EXTERNAL_TIMEOUT = "ORC_006"
    UNAUTHENTICATED = "ORC_007"
    FORBIDDEN = "ORC_008"
    NOT_FOUND = "ORC_009"
    TOO_LARGE = "ORC_010"


STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.VALIDATION: 422,
    ErrorCode.BUSINESS_RULE: 409,
    ErrorCode.WORKFLOW: 409,
    ErrorCode.EXTERNAL_ERROR: 502,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.EXTERNAL_TIMEOUT: 504,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
}
"""Default status per code; ORC_001 answers 400 for a body that is not JSON at all."""
