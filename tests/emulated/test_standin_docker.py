"""The stand-in `pulumi-resource-docker` (emulator/plugins/docker.py) under
the REAL `pulumi` CLI, on an emulated node's dockerd over ssh://.

A small program (standin_docker_program/) makes a docker Provider, a
RemoteImage and a Container the way components/cluster.py does. Shown, with
`pulumi up` / `preview --diff` / `refresh` / `destroy`: a container name
already taken fails with the daemon's conflict text; a create; a `restart`
change is an update in place (`docker update`, the same container); a label
change replaces the container (the old one removed first); a new image name
shows the container replaced in the preview (its image id is unknown there)
and keeps it in the up (the same id); `refresh` drops a container removed by
hand and the next `up` makes it again; `refresh` of a
stopped container that must run removes it and drops it; `destroy` removes
the container and keeps the image (keep_locally).

The sandbox mapping (ASCEMU_DOCKER_SANDBOX: the host's mounts, capabilities
for `--privileged`, the runtime image for a "pull") is the emulator's, not a
provider rule: docs/standin-plugins.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import image as imagelib
from tests.emulated.conftest import node_ssh, own_cluster
from tests.realengine.conftest import program_venv, toolchain_bin  # noqa: F401  (session fixtures)
from tests.realengine.projects import Project, program_copy

pytestmark = pytest.mark.emulated

PROGRAM = Path(__file__).parent / "standin_docker_program"
NAME = "ptplug-standin"
IMAGE = "ascend-inference/standin-test:1"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(1, "standin-docker", prefix="ptplug", subnet=229) as c:
        yield c


@pytest.fixture
def project(tmp_path, toolchain_bin, program_venv, cluster) -> Project:  # noqa: F811
    sandbox = tmp_path / "sandbox.json"
    sandbox.write_text(json.dumps({
        "extra_mounts": [m.docker_arg() for m in imagelib.base_mounts()],
        "privileged_caps": imagelib.privileged_substitute()["docker_run_args"],
        "runtime_image": imagelib.IMAGE}))
    project = program_copy(tmp_path, PROGRAM, "standin-docker", toolchain_bin, program_venv,
                           extra_env={"ASCEMU_DOCKER_SANDBOX": str(sandbox)})
    project.set_config("host", cluster.nodes[0].docker_host)
    project.set_config("sshOpts", cluster.ssh_opts())
    project.set_config("image", IMAGE)
    return project


def spec(**changes) -> dict:
    return {"name": NAME, "restart": "no", "labels": {"ascend-inference/stack": "standin", "generation": "1"},
            "command": ["sleep", "infinity"], "privileged": True, "shmSize": 64, **changes}


def inspect(cluster) -> dict | None:
    done = cluster.ssh("node0", f"docker container inspect {NAME}", timeout=120)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def state_types(project: Project) -> list[str]:
    exported = json.loads(project.ok("stack", "export"))
    return [r["type"] for r in exported["deployment"].get("resources") or []]


def test_container_lifecycle(project, cluster):
    # A foreign container holds the name: the create fails with the daemon's conflict text.
    node_ssh(cluster, "node0", f"docker create --name {NAME} {imagelib.IMAGE} true")
    project.set_config("container", spec())
    taken = project.fails("up", "--yes")
    assert f'Unable to create container: Error response from daemon: Conflict. The container name "/{NAME}" ' \
           "is already in use" in taken, taken
    node_ssh(cluster, "node0", f"docker rm {NAME}")

    project.ok("up", "--yes")
    first = inspect(cluster)
    assert first is not None and first["State"]["Running"]
    assert project.outputs()["container_id"] == first["Id"]
    assert first["Config"]["Labels"]["generation"] == "1" and first["HostConfig"]["ShmSize"] == 64 * 2**20
    project.ok("preview", "--expect-no-changes")

    # `restart` is updated in place: the same container, its policy changed.
    project.set_config("container", spec(restart="unless-stopped"))
    diff = project.ok("preview", "--diff")
    assert "~ 1 to update" in diff and "replace" not in diff.split("Resources:")[-1], diff
    project.ok("up", "--yes")
    updated = inspect(cluster)
    assert updated is not None and updated["Id"] == first["Id"]
    assert updated["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    # A label is ForceNew: a replacement, the old container removed before the new one is made.
    project.set_config("container", spec(restart="unless-stopped", labels={"ascend-inference/stack": "standin",
                                                                           "generation": "2"}))
    diff = project.ok("preview", "--diff")
    assert "+-1 to replace" in diff, diff
    project.ok("up", "--yes")
    replaced = inspect(cluster)
    assert replaced is not None and replaced["Id"] != first["Id"] and replaced["State"]["Running"]
    assert replaced["Config"]["Labels"]["generation"] == "2"
    assert project.outputs()["container_id"] == replaced["Id"]

    # Another image name replaces the RemoteImage, so in the preview the container's `image` (the
    # image id) is unknown, and an unknown ForceNew value is a replacement; in the up the sandbox's
    # "pull" gives the same image id, the container's inputs are the same, and it stays.
    project.set_config("image", IMAGE + "-renamed")
    diff = project.ok("preview", "--diff")
    assert "+-2 to replace" in diff, diff
    project.ok("up", "--yes")
    kept = inspect(cluster)
    assert kept is not None and kept["Id"] == replaced["Id"]

    # Removed by hand: refresh drops it from the state, the next up makes it again.
    node_ssh(cluster, "node0", f"docker rm -f {NAME}")
    project.ok("refresh", "--yes")
    assert "docker:index/container:Container" not in state_types(project)
    assert "+ 1 to create" in project.ok("preview", "--diff")
    project.ok("up", "--yes")
    again = inspect(cluster)
    assert again is not None and again["Id"] != replaced["Id"] and again["State"]["Running"]

    # Stopped (a node reboot with a restart policy that does not bring it back): must_run, so
    # refresh removes the container and drops it, as terraform-provider-docker's read does.
    node_ssh(cluster, "node0", f"docker stop --time 0 {NAME}")
    project.ok("refresh", "--yes")
    assert inspect(cluster) is None
    assert "docker:index/container:Container" not in state_types(project)
    project.ok("up", "--yes")
    back = inspect(cluster)
    assert back is not None and back["State"]["Running"]

    # destroy: the container goes, the image stays (keep_locally).
    project.ok("destroy", "--yes")
    assert inspect(cluster) is None
    node_ssh(cluster, "node0", f"docker image inspect {IMAGE} >/dev/null")
