"""`make demo`: the seed's orchestrator, its five fake dependencies and the breaker service, through an incident.

    python -m examples.demo [--seconds N] [--load builtin|locust]      # DEMO_SECONDS, default 60

stack.py starts the processes (Redis when `redis-server` is installed, two service replicas, the fakes, the
orchestrator), load.py and locustfile.py drive the orchestrator, incident.py runs the scripted incident (phases
that wait on observed states, never on fixed sleeps), observe.py reads what happened, summary.py judges it.
The processes are the tests' managed processes (tests/fixtures/), so the demo and tests/test_demo.py run alike.
"""
