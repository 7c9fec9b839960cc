"""A docker Provider over ssh://, a RemoteImage (kept on destroy) and a
Container from its image id, shaped as components/cluster.py
InferenceContainer makes them (must_run, no wait, host network, labels,
devices, volumes, delete before replace), from the stack's config."""
import pulumi
import pulumi_docker as docker

config = pulumi.Config()
spec = config.require_object("container")
provider = docker.Provider("node-docker", host=config.require("host"), ssh_opts=config.require_object("sshOpts"))
image = docker.RemoteImage("image", name=config.require("image"), keep_locally=True,
                           opts=pulumi.ResourceOptions(provider=provider))
container = docker.Container(
    "container", name=spec["name"], image=image.image_id, restart=spec.get("restart"),
    labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in spec.get("labels", {}).items()],
    envs=spec.get("envs"), command=spec.get("command"), entrypoints=spec.get("entrypoints"),
    volumes=[docker.ContainerVolumeArgs(**v) for v in spec.get("volumes", [])],
    devices=[docker.ContainerDeviceArgs(**d) for d in spec.get("devices", [])],
    privileged=spec.get("privileged"), network_mode="host", ipc_mode="host", shm_size=spec.get("shmSize"),
    tty=True, stdin_open=True, must_run=True, wait=False,
    opts=pulumi.ResourceOptions(provider=provider, delete_before_replace=True))
pulumi.export("container_id", container.id)
pulumi.export("image_id", image.image_id)
