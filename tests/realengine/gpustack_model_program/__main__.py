"""A Pulumi program holding only the GPUStack model resource (the program's
`gpustack-model-deploy`), for the real-engine tier: the model body, server URL
and worker list come from the stack's config, the admin password from a
secret config value."""
import pulumi

from components.gpustack_model import GpustackModel, GpustackModelArgs

config = pulumi.Config()
model = GpustackModel("gpustack-model-deploy", GpustackModelArgs(
    server_url=config.require("serverUrl"),
    password=config.require_secret("adminPassword"),
    model=config.require_object("model"),
    workers=config.get_object("workers") or [],
    worker_timeout_s=int(config.get("workerTimeoutS") or 60),
    ready_timeout_s=int(config.get("readyTimeoutS") or 0),
))
pulumi.export("model_id", model.model_id)
