"""Five fake dependencies of the seed's orchestrator in one small server, their health switched at run time.

    python -m examples.fake_dependencies          # FAKES_HOST (127.0.0.1), FAKES_PORT (8090)

`/{dependency}/...` is the dependency (collections_monitor, sms_agent, notification_service, supabase, openai);
`POST /_admin/{dependency}/mode` with `{"mode": "healthy" | "failing" | "slow" | "rate_limited", ...}` switches it;
`GET /_admin/stats` counts the hits by dependency and by the mode they met (see `models.py`).
"""
