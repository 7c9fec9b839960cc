"""Pulumi entry point: read the stack, build the Deployment, export. Nothing else."""
from components.program import run

run()
