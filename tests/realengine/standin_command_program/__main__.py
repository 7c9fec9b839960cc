"""remote.Command resources as the stack's config lists them (`commands`),
each with a connection to the test's sshd; the client key is a secret config
value. Exports every command's id, stdout and stderr."""
import pulumi
from pulumi_command import remote

config = pulumi.Config()
key = config.require_secret("privateKey")


def connection(spec: dict) -> remote.ConnectionArgs:
    proxy = spec.get("proxy")
    return remote.ConnectionArgs(
        host=spec["host"], port=spec["port"], user=spec.get("user"), private_key=key,
        host_key=spec.get("hostKey"), dial_error_limit=spec.get("dialErrorLimit"),
        per_dial_timeout=spec.get("perDialTimeout"),
        proxy=remote.ProxyConnectionArgs(host=proxy["host"], port=proxy["port"], private_key=key,
                                         host_key=proxy.get("hostKey"),
                                         dial_error_limit=proxy.get("dialErrorLimit")) if proxy else None)


for spec in config.require_object("commands"):
    command = remote.Command(
        spec["name"], connection=connection(spec["connection"]),
        create=spec.get("create"), update=spec.get("update"), delete=spec.get("delete"),
        triggers=spec.get("triggers"), stdin=spec.get("stdin"), environment=spec.get("environment"),
        logging=spec.get("logging"), add_previous_output_in_env=spec.get("addPreviousOutputInEnv"),
        opts=pulumi.ResourceOptions(delete_before_replace=spec.get("deleteBeforeReplace", True)))
    pulumi.export(spec["name"], {"id": command.id, "stdout": command.stdout, "stderr": command.stderr})
