"""Engine plugins, one module each. Adding an engine = adding a module here."""
from __future__ import annotations

from ascend_inference.engines import gpustack, lmdeploy, mindie, vllm_ascend, vllm_mindspore
from ascend_inference.engines.base import EnginePlugin

ENGINES: dict[str, EnginePlugin] = {
    module.PLUGIN.kind: module.PLUGIN for module in (vllm_mindspore, mindie, lmdeploy, gpustack, vllm_ascend)}
