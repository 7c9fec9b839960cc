"""vllm-ascend's names against the real vLLM 0.23.0 wheel and vllm-ascend
0.23.0.post1 sdist (tier 4).

The files come from PyPI, fetched by tests/realsoftware/install.sh
(fetch_vllm_ascend.py) into ~/.cache/ascend-inference/vllm-ascend-0.23.0.post1,
never installed and with none of their dependencies. This test does not
download; when they are missing it FAILS naming the install step.

What it imports: nothing of vLLM or vllm-ascend. It unpacks the wheel's and
the sdist's Python sources into a temporary directory (zipfile, tarfile) and
runs emulator/tools/extract_vllm_ascend_names.py on them, which reads them with
`ast`. The result must equal ascend_inference/engines/data/vllm_ascend_names.json,
the file validate checks every flag, env name and additional_config key
against, so that file cannot drift from the real packages.

Why not vLLM's real `vllm serve` parser, as LMDeploy's is built from its
wheel (emulator/tools/extract_lmdeploy_flags.py): the parser is
vllm/entrypoints/openai/cli_args.py make_arg_parser, which needs
AsyncEngineArgs from vllm/engine/arg_utils.py. That module imports torch at
its top, all of vllm.config (6 of its 29 modules import torch; model.py uses
`torch.` 27 times, parallel.py imports torch.distributed's ProcessGroup,
ReduceOp and Store), vllm.platforms (which probes for a device),
vllm.transformers_utils.config (transformers' GenerationConfig,
PretrainedConfig and auto-model tables), vllm.v1.attention.backends.registry
and vllm.v1.sample.logits_processor (torch). And add_cli_args derives every
option's type and choices from those dataclasses' annotations (get_kwargs,
with pydantic TypeAdapter over them, torch.dtype among them). Stand-ins would
have to fake most of torch's type surface and transformers' config classes,
and what they faked would decide the parse: that is not the real parser.
So the real parser is not built here; the extractor's reading of the same
source is checked instead, and the rendered commands are checked against its
result by tests/test_vllm_ascend.py.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
NAMES_FILE = PROJECT / "ascend_inference/engines/data/vllm_ascend_names.json"

pytestmark = pytest.mark.realsoftware


def _fetcher():
    spec = importlib.util.spec_from_file_location("fetch_vllm_ascend", Path(__file__).with_name("fetch_vllm_ascend.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> tuple[Path, Path]:
    """(root holding vllm/, root of the vllm-ascend sdist), unpacked from the cached real files."""
    fetch = _fetcher()
    wheel, sdist = fetch.vllm_wheel(), fetch.sdist_verified()
    if wheel is None or sdist is None:
        pytest.fail(f"the real vLLM {fetch.VLLM_VERSION} wheel and vllm-ascend {fetch.VLLM_ASCEND_VERSION} sdist "
                    f"are not in {fetch.CACHE} (or the sdist no longer matches its PyPI sha256). "
                    f"Fetch them with: {fetch.FETCH}", pytrace=False)
    root = tmp_path_factory.mktemp("vllm-ascend-release")
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(root, [n for n in whl.namelist() if n.startswith("vllm/") and n.endswith(".py")])
    with tarfile.open(sdist) as tar:
        top = f"vllm_ascend-{fetch.VLLM_ASCEND_VERSION}/"
        members = [m for m in tar.getmembers() if m.isfile() and (
            m.name == top + "PKG-INFO" or (m.name.startswith(top + "vllm_ascend/") and m.name.endswith(".py")))]
        tar.extractall(root, members, filter="data")
    return root, root / top.rstrip("/")


def test_the_committed_names_are_what_the_real_packages_hold(unpacked):
    vllm_root, ascend_root = unpacked
    got = subprocess.run([sys.executable, str(PROJECT / "emulator/tools/extract_vllm_ascend_names.py"),
                          str(vllm_root), str(ascend_root)], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    extracted, committed = json.loads(got.stdout), json.loads(NAMES_FILE.read_text())
    assert (extracted["vllm"], extracted["vllm_ascend"]) == ("0.23.0", "0.23.0.post1")
    for key in committed:
        assert extracted[key] == committed[key], (
            f"{key} differs from the real packages; regenerate {NAMES_FILE.name} with the extractor")
    assert extracted.keys() == committed.keys()
    # Sanity on the real parser's size: a reading that lost EngineArgs would still "match" an equally broken file.
    assert len(extracted["serve_options"]) > 200 and "--distributed-executor-backend" in extracted["serve_options"]


def test_vllm_ascend_adds_only_the_ascend_quantization_choice(unpacked):
    """The extractor's `quantization_added: ["ascend"]` and "no option of its own",
    checked on the sdist: vllm_ascend/platform.py NPUPlatform.pre_register_and_update
    appends ASCEND_QUANTIZATION_METHOD to --quantization's choices, and no module of
    vllm_ascend/ calls add_argument on vLLM's parser."""
    _, ascend_root = unpacked
    platform = (ascend_root / "vllm_ascend/platform.py").read_text()
    assert 'parser._option_string_actions.get("--quantization")' in platform
    assert "quant_action.choices.append(ASCEND_QUANTIZATION_METHOD)" in platform
    utils = (ascend_root / "vllm_ascend/utils.py").read_text()
    assert 'ASCEND_QUANTIZATION_METHOD = "ascend"' in utils
    adders = [p.relative_to(ascend_root) for p in (ascend_root / "vllm_ascend").rglob("*.py")
              if ".add_argument(" in p.read_text()]
    assert adders == [], f"vllm-ascend registers options of its own in {adders}: extend the extractor"
