"""The program's own remote steps (components/common.py `remote_step`), as the
stack's config lists them (`steps`), each to the test's sshd on 127.0.0.1
(`port`) with the secret client key. A step's `data` names a secret config
value it takes on stdin, as the program's copies, hub download and smoke
tests take a key, a token or a password. Exports every step's stdout."""
import pulumi
from pulumi_command import remote

from components.common import NodeConnection, remote_step

config = pulumi.Config()
port = config.require_int("port")
connection = NodeConnection(
    remote.ConnectionArgs(host="127.0.0.1", port=port, private_key=config.require_secret("privateKey")),
    f"ssh://root@127.0.0.1:{port}")
steps = pulumi.ComponentResource("remote-step:test:Steps", "steps")
for spec in config.require_object("steps"):
    step = remote_step(spec["name"], connection=connection, parent=steps, create=spec["create"],
                       delete=spec.get("delete"),
                       stdin=config.require_secret(spec["data"]) if spec.get("data") else None)
    pulumi.export(spec["name"], step.stdout)
