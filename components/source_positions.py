"""The SDK's record of where each resource was made, without reading source.

For every resource the Python SDK (pulumi 3.272,
`pulumi/runtime/resource.py`, `_get_stack_trace`) sends the engine the
stack of the program's frames above the resource's constructor, each as a
file URI and a line. It gets them from `traceback.extract_stack()`, which
also reads every frame's source line through `linecache`, and converts each
file name with `pathlib` again for every resource: a tenth of a 256-node
preview's time, for lines it never sends.

`stack_trace` below walks the same frames with `sys._getframe` and caches
each frame's message per (file, line), and returns a message equal to the
SDK's (tests/test_source_positions.py compares the two from the same frames,
and the source positions a whole stack registers). Like `cycle_check`, it is
installed only over the exact function it was written against.
"""

from __future__ import annotations

import pathlib
import sys
from types import FrameType

from pulumi.runtime import resource as sdk_resource
from pulumi.runtime.proto import source_pb2

from components.sdk_functions import replace_sdk_function

# The SDK release whose `_get_stack_trace` this reproduces (requirements.txt pins it).
WRITTEN_FOR = "3.272.0"
_SDK_FUNCTION = sdk_resource._get_stack_trace

_frames: dict[tuple[str, int | None], source_pb2.StackFrame] = {}


def _stack_frame(frame: FrameType) -> source_pb2.StackFrame:
    key = (frame.f_code.co_filename, frame.f_lineno)
    cached = _frames.get(key)
    if cached is None:
        filename, line = key
        position = None
        if filename != "" and line is not None:
            try:
                position = source_pb2.SourcePosition(uri=pathlib.Path(filename).as_uri(), line=line)
            except BaseException:  # noqa: BLE001 -- as the SDK: a name that is no URI has no position
                position = None
        cached = _frames[key] = source_pb2.StackFrame(pc=position)
    return cached


def stack_trace() -> source_pb2.StackTrace:
    """The SDK's `_get_stack_trace`: the frames outside the third `__init__`
    from the innermost (Resource, then CustomResource or ComponentResource,
    then the concrete resource class), innermost first; an empty trace when
    there is no such frame or nothing outside it."""
    frame: FrameType | None = sys._getframe()
    inits = 0
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            inits += 1
            if inits == 3:
                break
        frame = frame.f_back
    if frame is None or frame.f_back is None:
        return source_pb2.StackTrace()
    frames = []
    outer: FrameType | None = frame.f_back
    while outer is not None:
        frames.append(_stack_frame(outer))
        outer = outer.f_back
    return source_pb2.StackTrace(frames=frames)


def install() -> bool:
    """Use `stack_trace` for the SDK's `_get_stack_trace` when the SDK has
    the function it was written against; True when installed."""
    return replace_sdk_function(sdk_resource, "_get_stack_trace", stack_trace, _SDK_FUNCTION, WRITTEN_FOR)
