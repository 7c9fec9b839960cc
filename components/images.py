"""The container image on every node, made present and checked before the
cluster gate, so that a node with another image (or another engine or CANN
version in it) stops the rollout before any container starts.

    <node>-docker        the node's docker provider (its containers use it too)
    <node>-image         `docker load -i` from container.image_tar, or a pull
                         (with container.image_url the master fetches the tar)
    <node>-image-copy    container.image_url, every node but the master: the
                         master's tar copied over the cluster network (rsync,
                         the stack's SSH key on stdin), before that node's load
    <node>-image-check   image id, engine and CANN versions (a node check: at every
                         preview and up, read-only, no resource)

The cross-node comparison (`ascend_inference.images.check_images`) is part of
what the `cluster-verified` gate records, so the containers, which wait for
the gate, never start on images that differ; the verified image id is also a
container label, so an image that changed under the same tag redoes it."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from ascend_inference.facts import raise_first
from ascend_inference.images import ImageExpectations, ImageFacts, check_images
from components.common import TOKEN, clearly, copy_from_master, from_checks, node_check, node_checks_of, remote_step
from components.node import AscendNode


@dataclass(frozen=True)
class PreparedImage:
    """What a node's container takes from the image steps."""

    provider: docker.Provider
    # The load step or the RemoteImage: the container waits for it.
    image: remote.Command | docker.RemoteImage
    # What the container's `image` input is (the RemoteImage's id carries the pull).
    image_ref: pulumi.Input[str]


@dataclass(frozen=True)
class NodeImageArgs:
    node: AscendNode
    # `ssh://user@host:port` and ssh options for the per-node docker provider.
    docker_host: str
    ssh_opts: list[str]
    # Runbook 001: `docker load -i <tar>` by this script instead of a pull.
    load_script: str | None
    check_script: str
    # container.image_url, a node other than the master: what the master's
    # image step printed -> this node's copy of the master's tar.
    copy_script: Callable[[dict], str] | None = None


@dataclass(frozen=True)
class ContainerImagesArgs:
    image: str
    nodes: list[NodeImageArgs]
    expect: ImageExpectations
    # The key the tar copies load into their ssh-agent (stdin, a secret).
    ssh_private_key: pulumi.Input[str] | None = None


class ContainerImages(pulumi.ComponentResource):
    """Per node: the docker provider, the image (loaded or pulled) and the
    image check; `verified` is every node's image facts after the cross-node
    check ({node: {image, id, engine_version, cann_version}}), raising the
    node's one-line error on a contradiction."""

    def __init__(self, name: str, args: ContainerImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:image:ContainerImages", name, None, opts)
        self.prepared: list[PreparedImage] = []
        self.checks: list[pulumi.Output[str]] = []
        self.copies: list[remote.Command] = []
        master_image: remote.Command | None = None
        for n in args.nodes:
            node = n.node
            label = node.node.name
            provider = docker.Provider(f"{label}-docker", host=n.docker_host, ssh_opts=n.ssh_opts,
                                       opts=pulumi.ResourceOptions(parent=self))
            image: remote.Command | docker.RemoteImage
            image_ref: pulumi.Input[str]
            if n.load_script is not None:
                after: list[pulumi.Resource] = [node.preflight]
                triggers = None
                if n.copy_script is not None:
                    assert master_image is not None, "the master's image step comes first"
                    copy = copy_from_master(
                        f"{label}-image-copy", node.connection, master_image.stdout.apply(_copy_for(n.copy_script)),
                        after=[node.preflight, master_image], ssh_private_key=args.ssh_private_key, parent=self)
                    self.copies.append(copy)
                    after.append(copy)
                    # A new copy is loaded again (the load skips an image already there).
                    triggers = [copy.id]
                # The image (and its tar) stays on the node on destroy.
                image = remote_step(f"{label}-image", connection=node.connection, create=n.load_script,
                                    parent=self, depends_on=after, timeout="60m", retain_on_delete=True,
                                    triggers=triggers)
                if master_image is None:
                    master_image = image
                image_ref = args.image
            else:
                image = docker.RemoteImage(
                    f"{label}-image", name=args.image, keep_locally=True,
                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[node.preflight],
                                                custom_timeouts=pulumi.CustomTimeouts(create="60m")))
                # The image id input carries the dependency.
                image_ref = image.image_id
            self.prepared.append(PreparedImage(provider=provider, image=image, image_ref=image_ref))
            # Every preview and up: an image re-tagged on one node after a good
            # rollout is caught by the next one (what follows is redone only
            # when the facts it prints change).
            self.checks.append(node_check(f"{label}-image-check", node=label, connection=node.connection,
                                          script=n.check_script, parent=self, depends_on=[image]))

        def verified(outputs: list[str]) -> dict:
            found = [ImageFacts.from_output(o) for o in outputs]
            raise_first(check_images(found, args.expect))
            return {f.node: f.to_json() for f in found}

        self.verified = from_checks(pulumi.Output.all(*self.checks).apply(clearly(verified)),
                                    [name for check in self.checks for name in node_checks_of(check)])
        self.register_outputs({"images": self.verified})


def _copy_for(render: Callable[[dict], str]) -> Callable[[str], str]:
    """The master's image step's last line (JSON) -> the copy script."""
    return clearly(lambda stdout: render(json.loads(stdout.strip().splitlines()[-1])))
