"""`model.source`: each bad value refused by `validate` with one line naming
the stack file, the key and the fix (exit 3, no traceback); the hub token a
secret like any other; what `render` writes for each kind."""
from __future__ import annotations

import pytest

from tests.conftest import NS, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure

CIPHERTEXT = "v1:aHViLXRva2Vu:bm90LXJlYWxseS1lbmNyeXB0ZWQ="
TOKEN = "hf_never_in_clear_source_0123"


def stack_with(tmp_path, label: str, source: dict, **top) -> str:
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][f"{NS}model"]["source"] = source
    for key, value in top.items():
        doc["config"][f"{NS}{key}"] = value
    return str(write_stack(tmp_path, label, doc))


BAD = [
    ("unknown-kind", {"kind": "s3"}, "model.source.kind", "use one of 'local', 'copy' or 'huggingface'"),
    ("hub-without-repo", {"kind": "huggingface"}, "model.source", "add `repo: owner/name`"),
    ("repo-on-copy", {"kind": "copy", "repo": "deepseek-ai/DeepSeek-R1"}, "model.source",
     "repo: only for kind huggingface (this source is copy)"),
    ("endpoint-on-local", {"endpoint": "https://hf-mirror.com"}, "model.source",
     "remove endpoint, or set `kind: huggingface`"),
    ("repo-not-owner-name", {"kind": "huggingface", "repo": "DeepSeek-R1"}, "model.source.repo", '"DeepSeek-R1"'),
    ("endpoint-not-a-url", {"kind": "huggingface", "repo": "a/b", "endpoint": "hf-mirror.com"},
     "model.source.endpoint", '"hf-mirror.com"'),
    ("token-key-not-a-name", {"kind": "huggingface", "repo": "a/b", "token_secret": "hf-token"},
     "model.source.token_secret", '"hf-token"'),
    ("misspelt-key", {"kind": "huggingface", "repo": "a/b", "revison": "v1"}, "model.source.revison", "revision"),
    ("empty-revision", {"kind": "huggingface", "repo": "a/b", "revision": ""}, "model.source.revision", ""),
]


@pytest.mark.parametrize("label,source,key,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_source_is_refused_clearly(tmp_path, label, source, key, words):
    path = stack_with(tmp_path, label, source)
    result = run_cli("validate", "--stack", path)
    shown = result.stdout + result.stderr
    assert result.returncode == 3 and "Traceback" not in shown, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert lines[0].startswith(f"error: {path}: {NS}{key}: ") and "(fix: " in lines[0], lines[0]
    assert words in lines[0], lines[0]


def test_the_hub_token_is_a_secret(tmp_path):
    source = {"kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1", "token_secret": "hfToken"}
    missing = run_cli("validate", "--stack", stack_with(tmp_path, "missing", source), "--require-secrets")
    assert missing.returncode == 3 and f"{NS}hfToken: secret not set" in missing.stderr, missing.stderr
    clear = run_cli("validate", "--stack", stack_with(tmp_path, "clear", source, hfToken=TOKEN))
    assert clear.returncode == 3 and f"{NS}hfToken: a secret is written in clear" in clear.stderr, clear.stderr
    assert TOKEN not in clear.stdout + clear.stderr
    path = stack_with(tmp_path, "set", source, hfToken={"secure": CIPHERTEXT})
    assert run_cli("validate", "--stack", path, "--require-secrets").returncode == 3  # only the SSH key missing
    out = tmp_path / "out"
    assert run_cli("render", "--stack", path, "--out", out).returncode == 0
    every_file = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert CIPHERTEXT not in every_file


def test_render_writes_the_download_on_the_master_only(tmp_path):
    source = {"kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1", "revision": "v1.0",
              "endpoint": "https://hf-mirror.com"}
    out = tmp_path / "out"
    assert run_cli("render", "--stack", stack_with(tmp_path, "hub", source), "--out", out).returncode == 0
    download = (out / "node0" / "scripts" / "weights-download.sh").read_text()
    assert "export HF_ENDPOINT=https://hf-mirror.com" in download
    assert "-c \"$program\" /path/to/save/deepseek_r1_w8a8 deepseek-ai/DeepSeek-R1 v1.0 \"$NODE\"" in download
    assert not (out / "node1" / "scripts" / "weights-download.sh").exists()
    # The local default renders no download.
    plain = tmp_path / "plain"
    assert run_cli("render", "--stack", "tp16-vllm-mindspore", "--out", plain).returncode == 0
    assert not list(plain.rglob("weights-download.sh"))
