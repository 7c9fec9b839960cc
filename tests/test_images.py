"""Pure tier: the image check and what the engine version decides.

The image check script runs under bash against a stand-in `docker`: `image
inspect` answers an id, and `run --rm --entrypoint /bin/sh IMAGE -c PROBE`
runs the rendered probe with /bin/sh over a directory laid out as the
engines' images are (pip's dist-info directories, MindIE's version.info, CANN's
ascend_toolkit_install.info in their real formats), its absolute paths moved
under that directory. Then the cross-node rules on what the checks print,
the env each vllm-mindspore version gets, and the stack keys' refusals."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.images import ImageExpectations, ImageFacts, check_images, version_tuple
from ascend_inference.render import render_image_copy, render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config
from tests.conftest import NS, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure

STUB = """#!/usr/bin/env bash
# docker image inspect -f FORMAT IMAGE | docker run --rm --network=none --entrypoint /bin/sh IMAGE -c PROBE
case "$1 $2" in
  "image inspect") [ -n "$IMAGE_ID" ] || { echo "Error: No such image: $5" >&2; exit 1; }; echo "$IMAGE_ID" ;;
  "run --rm")
    [ "$3 $4 $5" = "--network=none --entrypoint /bin/sh" ] || exit 64
    # The probe's absolute paths, moved under the image's root directory.
    probe=$(printf '%s' "$8" | sed -e "s#/usr/#$IMAGE_ROOT/usr/#g" -e "s#/opt/#$IMAGE_ROOT/opt/#g" \\
      -e "s#/root/#$IMAGE_ROOT/root/#g")
    exec /bin/sh -c "$probe" ;;
  *) exit 64 ;;
esac
"""

# docs/formats.md: CANN 8.0.0's install record, MindIE 2.0.T3's version.info.
CANN_INFO = ("package_name=Ascend-cann-toolkit\nversion=8.0.0\ninnerversion=V100R001C20SPC001B251\n"
             "compatible_version=[V100R001C15],[V100R001C17],[V100R001C18],[V100R001C19],[V100R001C20]\n"
             "arch=aarch64\nos=linux\npath=/usr/local/Ascend/ascend-toolkit/8.0.0/aarch64-linux\n")
MINDIE_VERSION_INFO = ("Ascend-mindie : MindIE 2.0.T3.B010\nmindie-rt: 2.0.T3.B010\nmindie-torch: 2.0.T3.B010\n"
                       "mindie-service: 2.0.T3.B010\nmindie-llm: 2.0.T3.B010\nmindie-sd:2.0.T3.B010\n"
                       "Platform : aarch64\n")


def image_root(tmp_path: Path, *, dist: str | None = None, mindie: bool = False, cann: bool = True) -> Path:
    root = tmp_path / "image"
    if dist:
        # The vLLM-MindSpore images' Python (its docs' MINDFORMERS_MODEL_CONFIG path is under it).
        (root / "usr/local/Python-3.11/lib/python3.11/site-packages" / dist).mkdir(parents=True)
    if mindie:
        info = root / "usr/local/Ascend/mindie/latest/version.info"
        info.parent.mkdir(parents=True)
        info.write_text(MINDIE_VERSION_INFO)
    if cann:
        info = root / "usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info"
        info.parent.mkdir(parents=True)
        info.write_text(CANN_INFO)
    root.mkdir(exist_ok=True)
    return root


def run_image_check(tmp_path: Path, stack: str, root: Path, image_id: str = "sha256:" + "ab" * 32):
    script = render_node(load_stack(stack), 1).scripts.image_check
    assert script is not None
    stub = tmp_path / "docker"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "IMAGE_ID": image_id, "IMAGE_ROOT": str(root)}
    return subprocess.run(["bash", "-s"], input=script.command, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("stack,dist,mindie,version", [
    ("tp16-vllm-mindspore", "vllm_mindspore-0.4.1.dist-info", False, "0.4.1"),
    ("tp16-vllm-mindspore", "vllm_mindspore-0.3.0-py3.11.egg-info", False, "0.3.0"),
    ("tp16-lmdeploy", "lmdeploy-0.7.2.post1.dist-info", False, "0.7.2.post1"),
    ("tp16-mindie", None, True, "2.0.T3.B010"),
], ids=["vllm-mindspore wheel", "vllm-mindspore egg", "lmdeploy", "mindie"])
def test_the_image_check_reads_id_engine_and_cann(tmp_path, stack, dist, mindie, version):
    done = run_image_check(tmp_path, stack, image_root(tmp_path, dist=dist, mindie=mindie))
    assert done.returncode == 0, done.stderr
    facts = ImageFacts.from_output(done.stdout)
    assert facts == ImageFacts(node="node1", image=load_stack(stack).spec.container.image,
                               id="sha256:" + "ab" * 32, engine_version=version, cann_version="8.0.0")


def test_an_image_without_the_engine_or_cann_reports_empty_versions(tmp_path):
    done = run_image_check(tmp_path, "tp16-vllm-mindspore", image_root(tmp_path, cann=False))
    assert done.returncode == 0, done.stderr
    facts = ImageFacts.from_output(done.stdout)
    assert (facts.engine_version, facts.cann_version) == ("", "")


def test_an_image_missing_on_the_node_is_one_line(tmp_path):
    done = run_image_check(tmp_path, "tp16-vllm-mindspore", image_root(tmp_path), image_id="")
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("node node1: image: hub.oepkgs.net/"), lines


# --- the cross-node rules -------------------------------------------------------

def expectations(stack: str, **container) -> ImageExpectations:
    loaded = load_stack(stack)
    spec = loaded.spec.model_copy(update={"container": loaded.spec.container.model_copy(update=container)})
    engine = spec.engine_plugin
    # As components/deployment.py builds them.
    return ImageExpectations(image=spec.container.image, package=engine.image_package,
                             engine_version=spec.container.engine_version, cann_version=spec.container.cann_version,
                             env_era=engine.env_era, rendered_version=engine.engine_version(spec),
                             refusal=lambda version: engine.version_refusal(spec, version))


def facts(node: str, image_id: str = "sha256:" + "cd" * 32, engine: str = "0.3.0", cann: str = "8.0.0"):
    return ImageFacts(node=node, image="mindspore:latest", id=image_id, engine_version=engine, cann_version=cann)


def one_error(errors: list[NodeFactError]) -> str:
    assert len(errors) == 1, [str(e) for e in errors]
    return str(errors[0])


def test_same_image_everywhere_passes():
    assert check_images([facts("node0"), facts("node1")], expectations("tp16-vllm-mindspore")) == []


def test_another_image_under_the_same_tag_is_refused():
    message = one_error(check_images([facts("node0"), facts("node1", image_id="sha256:" + "ab" * 32)],
                                     expectations("tp16-vllm-mindspore")))
    assert message.startswith("node node1: image: mindspore:latest is sha256:abababababab, node0 has "
                              "sha256:cdcdcdcdcdcd"), message
    assert "(fix: load the same image on every node" in message


def test_a_declared_engine_version_is_compared():
    expect = expectations("tp16-vllm-mindspore", engine_version="0.3.0")
    message = one_error(check_images([facts("node0", engine="0.4.1"), facts("node1", engine="0.4.1")][:1], expect))
    assert message == ("node node0: engine version: image mindspore:latest has vllm-mindspore 0.4.1, the stack "
                       "expects 0.3.0 (ascend-inference:container.engine_version) (fix: set "
                       "ascend-inference:container.engine_version to 0.4.1)")


def test_an_undeclared_version_is_refused_only_when_it_needs_another_env():
    # (validate requires the version for vllm-mindspore; the image check does not rely on it)
    expect = expectations("tp16-vllm-mindspore", engine_version=None)
    assert check_images([facts("node0", engine="0.3.0"), facts("node1", engine="0.3.0")], expect) == []
    assert check_images([facts("node0", engine=""), facts("node1", engine="")], expect) == []
    message = one_error(check_images([facts("node0", engine="0.4.1")], expect))
    assert "has vllm-mindspore 0.4.1 (vllm-mindspore 0.4.0 or later), the env is rendered for vllm-mindspore " \
           "before 0.4.0" in message and "set ascend-inference:container.engine_version to 0.4.1" in message
    # Engines whose env never changed: a version inside the stack's windows is reported, not refused.
    assert check_images([ImageFacts("node0", "lmdeploy", "sha256:1", "0.14.0", "8.0.0")],
                        expectations("tp16-lmdeploy", engine_version=None)) == []


@pytest.mark.parametrize("found", ["0.15.0", "0.16.0", "0.7.2"])
def test_a_found_version_outside_the_stacks_window_is_the_one_line(found):
    # Declared 0.14.0, found outside 0.8.0..0.14.x: the window line, not "set engine_version to ...".
    for declared in ("0.14.0", None):
        message = one_error(check_images([ImageFacts("node0", "lmdeploy_dlinfer:a2-v0.14.0", "sha256:1", found, "")],
                                         expectations("tp16-lmdeploy", engine_version=declared)))
        assert message == (f"node node0: engine version: image lmdeploy_dlinfer:a2-v0.14.0: lmdeploy {found} is "
                           "outside 0.8.0 to 0.14.x, the releases multi-node LMDeploy on Ascend over the HCCL rank "
                           "table needs (multi-node Ascend support first appears in 0.8.0; 0.15.0 removed the "
                           "rank-table reader (InternLM/lmdeploy commit e1b73cd1) and forms the cluster from Ray "
                           "alone, which this program does not render) (fix: use an image with lmdeploy 0.8.0 to "
                           "0.14.x and set ascend-inference:container.engine_version to its version "
                           "(docs/engine-versions.md))"), message


def test_a_found_mindie_before_2_0_is_refused():
    message = one_error(check_images([ImageFacts("node0", "mindie:x", "sha256:1", "1.0.RC3", "")],
                                     expectations("tp16-mindie")))
    assert message.startswith("node node0: engine version: image mindie:x: MindIE 1.0.RC3 is outside 2.0 or later"), \
        message


def test_another_version_is_the_one_line_even_though_the_id_differs_too():
    expect = expectations("tp16-vllm-mindspore", engine_version="0.3.0")
    message = one_error(check_images([facts("node0"), facts("node1", image_id="sha256:" + "ab" * 32, engine="0.4.1")],
                                     expect))
    assert message.startswith("node node1: engine version: image mindspore:latest has vllm-mindspore 0.4.1"), message


def test_a_declared_cann_version_is_compared():
    message = one_error(check_images([facts("node0", cann="8.0.RC3")],
                                     expectations("tp16-vllm-mindspore", cann_version="8.0.0")))
    assert message.startswith("node node0: CANN in the image: image mindspore:latest has CANN 8.0.RC3, the stack "
                              "expects 8.0.0 (ascend-inference:container.cann_version)"), message


def test_version_tuple():
    assert version_tuple("0.4.0rc1") == (0, 4, 0)
    assert version_tuple("2.0.T3.B010") == (2, 0)
    assert version_tuple("0.3.0") < (0, 4, 0) <= version_tuple("0.4.1")


# --- the engine version decides the env ------------------------------------------

def env_of(stack: str, **container) -> dict[str, str]:
    base = load_stack(stack)
    config = json.loads(json.dumps(base.raw_config))
    config[NS + "container"] = {**config[NS + "container"], **container}
    if container:
        # 0.4.0 reads no predict yaml (refused below); the image's own is the old versions' default.
        config[NS + "engine"] = {**config[NS + "engine"], "write_mindformers_yaml": False}
    return render_node(loaded_with_config(base, config), 0).env.as_dict()


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp8-pp2-300iduo"])
def test_vllm_mindspore_env_follows_the_engine_version(stack):
    old = env_of(stack, engine_version="0.3.0")
    assert old["vLLM_MODEL_BACKEND"] == "MindFormers" and "MINDFORMERS_MODEL_CONFIG" in old
    new = env_of(stack, engine_version="0.4.1")
    # As shipped: runbook 000's stack pins 0.3.0, runbook 003's 0.4.0 (its vLLM 0.9.1).
    assert env_of(stack) == (old if stack == "tp16-vllm-mindspore" else new)
    assert new["VLLM_MS_MODEL_BACKEND"] == "MindFormers"
    # 0.4.0 raises ValueError when MINDFORMERS_MODEL_CONFIG is set with the MindFormers backend.
    assert "vLLM_MODEL_BACKEND" not in new and "MINDFORMERS_MODEL_CONFIG" not in new
    # Nothing else changes.
    assert {k: v for k, v in old.items() if k not in ("vLLM_MODEL_BACKEND", "MINDFORMERS_MODEL_CONFIG")} == \
           {k: v for k, v in new.items() if k != "VLLM_MS_MODEL_BACKEND"}


# --- the stack keys --------------------------------------------------------------

def test_a_bad_version_and_a_yaml_the_engine_would_not_read_are_refused(tmp_path):
    doc = load_stack_doc("tp8-pp2-300iduo")
    doc["config"][NS + "container"]["engine_version"] = "latest"
    doc["config"][NS + "container"]["cann_version"] = "8.0.0"
    bad_version = run_cli("validate", "--stack", write_stack(tmp_path, "bad-version", doc))
    assert bad_version.returncode == 3 and "Traceback" not in bad_version.stderr
    assert "ascend-inference:container.engine_version" in bad_version.stderr and "(fix: " in bad_version.stderr

    doc["config"][NS + "container"]["engine_version"] = "0.4.0"
    doc["config"][NS + "engine"]["write_mindformers_yaml"] = True
    stale_yaml = run_cli("validate", "--stack", write_stack(tmp_path, "stale-yaml", doc))
    assert stale_yaml.returncode == 3, stale_yaml.stdout + stale_yaml.stderr
    lines = [line for line in stale_yaml.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ascend-inference:engine.write_mindformers_yaml" in lines[0], lines
    assert "refuses MINDFORMERS_MODEL_CONFIG" in lines[0] and "(fix: " in lines[0]


def test_missing_mount_sources_are_one_line_naming_node_and_paths(tmp_path):
    # This machine has no Ascend driver: every runbook source is missing here.
    script = render_node(load_stack("tp16-vllm-mindspore"), 1).scripts.mount_sources
    assert script is not None
    done = subprocess.run(["bash", "-s"], input=script.command, capture_output=True, text=True)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("node node1: mount sources: missing on the host: ")
    assert " /etc/vnpu.cfg " in lines[0] and " /usr/local/bin/npu-smi " in lines[0]
    # The stack's own directory is made by its file steps, so it is never listed.
    assert "/etc/ascend-inference" not in lines[0]


# --- the image tar fetched once, on the master (container.image_url, image_sha256) -----

LOAD_STUB = """#!/usr/bin/env bash
# docker image inspect IMAGE: present once `load` ran; docker load -i TAR: records the tar's bytes.
case "$1 $2" in
  "image inspect") [ -e "$STATE/loaded" ] || exit 1; [ "$3" = "-f" ] && echo sha256:feed ; exit 0 ;;
  "load -i") cp "$3" "$STATE/loaded"; echo "Loaded image: $IMAGE" ;;
  *) exit 64 ;;
esac
"""


MINDIE_IMAGE = "mindie:2.0.T9.B020-800I-A2-py3.11-openeuler24.03-lts-aarch64"


def image_tar_bytes(image: str = MINDIE_IMAGE, layer: bytes = b"layer bytes " * 1000) -> bytes:
    """A tar in docker save's layout holding `image` (the image step reads its
    manifest.json before `docker load`)."""
    config = json.dumps({"os": "linux", "layer": hashlib.sha256(layer).hexdigest()}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in ((config_name, config), ("layer/layer.tar", layer), ("manifest.json", json.dumps(
                [{"Config": config_name, "RepoTags": [image], "Layers": ["layer/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def served_tar(tmp_path):
    """A tar served over HTTP on 127.0.0.1 (what image_url names); the
    requests it answered are counted."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "mindie.tar").write_bytes(image_tar_bytes())
    requests: list[str] = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    handler = functools.partial(Counting, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mindie.tar", (root / "mindie.tar").read_bytes(), requests
    finally:
        server.shutdown()


def stack_with_tar(tmp_path: Path, **container):
    base = load_stack("tp16-mindie")
    config = json.loads(json.dumps(base.raw_config))
    tar = tmp_path / "node" / "images" / "mindie.tar"
    config[NS + "container"] = {**config[NS + "container"], "image_tar": str(tar), **container}
    return loaded_with_config(base, config), tar


def stub_env(tmp_path: Path, image: str) -> tuple[dict[str, str], Path]:
    state = tmp_path / "docker-state"
    state.mkdir(exist_ok=True)
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(LOAD_STUB)
    stub.chmod(0o755)
    return {"PATH": f"{stub.parent}:/usr/bin:/bin", "STATE": str(state), "IMAGE": image}, state / "loaded"


def run_image_step(tmp_path: Path, index: int = 0, **container):
    """Node `index`'s image step under the stand-in docker (node0: the master)."""
    loaded, tar = stack_with_tar(tmp_path, **container)
    script = render_node(loaded, index).scripts.image.command
    env, loaded_file = stub_env(tmp_path, loaded.spec.container.image)
    done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, env=env)
    return done, tar, loaded_file


def test_a_tar_fetched_from_its_url_and_checked_is_loaded(tmp_path, served_tar):
    url, data, _ = served_tar
    done, tar, loaded = run_image_step(tmp_path, image_url=url, image_sha256=hashlib.sha256(data).hexdigest())
    assert done.returncode == 0, done.stderr
    assert tar.read_bytes() == data and loaded.read_bytes() == data
    assert not tar.with_name(tar.name + ".part").exists()
    # What the other nodes' copies are checked against.
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert (printed["tar_bytes"], printed["tar_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_the_master_keeps_the_tar_for_the_copies_even_with_the_image_loaded(tmp_path, served_tar):
    """The image is on the master already but the tar is not: the master
    fetches it (the others copy it from there); a second run fetches nothing."""
    url, data, requests = served_tar
    env, loaded = stub_env(tmp_path, "")
    loaded.write_bytes(b"an image loaded before")
    sha = hashlib.sha256(data).hexdigest()
    done, tar, loaded = run_image_step(tmp_path, image_url=url, image_sha256=sha)
    assert done.returncode == 0, done.stderr
    assert tar.read_bytes() == data and loaded.read_bytes() == b"an image loaded before"
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["tar_sha256"] == hashlib.sha256(data).hexdigest()
    assert requests == ["/mindie.tar"]
    again, _, _ = run_image_step(tmp_path, image_url=url, image_sha256=sha)
    assert again.returncode == 0 and requests == ["/mindie.tar"]


def test_a_tar_with_another_checksum_is_one_line_and_is_not_loaded(tmp_path, served_tar):
    url, data, _ = served_tar
    done, tar, loaded = run_image_step(tmp_path, image_url=url, image_sha256="0" * 64)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"node node0: image tar: {tar} has sha256 {hashlib.sha256(data).hexdigest()}, "
                               f"the stack expects {'0' * 64} (container.image_sha256)"), lines[0]
    assert not loaded.exists() and not tar.exists()


def test_an_unreachable_url_is_one_line(tmp_path):
    done, tar, loaded = run_image_step(tmp_path, image_url="http://127.0.0.1:9/none.tar", image_sha256="0" * 64)
    assert done.returncode == 4
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("node ")]
    assert lines and lines[-1].startswith("node node0: image tar: could not fetch http://127.0.0.1:9/none.tar")
    assert not loaded.exists()


def test_the_other_nodes_load_the_copied_tar_and_fetch_nothing(tmp_path):
    done, tar, loaded = run_image_step(tmp_path, 1, image_url="http://127.0.0.1:9/none.tar",
                                       image_sha256="0" * 64)
    assert done.returncode == 4
    assert done.stderr.strip() == (
        f"node node1: image tar: {tar} is missing, the copy from node0 should have put it there "
        "(fix: pulumi up --replace the node1-image-copy step, which copies it again)")
    tar.parent.mkdir(parents=True)
    copied = image_tar_bytes(layer=b"copied")
    tar.write_bytes(copied)
    done, tar, loaded = run_image_step(tmp_path, 1, image_url="http://127.0.0.1:9/none.tar",
                                       image_sha256="0" * 64)
    # Loaded as the copy left it: the copy step checked its sha256.
    assert done.returncode == 0, done.stderr
    assert loaded.read_bytes() == copied


# --- the copy of the master's tar (<node>-image-copy) ---------------------------------

# rsync [opts] -e SSH master:TAR DEST: copies $SOURCE to DEST, cut to $CUT bytes or
# with its first byte changed ($FLIP) when asked; ssh-agent and ssh-add stand-ins
# record the key they were given.
RSYNC_STUB = """#!/usr/bin/env bash
for last; do :; done
echo "$*" > "$STATE/rsync-args"
if [ -n "${CUT:-}" ]; then head -c "$CUT" "$SOURCE" > "$last"
elif [ -n "${FLIP:-}" ]; then { printf X; tail -c +2 "$SOURCE"; } > "$last"
else cp "$SOURCE" "$last"; fi
"""
AGENT_STUB = """#!/usr/bin/env bash
[ "${1:-}" = -k ] && exit 0
echo "SSH_AUTH_SOCK=$STATE/agent; export SSH_AUTH_SOCK;"
"""
ADD_STUB = """#!/usr/bin/env bash
cat > "$STATE/key-seen"
"""


def run_copy(tmp_path: Path, data: bytes, sha256: str | None, **env_extra: str):
    master_tar = tmp_path / "master" / "mindie.tar"
    master_tar.parent.mkdir(exist_ok=True)
    master_tar.write_bytes(data)
    container = {"image_url": "https://images.example.com/mindie.tar"}
    if sha256:
        container["image_sha256"] = sha256
    loaded, tar = stack_with_tar(tmp_path, **container)
    script = render_image_copy(loaded, 1, {"image": loaded.spec.container.image, "id": "sha256:feed",
                                           "tar": str(tar), "tar_bytes": len(data),
                                           "tar_sha256": hashlib.sha256(data).hexdigest()})
    env, loaded_file = stub_env(tmp_path, loaded.spec.container.image)
    bin_dir = Path(env["PATH"].split(":")[0])
    for name, text in (("rsync", RSYNC_STUB), ("ssh-agent", AGENT_STUB), ("ssh-add", ADD_STUB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**env, "SOURCE": str(master_tar), **env_extra}
    # As the program runs it: the script as the command, the SSH key on stdin.
    done = subprocess.run(["bash", "-c", script.command], input="-----BEGIN TEST KEY-----\n", capture_output=True,
                          text=True, env=env)
    return done, tar, Path(env["STATE"])


def test_the_copy_pulls_the_masters_tar_with_the_key_from_stdin(tmp_path):
    data = b"layer bytes " * 1000
    done, tar, state = run_copy(tmp_path, data, None)
    assert done.returncode == 0, done.stderr
    assert tar.read_bytes() == data and not tar.with_name(tar.name + ".part").exists()
    assert f"root@192.0.2.11:{tar} {tar}.part" in (state / "rsync-args").read_text()
    # The key went from stdin to ssh-add (the stand-in records what it read).
    assert (state / "key-seen").read_text() == "-----BEGIN TEST KEY-----\n"
    assert "BEGIN TEST KEY" not in (state / "rsync-args").read_text()
    assert json.loads(done.stdout.strip().splitlines()[-1])["copied"] is True
    again, _, _ = run_copy(tmp_path, data, None)
    assert again.returncode == 0
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {
        "node": "node1", "copied": False, "reason": "tar present already"}


def test_a_short_copy_is_one_line_and_the_next_run_resumes_it(tmp_path):
    data = b"layer bytes " * 1000
    done, tar, _ = run_copy(tmp_path, data, None, CUT="100")
    assert done.returncode == 4
    assert done.stderr.strip() == (
        f"node node1: image tar: {tar} copied from node0 has 100 bytes, node0's has {len(data)} "
        "(fix: the copy was cut short; the next up resumes it)")
    # Kept for rsync to resume from; not in place, so nothing loads it.
    assert tar.with_name(tar.name + ".part").stat().st_size == 100 and not tar.exists()
    again, tar, _ = run_copy(tmp_path, data, None)
    assert again.returncode == 0, again.stderr
    assert tar.read_bytes() == data


def test_a_copy_with_another_sha256_is_one_line_and_removed(tmp_path):
    data = b"layer bytes " * 1000
    sha = hashlib.sha256(data).hexdigest()
    done, tar, _ = run_copy(tmp_path, data, sha, FLIP="1")
    found = hashlib.sha256(b"X" + data[1:]).hexdigest()
    assert done.returncode == 4
    assert done.stderr.strip() == (
        f"node node1: image tar: {tar} copied from node0 has sha256 {found}, expected {sha} "
        "(container.image_sha256) (fix: the copy was removed and the next up copies it again; rsync checks what it "
        "sends, so if it differs again the tar on node0 changed since its image step: check it with sha256sum there)")
    assert not tar.exists() and not tar.with_name(tar.name + ".part").exists()
    again, tar, _ = run_copy(tmp_path, data, sha)
    assert again.returncode == 0, again.stderr
    assert tar.read_bytes() == data


def test_a_node_with_the_image_copies_nothing(tmp_path):
    env, loaded = stub_env(tmp_path, "")
    loaded.write_bytes(b"loaded")
    done, tar, state = run_copy(tmp_path, b"layer bytes", None)
    assert done.returncode == 0, done.stderr
    assert not tar.exists() and not (state / "rsync-args").exists()


def test_image_url_and_sha256_need_the_tar_path(tmp_path):
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][NS + "container"]["image_url"] = "https://example.com/x.tar"
    doc["config"][NS + "container"]["image_sha256"] = "a" * 64
    done = run_cli("validate", "--stack", write_stack(tmp_path, "no-tar", doc))
    assert done.returncode == 3 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    for key, line in zip(("image_url", "image_sha256"), lines, strict=True):
        assert f"ascend-inference:container.{key}: needs container.image_tar" in line and "(fix: " in line


def test_a_master_output_without_the_tar_facts_is_one_line(tmp_path):
    loaded, _ = stack_with_tar(tmp_path, image_url="https://images.example.com/mindie.tar")
    with pytest.raises(NodeFactError) as info:
        render_image_copy(loaded, 1, {"image": loaded.spec.container.image, "id": "sha256:feed"})
    assert str(info.value) == ("node node0: image tar: node0-image printed no tar_bytes, tar_sha256 "
                               "(fix: pulumi up --replace the node0-image step)")
