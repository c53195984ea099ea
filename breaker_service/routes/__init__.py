"""HTTP routes of the v1 API, one module per area; `breaker_service.app` lists them."""
