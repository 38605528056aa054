"""Prefect flows composed from `tasks`; deployments are declared in `prefect.yaml`."""
