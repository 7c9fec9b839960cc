#!/usr/bin/env python3
"""Emulator stand-in for the serving engines (no inference is ever run).

Installed in the emulator image `ascemu/runtime:latest` as

    /usr/local/bin/vllm-mindspore   `vllm-mindspore serve [MODEL] [flags]`
    /usr/local/bin/vllm             `vllm serve [MODEL] [flags]`
    /usr/local/bin/lmdeploy         `lmdeploy serve api_server MODEL [flags]`
    /usr/local/Ascend/mindie/latest/mindie-service/bin/mindieservice_daemon
                                    reads ../conf/config.json (or $MIES_CONFIG_JSON_PATH)

What is checked, as the real engine would at start-up (exit 2 = bad command
line, exit 1 = start-up failure, both with one clear message):
  * every flag against the real engine's flag list: vLLM-MindSpore's from
    vllm_serve_usage.txt, `vllm serve` (vllm-ascend's) from
    vllm_ascend_names.json (extracted from the vLLM 0.23.0 wheel's own parser
    source by emulator/tools/extract_vllm_ascend_names.py), LMDeploy's from
    lmdeploy_flags.json (extracted from lmdeploy 0.18.0's own parser); MindIE
    takes none and reads its config;
  * vllm-ascend multi-node data parallel: the master listens on
    --data-parallel-address:--data-parallel-rpc-port, each --headless node
    connects to it, and the master answers /v1/models only once every DP
    rank has joined (as vLLM's API server starts only after its engines);
  * the model directory exists and holds config.json;
  * enough NPUs: the node's /dev/davinciN visible in the container (and
    ASCEND_RT_VISIBLE_DEVICES), or, when the world size exceeds one node or
    the Ray executor is asked for, the NPU total of the Ray cluster it joins
    (`ray.init(address="auto")`);
  * MindIE: https off without certificates, worldSize vs npuDeviceIds, and for
    multi-node the rank table (RANKTABLEFILE: exists, JSON, mode 640 or
    stricter, lists MIES_CONTAINER_IP).

Serving API keys as the real engines take them: vLLM's `--api-key` or
VLLM_API_KEY, LMDeploy's `--api-keys`; with one, /v1/* answers 401 without
`Authorization: Bearer <key>`.

What it serves, on the host/port its flags or config give: /health,
/v1/models, MindIE's /info, /v1/completions, /v1/chat/completions (a canned deterministic
reply naming the model), and MindIE's `POST /` and `/generate`.

Knobs (env, or the node's fault file /run/ascemu/faults.json):
  ASCEMU_ENGINE_READY_DELAY / engine_ready_delay  seconds before it listens
  ASCEMU_ENGINE_CRASH / engine_crash_after        exit 1 after this many seconds
"""

import argparse
import glob
import json
import os
import re
import signal
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.realpath(__file__))
RUN_DIR = os.environ.get("ASCEMU_RUN_DIR", "/run/ascemu")
NPUS_PER_NODE = 8


class StartupError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# flag lists
# --------------------------------------------------------------------------

INT_FLAGS = {"--port", "--seed", "--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size",
             "--data-parallel-rank", "--data-parallel-start-rank", "--data-parallel-size-local",
             "--data-parallel-rpc-port", "--max-num-seqs", "--max-num-batched-tokens", "--max-model-len",
             "--api-server-count", "--max-logprobs", "--num-redundant-experts", "--max-parallel-loading-workers"}
FLOAT_FLAGS = {"--gpu-memory-utilization", "--swap-space", "--cpu-offload-gb"}
JSON_FLAGS = {"--additional-config", "--speculative-config", "--kv-transfer-config", "--kv-events-config",
              "--hf-overrides"}


def json_arg(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON {text!r}: {exc}") from None


def vllm_parser(prog):
    """Build `vllm serve`'s parser from the usage block of its --help."""
    text = "".join(line for line in open(os.path.join(HERE, "vllm_serve_usage.txt"))
                   if not line.startswith("#"))
    text = text.split(":", 1)[1]  # drop "usage: api_server.py"
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    depth, start = 0, None
    groups = []
    for i, ch in enumerate(text):
        if ch == "[":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                groups.append(" ".join(text[start:i].split()))
    for group in groups:
        if group == "-h":
            continue
        if not group.startswith("-"):
            parser.add_argument(group, nargs="?")  # [model_tag]
            continue
        if " | " in group:
            parser.add_argument(group.split(" | ")[0], action=argparse.BooleanOptionalAction, default=None)
            continue
        flag, _, rest = group.partition(" ")
        kwargs = {}
        if not rest:
            parser.add_argument(flag, action="store_true")
            continue
        choice = re.match(r"\{([^}]*)\}", rest)
        if choice:
            kwargs["choices"] = choice.group(1).split(",")
        if rest.endswith("...]"):
            kwargs["nargs"] = "+"
        elif rest.startswith("["):
            kwargs["nargs"] = "?"
        if flag in INT_FLAGS:
            kwargs["type"] = int
        elif flag in FLOAT_FLAGS:
            kwargs["type"] = float
        elif flag in JSON_FLAGS:
            kwargs["type"] = json_arg
        parser.add_argument(flag, **kwargs)
    return parser


def vllm_ascend_parser(prog, names=None):
    """`vllm serve`'s options at the pinned vLLM (vllm_ascend_names.json)."""
    data = json.load(open(names or os.path.join(HERE, "vllm_ascend_names.json")))
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    parser.add_argument("model_tag", nargs="?")
    for flag, kind in data["serve_options"].items():
        if flag == "model_tag" or not flag.startswith("-"):
            continue
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif kind == "flag":
            parser.add_argument(flag, action="store_true")
        elif kind == "optional-value":
            parser.add_argument(flag, nargs="?", const=True)
        elif flag in INT_FLAGS:
            parser.add_argument(flag, type=int)
        elif flag in FLOAT_FLAGS:
            parser.add_argument(flag, type=float)
        elif flag in JSON_FLAGS or flag == "--compilation-config":
            parser.add_argument(flag, type=json_arg)
        elif flag == "--served-model-name":
            parser.add_argument(flag, nargs="+")
        else:
            parser.add_argument(flag)
    return parser


def flexible_argv(argv):
    """vLLM's FlexibleArgumentParser accepts --max_model_len as --max-model-len."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def lmdeploy_parser(prog):
    data = json.load(open(os.path.join(HERE, "lmdeploy_flags.json")))
    parser = argparse.ArgumentParser(prog=prog)  # LMDeploy keeps argparse's defaults
    types_ = {"int": int, "float": float, "str": str}
    for opt in data["options"]:
        kwargs = {"default": opt["default"]}
        if opt["kind"] == "store_true":
            kwargs["action"] = "store_true"
        elif opt["kind"] == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = types_[opt["type"]]
            if opt["nargs"]:
                kwargs["nargs"] = opt["nargs"]
            if opt["choices"]:
                kwargs["choices"] = [kwargs["type"](c) if c != "None" else None for c in opt["choices"]]
        if opt["flags"]:
            parser.add_argument(*opt["flags"], dest=opt["dest"], **kwargs)
        else:
            parser.add_argument(opt["dest"], **kwargs)
    return parser


# --------------------------------------------------------------------------
# start-up checks
# --------------------------------------------------------------------------

def knob(env_name, fault_key):
    if os.environ.get(env_name):
        return float(os.environ[env_name])
    try:
        value = json.load(open(os.path.join(RUN_DIR, "faults.json"))).get(fault_key)
        return float(value) if value is not None else None
    except (FileNotFoundError, ValueError):
        return None


def check_model(model):
    if not os.path.isdir(model):
        raise StartupError(f"OSError: {model} is not a local folder, and the emulator cannot download models "
                           "(no network). Put the model at the same path on every node and pass that path.")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise StartupError(f"OSError: {model} does not appear to have a file named config.json")


def local_npus():
    present = sorted(int(p[len("/dev/davinci"):]) for p in glob.glob("/dev/davinci[0-9]*"))
    visible = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if visible is None:
        return present
    wanted = [int(x) for x in visible.split(",") if x.strip()]
    absent = [d for d in wanted if d not in present]
    if absent:
        raise StartupError(f"RuntimeError: ASCEND_RT_VISIBLE_DEVICES={visible} names devices not present in "
                           f"this container: {absent} (present: /dev/davinci{present})")
    return wanted


def ray_npus():
    try:
        import ray
    except ImportError:
        raise StartupError("ModuleNotFoundError: ray is required for a multi-node world size") from None
    try:
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    except Exception as exc:
        raise StartupError(f"ConnectionError: could not connect to a running Ray cluster "
                           f"(start `ray start --head` on the head node and join the workers first): {exc}") from None
    try:
        resources = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    finally:
        ray.shutdown()
    return float(resources.get("NPU", 0)), len(nodes)


def check_npus(world, use_ray, label):
    if use_ray:
        npus, nodes = ray_npus()
        log(f"INFO ray cluster: {nodes} nodes, {npus} NPU")
        if npus < world:
            raise StartupError(f"ValueError: The number of required NPUs ({world}) exceeds the total number of "
                               f"available NPUs in the Ray cluster ({npus:g} on {nodes} nodes) [{label}]")
        return
    local = local_npus()
    if len(local) < world:
        raise StartupError(f"RuntimeError: {label} needs {world} NPUs on this node, {len(local)} visible "
                           f"(/dev/davinci* in the container: pass --device for each, "
                           f"or use Ray for more than one node)")


# --------------------------------------------------------------------------
# engines
# --------------------------------------------------------------------------

class Engine:
    def __init__(self, kind, model, served, host, port, headless=False, api_keys=()):
        self.kind, self.model, self.served, self.host, self.port = kind, model, served, host, port
        self.headless = headless
        self.peers = None  # a PeerJoin for a multi-node MindIE daemon
        # API keys a request must carry as `Authorization: Bearer <key>` (none: open).
        self.api_keys = tuple(api_keys)
        # (certificate, key) to serve HTTPS with (MindIE's httpsEnabled); None: plain HTTP.
        self.tls = None


def vllm_engine(prog, argv):
    if not argv or argv[0] != "serve":
        sys.stderr.write(f"{os.path.basename(prog)}: the emulator only emulates `{os.path.basename(prog)} serve`\n")
        sys.exit(2)
    name = f"{os.path.basename(prog)} serve"
    # The program runs `vllm serve` only for vllm-ascend; vllm-mindspore has its own command.
    ascend = os.path.basename(prog) == "vllm" and os.path.exists(os.path.join(HERE, "vllm_ascend_names.json"))
    args = (vllm_ascend_parser if ascend else vllm_parser)(name).parse_args(flexible_argv(argv[1:]))
    model = args.model_tag or args.model or "facebook/opt-125m"
    check_model(model)
    tp, pp = args.tensor_parallel_size or 1, args.pipeline_parallel_size or 1
    dp, dp_local = args.data_parallel_size or 1, args.data_parallel_size_local
    backend = args.distributed_executor_backend
    if dp > 1:
        # DP ranks of this node run here; other nodes start their own (--headless).
        check_npus(tp * pp * (dp_local if dp_local is not None else dp), False, f"DP{dp} x TP{tp} x PP{pp}")
    else:
        world = tp * pp
        check_npus(world, backend == "ray" or world > NPUS_PER_NODE, f"TP{tp} x PP{pp}")
    if os.path.basename(prog) == "vllm-mindspore":
        check_vllm_mindspore_env()
    served = (args.served_model_name or [model])[0]
    # vLLM: `--api-key` wins over VLLM_API_KEY (vllm/entrypoints/openai/api_server.py,
    # build_app: `if token := args.api_key or envs.VLLM_API_KEY`).
    token = args.api_key or os.environ.get("VLLM_API_KEY")
    engine = Engine("vllm", model, served, args.host or "0.0.0.0", args.port or 8000, headless=args.headless,
                    api_keys=[token] if token else [])
    if dp > 1 and dp_local is not None and dp_local < dp:
        engine.peers = data_parallel_peers(args, dp, dp_local)
    return engine


def data_parallel_peers(args, dp, dp_local):
    """vLLM's multi-node DP: the master (no --headless) hosts the coordinator at
    --data-parallel-address:--data-parallel-rpc-port; each headless node's ranks
    start at --data-parallel-start-rank and connect to it."""
    address, port = args.data_parallel_address, args.data_parallel_rpc_port
    if not address or not port:
        raise StartupError("ValueError: multi-node data parallel needs --data-parallel-address and "
                           "--data-parallel-rpc-port")
    start = args.data_parallel_start_rank or 0
    if args.headless and not start:
        raise StartupError("ValueError: a --headless node needs --data-parallel-start-rank > 0")
    if start % dp_local or start >= dp:
        raise StartupError(f"ValueError: --data-parallel-start-rank {start} is not a multiple of "
                           f"--data-parallel-size-local {dp_local} below --data-parallel-size {dp}")
    ranks = [f"dp-rank-{r}" for r in range(dp_local, dp, dp_local)]
    if args.headless:
        return PeerJoin([address, f"dp-rank-{start}"], f"dp-rank-{start}", int(port))
    return PeerJoin([address, *ranks], address, int(port))


def installed_version(dist):
    """The version pip recorded in the image (NAME-VERSION.dist-info), or None."""
    for path in glob.glob(f"/usr/local/lib/python3*/dist-packages/{dist}-*.dist-info"):
        return os.path.basename(path)[len(dist) + 1:-len(".dist-info")]
    return None


def check_vllm_mindspore_env():
    """vllm-mindspore from 0.4.0 reads VLLM_MS_MODEL_BACKEND (the old
    vLLM_MODEL_BACKEND still counts, with a warning) and, with the
    MindFormers backend, raises ValueError when MINDFORMERS_MODEL_CONFIG is
    set (vllm_mindspore/utils.py). Older versions read only the old name."""
    version = installed_version("vllm_mindspore")
    numbers = tuple(int(n) for n in re.findall(r"\d+", version or "")[:3])
    if numbers < (0, 4, 0):
        return
    backend = os.environ.get("VLLM_MS_MODEL_BACKEND") or os.environ.get("vLLM_MODEL_BACKEND") or ""
    if backend.lower() == "mindformers" and os.environ.get("MINDFORMERS_MODEL_CONFIG"):
        raise StartupError("ValueError: MINDFORMERS_MODEL_CONFIG is not supported, please unset "
                           "MINDFORMERS_MODEL_CONFIG. For usage of vllm_mindspore, refer to "
                           "https://www.mindspore.cn/vllm_mindspore/docs/zh-CN/master/getting_started/"
                           "quick_start/quick_start.html")


def lmdeploy_engine(prog, argv):
    if argv[:2] != ["serve", "api_server"]:
        sys.stderr.write(f"{os.path.basename(prog)}: the emulator only emulates "
                         f"`{os.path.basename(prog)} serve api_server`\n")
        sys.exit(2)
    args = lmdeploy_parser(f"{os.path.basename(prog)} serve api_server").parse_args(argv[2:])
    check_model(args.model_path)
    if args.device == "ascend" and args.backend == "turbomind":
        # not verified wording; TurboMind is CUDA-only, Ascend runs the PyTorch engine
        raise StartupError("ValueError: the turbomind backend does not support device ascend; use --backend pytorch")
    if args.device != "ascend":
        raise StartupError(f"RuntimeError: device {args.device!r} is not available on an Ascend node")
    world = args.tp * args.dp
    check_npus(world, args.distributed_executor_backend == "ray" or world > NPUS_PER_NODE, f"tp{args.tp} x dp{args.dp}")
    # LMDeploy: `--api-keys` only (lmdeploy/cli/utils.py, ArgumentHelper.api_keys).
    return Engine("lmdeploy", args.model_path, args.model_name or args.model_path,
                  args.server_name, args.server_port or 23333, api_keys=args.api_keys or [])


def mindie_engine(prog, argv):
    if argv:
        sys.stderr.write(f"{prog}: takes no arguments (it reads conf/config.json); got {argv}\n")
        sys.exit(2)
    service_dir = os.path.dirname(os.path.dirname(os.path.abspath(prog)))
    path = os.environ.get("MIES_CONFIG_JSON_PATH") or os.path.join(service_dir, "conf", "config.json")
    try:
        conf = json.load(open(path))
    except FileNotFoundError:
        raise StartupError(f"config file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise StartupError(f"config file {path} is not valid JSON: {exc}") from None
    server, backend = conf.get("ServerConfig", {}), conf.get("BackendConfig", {})
    tls = None
    if server.get("httpsEnabled", True):
        # Relative paths are under the install path, as MindIE's default config.json
        # names them. The real daemon decrypts an encrypted key with the KMC-encrypted
        # password file (tlsPkPwd); this stand-in takes an unencrypted key.
        cert = os.path.join(service_dir, server.get("tlsCert", "security/certs/server.pem"))
        key = os.path.join(service_dir, server.get("tlsPk", "security/keys/server.key.pem"))
        for what, path in (("certificate", cert), ("private key", key)):
            if not os.path.exists(path):
                raise StartupError(f"httpsEnabled is true but the {what} {path} does not exist "
                                   "(set \"httpsEnabled\" : false to serve plain HTTP)")
        tls = (cert, key)
    model_conf = backend.get("ModelDeployConfig", {}).get("ModelConfig", [{}])[0]
    devices = (backend.get("npuDeviceIds") or [[]])[0]
    if model_conf.get("worldSize") != len(devices):
        raise StartupError(f"worldSize {model_conf.get('worldSize')} does not match npuDeviceIds {devices}")
    visible = local_npus()
    missing = [d for d in devices if d not in visible]
    if missing:
        raise StartupError(f"npuDeviceIds {devices} name devices not visible in this container: {missing}")
    check_model(model_conf.get("modelWeightPath", ""))
    peers = None
    if backend.get("multiNodesInferEnabled"):
        servers, container_ip = check_rank_table()
        if backend.get("multiNodesInferPort") and len(servers) > 1:
            peers = PeerJoin(servers, container_ip, int(backend["multiNodesInferPort"]))
    engine = Engine("mindie", model_conf.get("modelWeightPath"), model_conf.get("modelName", "model"),
                    server.get("ipAddress", "127.0.0.1"), int(server.get("port", 1025)))
    engine.peers = peers
    engine.tls = tls
    return engine


class PeerJoin:
    """A multi-node MindIE start: the master (the rank table's first server) listens on
    multiNodesInferPort, every other daemon connects to it and says its container IP, and
    the master reports itself up (/info) only once all of them have joined, as a real master
    waits for its peers before it serves. (GPUStack's subordinate workers start their daemon
    only after they have seen the instance `starting`; a master that answered at once could
    take the instance to `running` before they look, and they would wait for ever.)"""

    def __init__(self, servers, container_ip, port):
        self.servers, self.me, self.port = list(servers), container_ip, port
        self.master = self.servers[0]
        self.joined = set()
        self.lock = threading.Lock()

    def ready(self):
        if self.me != self.master:
            return True
        with self.lock:
            return set(self.servers[1:]) <= self.joined

    def start(self):
        import socket

        if self.me == self.master:
            try:
                listener = socket.create_server((self.me, self.port))
            except OSError as exc:
                raise StartupError(f"multiNodesInferPort {self.port} on {self.me}: {exc}") from None
            log(f"INFO multi-node master: waiting on {self.me}:{self.port} for {', '.join(self.servers[1:])}")

            def accept():
                while True:
                    conn, _ = listener.accept()
                    with conn:
                        peer = conn.makefile().readline().strip()
                    with self.lock:
                        self.joined.add(peer)
                    log(f"INFO multi-node master: {peer} joined ({len(self.joined)}/{len(self.servers) - 1})")
            threading.Thread(target=accept, daemon=True).start()
            return

        def join():
            while True:
                try:
                    with socket.create_connection((self.master, self.port), timeout=5) as conn:
                        conn.sendall(f"{self.me}\n".encode())
                    log(f"INFO multi-node: joined the master {self.master}:{self.port}")
                    return
                except OSError:
                    time.sleep(1)
        threading.Thread(target=join, daemon=True).start()


def check_rank_table():
    path = os.environ.get("RANKTABLEFILE") or os.environ.get("RANK_TABLE_FILE")
    if not path:
        raise StartupError("multiNodesInferEnabled is true but RANKTABLEFILE is not set")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        table = json.load(open(path))
    except FileNotFoundError:
        raise StartupError(f"RANKTABLEFILE {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise StartupError(f"RANKTABLEFILE {path} is not valid JSON: {exc}") from None
    if mode & ~0o640:
        raise StartupError(f"RANKTABLEFILE {path} has mode {mode:o}; it must be 640 or stricter (chmod 640)")
    container_ip = os.environ.get("MIES_CONTAINER_IP")
    if not container_ip:
        raise StartupError("MIES_CONTAINER_IP is not set")
    ips = [s.get("container_ip", s.get("server_id")) for s in table.get("server_list", [])]
    if container_ip not in ips:
        raise StartupError(f"MIES_CONTAINER_IP {container_ip} is not in the rank table's server_list {ips}")
    return ips, container_ip


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

def reply_text(engine, max_tokens):
    words = f"[emulator stand-in {engine.kind}] model {engine.served} answered; no inference was run.".split()
    return " ".join(words[:max(1, int(max_tokens or 16))])


def make_handler(engine):
    created = int(time.time())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log(f'INFO:     {self.client_address[0]}:{self.client_address[1]} - '
                f'"{self.requestline}" {args[1] if len(args) > 1 else ""}')

        def send_json(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return None

        def model_error(self, name):
            self.send_json(404, {"object": "error", "message": f"The model `{name}` does not exist.",
                                 "type": "NotFoundError", "param": None, "code": 404})

        def refused(self):
            """vLLM and LMDeploy answer 401 to a /v1 request without one of their keys."""
            if not engine.api_keys or not self.path.startswith("/v1"):
                return False
            given = self.headers.get("Authorization", "")
            if given.startswith("Bearer ") and given[len("Bearer "):] in engine.api_keys:
                return False
            self.send_json(401, {"error": "Unauthorized"})
            return True

        def do_GET(self):
            if self.refused():
                return
            if engine.kind == "vllm" and engine.peers and not engine.peers.ready():
                return self.send_json(503, {"error": "waiting for the headless data parallel ranks to join"})
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [
                    {"id": engine.served, "object": "model", "created": created, "owned_by": engine.kind,
                     "root": engine.model, "parent": None}]})
            elif engine.kind == "mindie" and self.path == "/info" and engine.peers and not engine.peers.ready():
                self.send_json(503, {"error": "waiting for the other servers of the rank table to join"})
            elif engine.kind == "mindie" and self.path == "/info":
                # MindIE's TGI-compatible metadata endpoint, which GPUStack 2.x polls as the
                # MindIE backend's health check (gpustack/worker/serve_manager.py). Shape after
                # MindIE's service docs; the numbers are MindIE's defaults, not measured.
                self.send_json(200, {"version": "1.0.0", "max_concurrent_requests": 200, "max_best_of": 1,
                                     "max_input_length": 2048, "docker_label": None, "sha": None,
                                     "models": [{"model_id": engine.served, "model_device_type": "npu",
                                                 "model_dtype": "bfloat16", "model_pipeline_tag": "text-generation",
                                                 "model_sha": None, "max_total_tokens": 2560}]})
            else:
                self.send_json(404, {"detail": "Not Found"})

        def do_POST(self):
            if self.refused():
                self.body()
                return
            req = self.body()
            if req is None:
                return self.send_json(400, {"object": "error", "message": "request body is not valid JSON",
                                            "type": "BadRequestError", "code": 400})
            now = int(time.time())
            if self.path in ("/v1/completions", "/v1/chat/completions"):
                if req.get("model", engine.served) != engine.served:
                    return self.model_error(req.get("model"))
                text = reply_text(engine, req.get("max_tokens"))
                prompt = req.get("prompt") if "prompt" in req else json.dumps(req.get("messages", []))
                usage = {"prompt_tokens": len(str(prompt).split()), "completion_tokens": len(text.split())}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                if self.path == "/v1/completions":
                    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
                    obj, kind = "text_completion", "cmpl"
                else:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "length"}
                    obj, kind = "chat.completion", "chatcmpl"
                return self.send_json(200, {"id": f"{kind}-ascemu-{now}", "object": obj, "created": now,
                                            "model": engine.served, "choices": [choice], "usage": usage})
            if engine.kind == "mindie" and self.path in ("/", "/generate"):
                params = req.get("parameters") or {}
                return self.send_json(200, {"generated_text": reply_text(engine, params.get("max_new_tokens"))})
            self.send_json(404, {"detail": "Not Found"})

    return Handler


def serve(engine):
    delay = knob("ASCEMU_ENGINE_READY_DELAY", "engine_ready_delay")
    crash = knob("ASCEMU_ENGINE_CRASH", "engine_crash_after")
    started = time.time()
    if crash:
        def crash_later():
            time.sleep(max(0.0, crash - (time.time() - started)))
            log(f"ERROR engine process died unexpectedly (emulator: crash injected after {crash:g} s)")
            os._exit(1)
        threading.Thread(target=crash_later, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (log("INFO:     Shutting down"), os._exit(0)))
    if delay:
        log(f"INFO loading model (emulator: ready in {delay:g} s)")
        time.sleep(delay)
    if engine.peers:
        engine.peers.start()
    if engine.headless:
        log("INFO headless engine started; serving requests through the head node's API server")
        while True:
            time.sleep(3600)
    try:
        httpd = ThreadingHTTPServer((engine.host, engine.port), make_handler(engine))
    except OSError as exc:
        raise StartupError(f"OSError: cannot listen on {engine.host}:{engine.port}: {exc}") from None
    if engine.tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(*engine.tls)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load the TLS certificate {engine.tls[0]}: {exc}") from None
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    if engine.kind == "mindie":
        log("Daemon start success!")  # docs/formats.md §3: the real daemon's success line
    else:
        if engine.kind == "lmdeploy":
            log(f"HINT:    Please open \033[93m\033[1mhttp://{engine.host}:{engine.port}\033[0m "
                "in a browser for detailed api usage!!!")
        log(f"INFO:     Started server process [{os.getpid()}]")
        log("INFO:     Waiting for application startup.")
        log("INFO:     Application startup complete.")
        log(f"INFO:     Uvicorn running on http://{engine.host}:{engine.port} (Press CTRL+C to quit)")
    httpd.serve_forever()


ENGINES = {"vllm-mindspore": vllm_engine, "vllm": vllm_engine, "lmdeploy": lmdeploy_engine,
           "mindieservice_daemon": mindie_engine}


def main(name=None, argv=None):
    prog = sys.argv[0] if name is None else name
    kind = os.path.basename(prog)
    argv = sys.argv[1:] if argv is None else argv
    if kind not in ENGINES:
        sys.stderr.write(f"engine stand-in: unknown engine {kind!r} (known: {', '.join(ENGINES)})\n")
        return 2
    try:
        engine = ENGINES[kind](prog, argv)
        log(f"INFO emulator stand-in {kind}: model {engine.model!r} as {engine.served!r} on "
            f"{engine.host}:{engine.port} (no inference is run)")
        serve(engine)
    except StartupError as exc:
        log(f"ERROR {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
