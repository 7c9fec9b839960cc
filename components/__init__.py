"""ascend-inference: the library behind the Pulumi program.

Layers: the pure core (`spec`, `topology`, `ranktable`, `render`, `container`,
`facts`, `engines`) imports no Pulumi and backs the offline CLI; the Pulumi
resources live in `components.resources` and the graph tooling in
`components.graph`.
"""
