"""One container spec, two renderings: pulumi_docker's arguments and the
`docker run` line. `render` writes the line a user may run by hand and
`pulumi up` creates the Container: read back through `spec_from_pulumi_inputs`,
the two must be the same."""
from __future__ import annotations

import pytest

from ascend_inference.container import ContainerSpec, Mount, spec_from_pulumi_inputs
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack, stack_names

pytestmark = pytest.mark.pure


def camel(args: dict) -> dict:
    """pulumi_docker's keyword arguments as the engine receives them."""
    def key(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(w.title() for w in rest)

    def convert(value):
        if isinstance(value, dict):
            return {key(k): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return convert(args)


@pytest.mark.parametrize("stack", stack_names())
def test_pulumi_args_round_trip_to_the_same_docker_run_line(stack):
    loaded = load_stack(stack)
    for index in range(len(loaded.spec.nodes)):
        spec = render_node(loaded, index).container
        inputs = camel(spec.pulumi_docker_args())
        # The secret env entries as components/cluster.py appends them (NAME=<value>),
        # which the container gets as plain `-e NAME=<value>`.
        values = {key: f"<{key}>" for _, key in spec.secret_env}
        inputs["envs"] = [*inputs.get("envs", []), *[f"{name}={values[key]}" for name, key in spec.secret_env]]
        back = spec_from_pulumi_inputs(inputs)
        assert back.docker_run_argv() == spec.docker_run_argv(reveal=values)


def test_shm_size_is_given_to_pulumi_docker_in_megabytes():
    spec = ContainerSpec(name="c", image="i", devices=(), mounts=(), shm_size="250g", privileged=False, ipc_host=False)
    assert spec.pulumi_docker_args()["shm_size"] == 250 * 1024
    assert ContainerSpec(name="c", image="i", devices=(), mounts=(), shm_size="1g", privileged=False,
                         ipc_host=False).shm_size_mb() == 1024


def test_named_volume_and_read_only_mounts():
    spec = ContainerSpec(name="c", image="i", devices=("/dev/davinci0",),
                         mounts=(Mount("gpustack-data", "/var/lib/gpustack"),
                                 Mount("/etc/hccn.conf", "/etc/hccn.conf", True)),
                         shm_size="1g", privileged=False, ipc_host=True)
    volumes = spec.pulumi_docker_args()["volumes"]
    assert {"volume_name": "gpustack-data", "container_path": "/var/lib/gpustack", "read_only": False} in volumes
    assert {"host_path": "/etc/hccn.conf", "container_path": "/etc/hccn.conf", "read_only": True} in volumes
    assert "-v /etc/hccn.conf:/etc/hccn.conf:ro" in spec.docker_run_line()


def test_secret_args_stay_a_variable_in_the_rendered_line():
    spec = ContainerSpec(name="c", image="i", devices=(), mounts=(), shm_size="1g", privileged=False, ipc_host=False,
                         command=("--token", "$GPUSTACK_TOKEN"), secret_args={"$GPUSTACK_TOKEN": "GPUSTACK_TOKEN"})
    assert spec.docker_run_line().endswith('--token "$GPUSTACK_TOKEN"')
    assert spec.docker_run_argv(reveal={"GPUSTACK_TOKEN": "s3cret"})[-1] == "s3cret"


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-mindie", "dp2-tp8-ep16-vllm-ascend"])
def test_the_stack_directory_is_mounted_read_only_and_only_its_run_directory_writable(stack):
    """The container reads the env file and engine files the program installed, never changes
    them; it writes the serving process's pid and log under run/. Found by mutation testing:
    the stack directory's `read_only=True` -> `False` passed every test."""
    loaded = load_stack(stack)
    directory = f"{loaded.spec.paths.remote_dir}/{loaded.name}"
    mounts = render_node(loaded, 0).container.mounts
    assert Mount(directory, directory, read_only=True) in mounts
    assert Mount(f"{directory}/run", f"{directory}/run", read_only=False) in mounts
    assert Mount(directory, directory, read_only=False) not in mounts
