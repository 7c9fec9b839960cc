"""Runbook 002's own shape rolled out by the program: GPUStack 2.3.0 server + 3 workers on
4 emulated Atlas 800T A2 (8 NPUs each), DeepSeek-R1 BF16 with MindIE at DP4 / TP8 / MoE EP32.

The stack file dp4-ep32-gpustack unchanged but for what names the machines (emulator/userpath.py
PulumiRollout: the real `pulumi` CLI, the user path) and the worker wait (a cap: workers
register slowly on a loaded 2-core machine). Same machinery and the same assertions
(tests/emulated/gpustack_program.py) as test_gpustack_rollout.py (the 2-node DP2/EP16
layout, which also covers updates, refresh and a missing worker): the real server and
workers from the program's own `docker run`, the model through the program's dynamic
resource, the stand-in MindIE started by GPUStack's workers.

One rollout, then: server + 3 workers Ready with 8 NPUs each, the model with the stack file's
backend parameters as GPUStack's API reports them, its instance running across the 4 workers,
a chat answered; a second `up --expect-no-changes` passes; `destroy` removes model, workers
and server and leaves the weights.
"""
from __future__ import annotations

import pytest

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from tests.emulated.gpustack_program import STACK, api_of, assert_destroyed, assert_serving, gpustack_rollout, the_model

pytestmark = pytest.mark.emulated

# Four GPUStack processes start at once on a shared 2-core machine. The model's wait is
# capped well inside the test's own limit (its instance runs within about 2 minutes
# here), so that an instance that never runs fails the `up` with the program's own
# message (the instance's state and its last log lines) instead of a killed test.
SHAPE = ["engine.worker_ready_timeout_s=900", "engine.ready_timeout_s=600"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with gpustack_rollout(tmp_path_factory, 4, "gpustack-4nodes", prefix="ptgs4n", subnet=247, log_lines=40) as env:
        yield env


def runbook_backend_parameters() -> list[str]:
    """Runbook 002 step 4's backend parameters, from the stack file's own values."""
    config = load_stack(STACK).raw_config
    parallel, engine = config[f"{NAMESPACE}:parallel"], config[f"{NAMESPACE}:engine"]
    return [f"--data-parallel-size={parallel['dp']}", f"--tensor-parallel-size={parallel['tp']}",
            f"--moe-tensor-parallel-size={parallel['moe_tp']}", f"--moe-expert-parallel-size={parallel['ep']}",
            f"--npu-memory-fraction={engine['npu_memory_fraction']}"]


def test_the_runbook_shape_rolls_out_on_four_nodes(env):
    cluster, rollout = env
    assert runbook_backend_parameters() == ["--data-parallel-size=4", "--tensor-parallel-size=8",
                                            "--moe-tensor-parallel-size=1", "--moe-expert-parallel-size=32",
                                            "--npu-memory-fraction=0.95"]
    model = assert_serving(cluster, rollout, rollout.up(SHAPE), runbook_backend_parameters())

    # The node checks run again (invokes, never a change); no resource changes: the real
    # engine's own check, `--expect-no-changes`, passes.
    again = rollout.up(SHAPE, "--expect-no-changes")
    assert again.error is None, again.output[-3000:]
    assert again.changed() == {}
    checks = {f"{n.name}-{c}" for n in cluster.nodes for c in ("preflight", "peer-ping", "image-check")}
    assert checks <= set(again.checks), again.checks
    assert the_model(api_of(cluster))["id"] == model["id"]


def test_destroy_removes_model_workers_and_server_and_leaves_the_weights(env):
    cluster, rollout = env
    assert_destroyed(cluster, rollout)
