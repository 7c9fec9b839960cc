"""The Pulumi program: component resources for each node, the peer checks,
the weights, the rank table, the containers, the Ray cluster and the serving
process. Each component is thin over the pure core (`ascend_inference`): it
runs what the core renders with pulumi-command and pulumi-docker."""
from components.deployment import Deployment, DeploymentArgs

__all__ = ["Deployment", "DeploymentArgs"]
