"""The control host's offline tooling: `python -m ascendctl validate | render
| preview | diff | stacks`. `preview` and `diff` run the Pulumi program under
the SDK's mocks; nothing in the program imports this package."""
