"""What this program's providers do on a change that the registration request
does not show: which input changes make the provider replace a resource
rather than update it in place, and which inputs decide a resource's id.

No provider runs offline, so these rules are kept by hand, one per resource
type; each says which provider behaviour it mirrors and for which provider
version (the versions `versions.py` pins). A type not listed here is replaced
only on what the request's own `replace_on_changes` names."""

from __future__ import annotations

from typing import Any

from ascend_inference.gpustack_api import MODEL_REPLACE_FIELDS, RESOURCE_REPLACE_FIELDS
from ascendctl.preview.graph import ResourceRecord

COMMAND = "command:remote:Command"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"

# pulumi-command 1.2.1, remote.Command: the provider updates a command in
# place on any input change (it runs `update`, or nothing); it replaces only
# on `triggers`, which its Python SDK declares in the request itself
# (`replace_on_changes=["triggers[*]"]` in `Command._internal_init`), so no
# entry is needed here. The program puts the connection identity there.
#
# pulumi-docker 4.11.2, RemoteImage (the bridged terraform-provider-docker's
# `docker_image`): a new image `name` is a new image, pulled and replaced
# (`name` is ForceNew in that schema; `keepLocally`, the program's other
# input, is not).
#
# The program's one dynamic resource, GPUStack's model deployment
# (components/gpustack_model.py): its `diff` is `gpustack_api.plan_change`,
# which replaces on these and updates on any other input.
DYNAMIC = "pulumi-python:dynamic:Resource"
PROVIDER_REPLACES: dict[str, set[str]] = {
    REMOTE_IMAGE: {"name"},
    DYNAMIC: {*RESOURCE_REPLACE_FIELDS, *(f"model.{key}" for key in MODEL_REPLACE_FIELDS)},
}

# pulumi-docker 4.11.2, Container (the bridged terraform-provider-docker's
# `docker_container`): recreates the container on any input change except
# these, which it applies to the running container (restart policy) or
# which only change how it starts, waits for or removes it. Read in
# kreuzwerker/terraform-provider-docker's `docker_container` schema (its main
# branch, not the exact release 4.11.2 bundles): these fields have no
# ForceNew there, and every other input this program sets (image, name,
# command, entrypoints, envs, labels, devices, volumes, networkMode, ipcMode,
# shmSize, privileged, tty, stdinOpen) has.
DOCKER_CONTAINER_IN_PLACE = {"restart", "maxRetryCount", "mustRun", "wait", "waitTimeout", "start", "attach",
                             "logs", "rm", "destroyGraceSeconds"}


def deletes_first(record: ResourceRecord) -> bool:
    """Whether the engine replaces `record` delete-before-replace: its own
    option, or the provider's answer (pulumi-docker 4.11.2
    `provider/resources.go`: docker_container `DeleteBeforeReplace: true`;
    docs/standin-plugins.md D8). An explicit `delete_before_replace=False` is
    not told apart from an unset one in the request, so the container's is
    taken as the provider's."""
    return bool(record.options.get("delete_before_replace")) or record.type == CONTAINER


def replace_keys(record: ResourceRecord) -> set[str]:
    """Input path patterns whose change makes the provider replace ``record``."""
    if record.type == CONTAINER:
        keys = set(record.inputs) - DOCKER_CONTAINER_IN_PLACE
        return keys | {f"{key}.**" for key in keys} | {f"{key}[*]" for key in keys} | {f"{key}[*].**" for key in keys}
    return PROVIDER_REPLACES.get(record.type, set())


def identity_inputs(type_token: str, inputs: dict[str, Any]) -> Any:
    """The inputs whose change gives a resource a new id. The providers keep
    the id on an in-place update and mint one only when they create (a new
    resource, or a replacement): for a command that is its `triggers`, for a
    container every input but the ones it updates in place."""
    if type_token == COMMAND:
        return inputs.get("triggers")
    if type_token == CONTAINER:
        return {k: v for k, v in inputs.items() if k not in DOCKER_CONTAINER_IN_PLACE}
    return inputs
