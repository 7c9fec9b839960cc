"""The offline `preview` and `diff` of a stack, without the Pulumi CLI or a
cluster: the deployable program run under the Pulumi SDK's mocks, its
resource graph recorded, printed and compared. One job per module:

* `versions.py`: the SDK versions this package was checked against, and the
  check that those are installed (`sdk.py` runs it when imported, before it
  imports any of the SDK);
* `sdk.py`: the only use of SDK internals (observing registration requests);
* `recorder.py`: runs a program under the mocks and returns its `Graph`;
* `graph.py`: the recorded graph as data, and its queries;
* `values.py`, `wire.py`, `paths.py`: secrets and unknowns, the wire format,
  property paths;
* `diff.py` and `providers.py`: what a change does, resource by resource,
  and the providers' replace-or-update rules;
* `printer.py`: the tree and diff printouts;
* `facts.py`, `config.py`, `stack.py`: a stack's synthetic node facts, its
  config edits, and its preview and diff.

Nothing in the deployable program (`components/`, `ascend_inference/`,
`__main__.py`) imports this package.
"""
