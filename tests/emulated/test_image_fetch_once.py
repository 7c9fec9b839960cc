"""The image tar fetched once on the emulated cluster: with
`container.image_url` the master downloads the tar from an HTTP server on
the cluster's bridge (its requests are counted), node1 copies it from the
master over the cluster network (rsync over the nodes' real sshd, the
stack's SSH key on stdin), both load it into their real dockerd and hold the
same image id; a stale tar of another image at node1's path is replaced by
the copy; a second `up` fetches, copies and loads nothing."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading

import pytest

from ascend_inference.stackfile import load_stack
from emulator import image as imagelib
from emulator import network
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-mindie"
TAR = "/data/images/fetch-once/mindie.tar"
IMAGE_STEPS = {"node0-image", "node1-image-copy", "node1-image"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "image-fetch-once", prefix="ptifo", subnet=232) as c:
        yield c


@pytest.fixture
def tar_server(cluster, tmp_path):
    """The stack's image as a tar, served over HTTP from the host on the
    cluster's bridge; every GET is recorded with its Range header and status."""
    image = load_stack(STACK).spec.container.image
    root = tmp_path / "served"
    archive = imagelib.build_image(root / "mindie.tar", image)
    requests: list[tuple[str, str | None, int]] = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            requests.append((self.path, self.headers.get("Range"), int(code)))

    handler = functools.partial(Counting, directory=str(root))
    server = http.server.ThreadingHTTPServer((network.bridge_address(cluster.subnet), 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield (f"http://{server.server_address[0]}:{server.server_address[1]}/mindie.tar",
               hashlib.sha256(archive.read_bytes()).hexdigest(), requests)
    finally:
        server.shutdown()


def stdout_of(rollout: PulumiRollout, name: str) -> dict:
    """The JSON line an image step or copy (a resource) printed last, from the stack's state."""
    return json.loads(rollout.outputs(name)["stdout"].strip().splitlines()[-1])


def test_the_master_fetches_once_and_node1_copies_from_it(cluster, tmp_path, tar_server):
    url, sha, requests = tar_server
    rollout = PulumiRollout(cluster, STACK, tmp_path / "pulumi", log=print)
    image = rollout.base.spec.container.image
    for node in cluster.nodes:
        node_ssh(cluster, node.name, f"docker rmi {image} >/dev/null 2>&1 || true; rm -rf {TAR.rsplit('/', 1)[0]}")
    # A stale tar of another image where node1's copy goes: the copy replaces it.
    node_ssh(cluster, "node1", f"mkdir -p /data/images/fetch-once && head -c 4096 /dev/urandom > {TAR}")
    changes = [f"container.image_tar={TAR}", f"container.image_url={url}", f"container.image_sha256={sha}"]
    try:
        report = rollout.up(changes)
        assert report.error is None, report.error
        # One download, of the whole file, by the master.
        assert requests == [("/mindie.tar", None, 200)], requests
        assert IMAGE_STEPS <= set(report.did("create"))
        assert "node0-image-copy" not in {a.resource for a in report.actions}
        assert stdout_of(rollout, "node1-image-copy") == {
            "node": "node1", "copied": True, "copied_from": "node0",
            "bytes": stdout_of(rollout, "node0-image")["tar_bytes"]}
        for node in cluster.nodes:
            assert node_ssh(cluster, node.name, f"sha256sum {TAR}").split()[0] == sha
            assert node_ssh(cluster, node.name, f"ls {TAR}.part 2>/dev/null || true").strip() == ""
        ids = {n.name: node_ssh(cluster, n.name, f"docker image inspect -f '{{{{.Id}}}}' {image}").strip()
               for n in cluster.nodes}
        assert ids["node0"] == ids["node1"] and ids["node0"].startswith("sha256:")
        # The image checks are invokes: what they verified is the stack output `images`.
        images = json.loads(rollout.ok("stack", "output", "images", "--json"))
        assert images["node1"]["id"] == ids["node1"]
        assert "smoke-test-request" in report.did("create")
        # The key reached node1 on stdin only, into an ssh-agent that ended with the copy: no
        # agent nor its socket is left, and no file in the places the steps write holds it (the
        # tar's directory, the rendered files, the scripts' scratch dir; its /tmp is the host's,
        # where the emulator keeps the key itself, and mktemp's files there go at the copy's exit).
        # (Line 1 of an OpenSSH key is a header every ed25519 key shares; line 2 is this key's.)
        key_line = cluster.ssh_key_path.read_text().splitlines()[2]
        written = f"{TAR.rsplit('/', 1)[0]} /etc/ascend-inference /var/tmp"
        found = node_ssh(cluster, "node1", f"grep -rlF -- {key_line} {written} 2>/dev/null; "
                                           "ls -d /tmp/ssh-* 2>/dev/null; pgrep -x ssh-agent; true")
        assert found.strip() == "", found

        again = rollout.up(changes)
        assert again.error is None, again.error
        assert requests == [("/mindie.tar", None, 200)], requests
        kinds = {a.resource: a.kind for a in again.actions}
        assert {step: kinds[step] for step in IMAGE_STEPS} == {step: "same" for step in IMAGE_STEPS}
    finally:
        rollout.destroy()
    # The undo keeps the tar and the loaded image on every node.
    for node in cluster.nodes:
        assert node_ssh(cluster, node.name, f"sha256sum {TAR}").split()[0] == sha
        node_ssh(cluster, node.name, f"docker image inspect {image} >/dev/null")
        node_ssh(cluster, node.name, "rm -rf /data/images/fetch-once")
