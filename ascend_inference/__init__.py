"""ascend-inference's pure core: the stack file, the parallel plan, the rank
table, the node facts and everything rendered for a node.

Nothing here imports Pulumi, so `python -m ascendctl validate` and `render`
work without a Pulumi engine, and the same code backs the Pulumi program
(`components`)."""
