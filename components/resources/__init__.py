"""Pulumi component resources (the only layer that imports Pulumi, with
`components.graph`). Each is thin over the pure core: it renders with
`components.render` and runs the result with pulumi-command / pulumi-docker."""
from components.resources.deployment import Deployment, DeploymentArgs

__all__ = ["Deployment", "DeploymentArgs"]
