"""Fetch the real vLLM 0.23.0 wheel and vllm-ascend 0.23.0.post1 sdist into a
cache outside the clone, without installing them or anything they depend on.

Run by tests/realsoftware/install.sh; test_vllm_ascend_release.py reads the
files (it never downloads). Standard library and pip only.

  * vLLM: `pip download --no-deps --only-binary :all: vllm==0.23.0` (pip
    checks the wheel against the index's hash).
  * vllm-ascend is published as an sdist only, and `pip download` of an sdist
    builds its metadata first, which needs torch and the CANN toolkit. So the
    tarball is fetched by the URL PyPI's JSON API gives for the release, and
    its sha256 from the same JSON is checked before the file is kept. The
    per-release endpoint (/pypi/vllm-ascend/0.23.0.post1/json) is asked
    first; where a mirror answers it with 404 the project endpoint's
    `releases["0.23.0.post1"]` (the same file list) is used.

Cold: about 290 MB (the vLLM wheel is 274 MB). Warm (both files present and
the sdist's recorded hash matching): no network at all.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

VLLM_VERSION = "0.23.0"
VLLM_ASCEND_VERSION = "0.23.0.post1"
SDIST = f"vllm_ascend-{VLLM_ASCEND_VERSION}.tar.gz"
CACHE = Path(os.environ.get("ASCEND_INFERENCE_CACHE", Path.home() / ".cache" / "ascend-inference")) \
    / f"vllm-ascend-{VLLM_ASCEND_VERSION}"
FETCH = "bash tests/realsoftware/install.sh (or python3 tests/realsoftware/fetch_vllm_ascend.py)"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vllm_wheel() -> Path | None:
    found = sorted(CACHE.glob(f"vllm-{VLLM_VERSION}-*.whl"))
    return found[-1] if found else None


def sdist_verified() -> Path | None:
    """The sdist, if present and matching the sha256 PyPI's JSON gave when it was fetched."""
    sdist, recorded = CACHE / SDIST, CACHE / (SDIST + ".sha256")
    if sdist.exists() and recorded.exists() and sha256_of(sdist) == recorded.read_text().strip():
        return sdist
    return None


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as answer:
        return json.load(answer)


def sdist_entry() -> tuple[str, str]:
    """(absolute URL, sha256) of the release's sdist, from PyPI's JSON API."""
    release_url = f"https://pypi.org/pypi/vllm-ascend/{VLLM_ASCEND_VERSION}/json"
    try:
        base, files = release_url, _json(release_url)["urls"]
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
        base = "https://pypi.org/pypi/vllm-ascend/json"
        files = _json(base)["releases"][VLLM_ASCEND_VERSION]
    for entry in files:
        if entry["packagetype"] == "sdist" and entry["filename"] == SDIST:
            return urljoin(base, entry["url"]), entry["digests"]["sha256"]
    raise SystemExit(f"fetch_vllm_ascend: PyPI lists no {SDIST}")


def fetch_sdist() -> None:
    url, sha256 = sdist_entry()
    partial = CACHE / (SDIST + ".part")
    with urllib.request.urlopen(url, timeout=300) as answer, open(partial, "wb") as out:
        for block in iter(lambda: answer.read(1 << 20), b""):
            out.write(block)
    got = sha256_of(partial)
    if got != sha256:
        partial.unlink()
        raise SystemExit(f"fetch_vllm_ascend: {SDIST} from {url} has sha256 {got}, PyPI's JSON says {sha256}")
    partial.rename(CACHE / SDIST)
    (CACHE / (SDIST + ".sha256")).write_text(sha256 + "\n")


def main() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    if vllm_wheel() is None:
        print(f"== vLLM {VLLM_VERSION} wheel into {CACHE} (pip download --no-deps, ~274 MB)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary", ":all:", f"vllm=={VLLM_VERSION}", "-d", str(CACHE)],
                       check=True, timeout=1800)
    if sdist_verified() is None:
        print(f"== vllm-ascend {VLLM_ASCEND_VERSION} sdist into {CACHE} (PyPI JSON URL, sha256 checked)", flush=True)
        fetch_sdist()
    print(f"== {vllm_wheel().name} and {SDIST} in {CACHE}")


if __name__ == "__main__":
    main()
