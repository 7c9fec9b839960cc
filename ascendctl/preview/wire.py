"""Decoding a resource-registration request from its protobuf wire form into
plain Python: property values (the SDK's special signatures for secrets,
resource references, assets, archives, output values and unknowns) and the
resource options the request carries. The signatures are the Pulumi wire
protocol's, the same constants as the SDK's `pulumi.runtime.rpc` (a test
compares them with the installed SDK's)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from ascendctl.preview.values import UNKNOWN, ResourceReference, Secret

# The special signatures of the Pulumi property wire format.
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_OUTPUT_VALUE_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def from_wire(value: Any) -> Any:
    if isinstance(value, struct_pb2.Struct):
        fields = value.fields
        if _SIG_KEY in fields:
            sig = fields[_SIG_KEY].string_value
            if sig == _SECRET_SIG:
                return Secret(from_wire(value["value"]) if "value" in fields else None)
            if sig == _RESOURCE_SIG:
                rid = value["id"] if "id" in fields else None
                return ResourceReference(str(value["urn"]), None if rid in (None, "") else from_wire(rid))
            if sig == _ASSET_SIG:
                return {"$asset": {k: from_wire(v) for k, v in value.items() if k != _SIG_KEY}}
            if sig == _ARCHIVE_SIG:
                return {"$archive": {k: from_wire(v) for k, v in value.items() if k != _SIG_KEY}}
            if sig == _OUTPUT_VALUE_SIG:
                inner = from_wire(value["value"]) if "value" in fields else UNKNOWN
                if "secret" in fields and value["secret"]:
                    inner = Secret(inner)
                return inner
        # Struct is a map: its iteration order is not the program's; sort for stable output.
        return {k: from_wire(value[k]) for k in sorted(fields.keys())}
    if isinstance(value, struct_pb2.ListValue):
        return [from_wire(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if value == _UNKNOWN_WIRE:
        return UNKNOWN
    return value


def default_options() -> dict[str, Any]:
    return {
        "protect": False,
        "delete_before_replace": False,
        "retain_on_delete": False,
        "deleted_with": None,
        "replace_on_changes": [],
        "ignore_changes": [],
        "custom_timeouts": None,
        "aliases": [],
        "additional_secret_outputs": [],
        "replace_with": [],
        "hide_diffs": [],
        "import_id": None,
        "version": None,
    }


def options_of(request: Any) -> dict[str, Any]:
    ct = request.customTimeouts if request.HasField("customTimeouts") else None
    timeouts = None
    if ct is not None and (ct.create or ct.update or ct.delete):
        timeouts = {k: getattr(ct, k) for k in ("create", "update", "delete") if getattr(ct, k)}
    aliases = []
    for a in request.aliases:
        if a.urn:
            aliases.append(a.urn)
        else:
            aliases.append(json_format.MessageToDict(a.spec))
    aliases.extend(request.aliasURNs)
    return {
        "protect": bool(request.protect) if request.HasField("protect") else False,
        "delete_before_replace": bool(request.deleteBeforeReplace),
        "retain_on_delete": bool(request.retainOnDelete) if request.HasField("retainOnDelete") else False,
        "deleted_with": request.deletedWith or None,
        "replace_on_changes": list(request.replaceOnChanges),
        "ignore_changes": list(request.ignoreChanges),
        "custom_timeouts": timeouts,
        "aliases": aliases,
        "additional_secret_outputs": list(request.additionalSecretOutputs),
        "replace_with": list(request.replace_with),
        "hide_diffs": list(request.hideDiffs),
        "import_id": request.importId or None,
        "version": request.version or None,
    }

