"""Client of the shared circuit-breaker service, for plain code and for asyncio.

with SyncBreakerClient("http://breakers:8080", token=TOKEN) as client:
    sms = client.breaker("sms_agent", fallback=lambda exc, message: outbox.put(message))
    sms.call(send_sms, message)

async with BreakerClient("http://breakers:8080", token=TOKEN) as client:
    sms = client.breaker("sms_agent", retry=RetryPolicy(attempts=4), fallback=None)
    await sms.call(send_sms_async, message)

The `requests` adapter is `breaker_client.requests_adapter.BreakerAdapter` (extra `breaker-client[requests]`).
"""

from breaker_client._breaker import NO_FALLBACK, Breaker
from breaker_client._client import BreakerClient
from breaker_client._correlation import CORRELATION_HEADER, correlation_id, current_correlation_id, use_correlation_id
from breaker_client._errors import (
    AuthenticationError,
    BusinessRuleError,
    CircuitOpenError,
    ClientError,
    ExternalServiceError,
    ExternalTimeoutError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
    WorkflowError,
)
from breaker_client._failure import FailurePolicy, default_failure_status
from breaker_client._queue import ClaimedJob, DrainReport, Enqueued, Nacked, QueueStats, WorkQueue
from breaker_client._retry import RetryPolicy, parse_retry_after
from breaker_client._sync_breaker import SyncBreaker
from breaker_client._sync_client import SyncBreakerClient
from breaker_client._sync_transport import SyncBreakerTransport
from breaker_client._transitions import StateChange
from breaker_client._transport import IDEMPOTENCY_HEADER, IDEMPOTENT_METHODS, BreakerTransport, host_breaker_name
from breaker_client._views import BreakerView
from breaker_client.protocol.catalogue import ErrorCode
from breaker_client.protocol.models import (
    BreakerConfig,
    Decision,
    Outcome,
    RetryConfig,
    Snapshot,
    State,
    Transition,
    WhenUnknown,
)

__version__ = "0.2.0"

__all__ = [
    "CORRELATION_HEADER",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENT_METHODS",
    "NO_FALLBACK",
    "AuthenticationError",
    "Breaker",
    "BreakerClient",
    "BreakerConfig",
    "BreakerTransport",
    "BreakerView",
    "BusinessRuleError",
    "CircuitOpenError",
    "ClaimedJob",
    "ClientError",
    "Decision",
    "DrainReport",
    "Enqueued",
    "ErrorCode",
    "ExternalServiceError",
    "ExternalTimeoutError",
    "FailurePolicy",
    "ForbiddenError",
    "Nacked",
    "NotFoundError",
    "Outcome",
    "PayloadTooLargeError",
    "QueueStats",
    "RetryConfig",
    "RetryPolicy",
    "ServiceError",
    "ServiceUnavailableError",
    "Snapshot",
    "State",
    "StateChange",
    "SyncBreaker",
    "SyncBreakerClient",
    "SyncBreakerTransport",
    "Transition",
    "TransportError",
    "ValidationError",
    "WhenUnknown",
    "WorkQueue",
    "WorkflowError",
    "__version__",
    "correlation_id",
    "current_correlation_id",
    "default_failure_status",
    "host_breaker_name",
    "parse_retry_after",
    "use_correlation_id",
]
