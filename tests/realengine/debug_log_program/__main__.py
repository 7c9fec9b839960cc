"""Component resources and debug messages, for the real-engine tier: with
`installDebugLog` true the program's stand-in for `pulumi.log.debug`
(components/debug_log.py) sends them, else the SDK's own function."""
import pulumi

from components import debug_log

config = pulumi.Config()
installed = debug_log.install() if config.get_bool("installDebugLog") else False
count = int(config.get("count") or 20)
for index in range(count):
    pulumi.ComponentResource("test:index:Part", f"part-{index}")
    pulumi.log.debug(f"marker {index} of {count}")
pulumi.export("installed", installed)
