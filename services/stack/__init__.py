"""Runs the whole system on one machine: infrastructure, a model, the services, traffic."""
