"""Prefect tasks: thin wrappers over the `medklip` library and the job launchers."""
