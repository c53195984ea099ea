"""Fleets of client processes for the fleet tests and the client benchmark (see `fleet.py`)."""
