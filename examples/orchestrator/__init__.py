"""The seed's orchestrator: five dependencies, each behind a shared breaker with the seed's retry and fallback.

    python -m examples.orchestrator      # settings from the environment, see settings.py

`POST /messages {"tenant_id", "text"}` handles a tenant's incoming SMS: tenant data from Collections Monitor, the
conversation from Supabase, a reply from OpenAI, the reply sent by the SMS Agent, the manager told through the
Notification Service, the exchange written to Supabase. Every step has the seed's fallback, so the answer is always
200; `degraded` lists the dependencies whose fallback answered. `GET /stats` counts calls and fallbacks.
"""
