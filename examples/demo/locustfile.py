"""Locust callers of the orchestrator: `python -m examples.demo --load locust` runs it headless during the incident.

Each user sends a tenant message about twice a second with its own correlation id; anything but a 200 is a
failure that reached a caller (a degraded answer is a 200).
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Final

from locust import FastHttpUser, constant_throughput, task

TENANTS: Final = 20
PER_USER_RATE: Final = float(os.environ.get("DEMO_LOCUST_USER_RATE", "2"))
_counter = itertools.count(1)


class TenantMessages(FastHttpUser):
    wait_time = constant_throughput(PER_USER_RATE)

    @task
    def incoming_message(self) -> None:
        n = next(_counter)
        self.client.post(
            "/messages",
            json={"tenant_id": f"t-{n % TENANTS + 1}", "text": "Can I get a payment plan?"},
            headers={"X-Correlation-ID": f"locust-{uuid.uuid4().hex[:16]}"},
            name="POST /messages",
        )
