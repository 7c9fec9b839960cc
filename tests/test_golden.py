"""Golden tests: every stack, rendered with `python -m ascendctl render`,
carries exactly the values of its runbook (quoted verbatim below; step by step in docs/runbooks.md).

The runbooks' commands are copied verbatim below (each constant names its seed
file and section) and parsed the same way as the rendered files, so a flag
written `--max_model_len=32768` in a runbook and `--max-model-len=32768` in a
rendered command compare equal, and so do `--tensor-parallel-size 16` and
`--tensor-parallel-size=16`, or a positional model path and `--model=`.
Placeholders a runbook leaves to the reader (`NODE_IP`, `<head_node_ip>`,
`your_gpustack_token`...) are filled with the stack's own values before the
comparison; values that differ per node are compared with that node's IP.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import FIXTURES, NS, container_mount_for, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure

# --------------------------------------------------------------------------
# Runbook text, verbatim
# --------------------------------------------------------------------------

# 000_744bb2758c81c62a.txt, section "使用 docker 容器".
RUNBOOK_000_DOCKER_RUN = r'''
docker run -itd --name=mindspore_vllm --ipc=host --network=host --privileged=true \
        --device=/dev/davinci0 \
        --device=/dev/davinci1 \
        --device=/dev/davinci2 \
        --device=/dev/davinci3 \
        --device=/dev/davinci4 \
        --device=/dev/davinci5 \
        --device=/dev/davinci6 \
        --device=/dev/davinci7 \
        --device=/dev/davinci_manager \
        --device=/dev/devmm_svm \
        --device=/dev/hisi_hdc \
        -v /usr/local/sbin/:/usr/local/sbin/ \
        -v /var/log/npu/slog/:/var/log/npu/slog \
        -v /var/log/npu/profiling/:/var/log/npu/profiling \
        -v /var/log/npu/dump/:/var/log/npu/dump \
        -v /var/log/npu/:/usr/slog \
        -v /etc/hccn.conf:/etc/hccn.conf \
        -v /usr/local/bin/npu-smi:/usr/local/bin/npu-smi \
        -v /usr/local/dcmi:/usr/local/dcmi \
        -v /usr/local/Ascend/driver:/usr/local/Ascend/driver \
        -v /etc/ascend_install.info:/etc/ascend_install.info \
        -v /etc/vnpu.cfg:/etc/vnpu.cfg \
        --shm-size="250g" \
        hub.oepkgs.net/oedeploy/openeuler/aarch64/mindspore:latest \
        bash
'''

# 000_744bb2758c81c62a.txt, section "设置环境变量".
RUNBOOK_000_ENV = r'''
source /usr/local/Ascend/ascend-toolkit/set_env.sh

export ASCEND_CUSTOM_PATH=$ASCEND_HOME_PATH/../
export GLOO_SOCKET_IFNAME=enp189s0f0 # ifconfig查找ip对应网卡的网卡名
export HCCL_SOCKET_IFNAME=enp189s0f0 # ifconfig查找ip对应网卡的网卡名
export TP_SOCKET_IFNAME=enp189s0f0 # ifconfig查找ip对应网卡的网卡名
export MS_ENABLE_LCCL=off
export HCCL_OP_EXPANSION_MODE=AIV
export MS_ALLOC_CONF=enable_vmm:true
export ASCEND_RT_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
export RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1
export vLLM_MODEL_BACKEND=MindFormers
export MINDFORMERS_MODEL_CONFIG=/path/to/research/deepseek3/deepseek_r1_671b/predict_deepseek_r1_671b_w8a8.yaml
'''

# 000_744bb2758c81c62a.txt, section "多节点间集群" (head example and worker form).
RUNBOOK_000_RAY_HEAD = "ray start --head --port=6379"
RUNBOOK_000_RAY_WORKER = "ray start --address=<head_node_ip>:<port>"

# 000_744bb2758c81c62a.txt, section "启动服务" / "执行示例" (主节点).
RUNBOOK_000_SERVE = r'''
vllm-mindspore serve --model="/path/to/save/deepseek_r1_w8a8" --trust_remote_code --max-num-seqs=256 --max_model_len=32768  --max-num-batched-tokens=4096 --block-size=128 --gpu-memory-utilization=0.9 --tensor-parallel-size 16
'''  # noqa: E501 (runbook text, verbatim)

# 001_a290ee50c168c379.txt, section "4.2 启动容器" (first form).
RUNBOOK_001_DOCKER_RUN = r'''
docker run -itd --privileged  --name=mindie-dsv3-w8a8 --net=host \
--shm-size 500g \
--device=/dev/davinci0 \
--device=/dev/davinci1 \
--device=/dev/davinci2 \
--device=/dev/davinci3 \
--device=/dev/davinci4 \
--device=/dev/davinci5 \
--device=/dev/davinci6 \
--device=/dev/davinci7 \
--device=/dev/davinci_manager \
--device=/dev/hisi_hdc \
--device /dev/devmm_svm \
-v /usr/local/Ascend/driver:/usr/local/Ascend/driver \
-v /usr/local/Ascend/firmware:/usr/local/Ascend/firmware \
-v /usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi \
-v /usr/local/sbin:/usr/local/sbin \
-v /etc/hccn.conf:/etc/hccn.conf \
-v /data:/data \
-v /data2:/data2 \
mindie:2.0.T9.B020-800I-A2-py3.11-openeuler24.03-lts-aarch64
'''

# 001_a290ee50c168c379.txt, section "4.3 设置变量".
RUNBOOK_001_ENV = r'''
source /usr/local/Ascend/ascend-toolkit/set_env.sh
source /usr/local/Ascend/nnal/atb/set_env.sh
source /usr/local/Ascend/atb-models/set_env.sh
source /usr/local/Ascend/mindie/set_env.sh
 # 通信变量
export ATB_LLM_HCCL_ENABLE=1
export ATB_LLM_COMM_BACKEND="hccl"
export HCCL_CONNECT_TIMEOUT=7200
export WORLD_SIZE=16 # 总卡数
export HCCL_EXEC_TIMEOUT=0
export MIES_CONTAINER_IP=192.168.0.20 # (物理机中使用ifconfig 查看)
export RANKTABLEFILE=/data/hm/hccl_2s_16p.json # (rank_table_file.json 的路径,生成详见第3节)
export HCCL_DETERMINISTIC=true
export NPU_MEMORY_FRACTION=0.95 # 显存比
export PYTORCH_NPU_ALLOC_CONF=expandable_segments:True # 虚拟内存
export ASDOPS_LOG_LEVEL=ERROR	# 日志等级
export ASDOPS_LOG_TO_STDOUT=1	# 是否打屏
export MINDIE_LOG_LEVEL=ERROR
export MINDIE_LOG_TO_STDOUT=1	# 是否打屏
export ATB__LOG_LEVEL=ERROR # atb日志等级
export ATB_LOG_TO_STDOUT=1
'''
# Runbook 001 §6.1: "所有机器的配置应该保持一致，除了环境变量的`MIES_CONTAINER_IP`为本机ip地址".
RUNBOOK_001_PER_NODE_ENV = {"MIES_CONTAINER_IP"}

# 001_a290ee50c168c379.txt, section "6.2 修改服务化参数" (the sed form).
RUNBOOK_001_CONFIG_SED = r'''
sed -i 's/"ipAddress"[[:space:]]*:[[:space:]]*".*",/"ipAddress" : "192.168.0.20",/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"port"[[:space:]]*:[[:space:]]*.*,/"port" : 1025,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"httpsEnabled"[[:space:]]*:[[:space:]]*.*,/"httpsEnabled" : false,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"multiNodesInferEnabled"[[:space:]]*:[[:space:]]*.*,/"multiNodesInferEnabled" : true,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"interCommTLSEnabled"[[:space:]]*:[[:space:]]*.*,/"interCommTLSEnabled" : false,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"interNodeTLSEnabled"[[:space:]]*:[[:space:]]*.*,/"interNodeTLSEnabled" : false,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"npuDeviceIds"[[:space:]]*:[[:space:]]*\[\[.*\]\],/"npuDeviceIds" : [[0,1,2,3,4,5,6,7]],/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"modelName"[[:space:]]*:[[:space:]]*".*",/"modelName" : "DeepSeek-V3-0324",/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"modelWeightPath"[[:space:]]*:[[:space:]]*".*",/"modelWeightPath" : "\/data2\/DeepSeek-V3-0324-w8a8",/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"worldSize"[[:space:]]*:[[:space:]]*.*,/"worldSize" : 8,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxPrefillBatchSize"[[:space:]]*:[[:space:]]*.*,/"maxPrefillBatchSize" : 10,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxSeqLen"[[:space:]]*:[[:space:]]*.*,/"maxSeqLen" : 24576,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxInputTokenLen"[[:space:]]*:[[:space:]]*.*,/"maxInputTokenLen" : 16384,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxPrefillTokens"[[:space:]]*:[[:space:]]*.*,/"maxPrefillTokens" : 16384,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxBatchSize"[[:space:]]*:[[:space:]]*.*,/"maxBatchSize" : 200,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
sed -i 's/"maxIterTimes"[[:space:]]*:[[:space:]]*.*,/"maxIterTimes" : 8192,/' /usr/local/Ascend/mindie/latest/mindie-service/conf/config.json
'''  # noqa: E501 (runbook text, verbatim)
# Where each key the runbook edits lives in MindIE's config.json
# (docs/formats.md §3a, the key-path table).
MINDIE_KEY_PATHS = {
    "ipAddress": ("ServerConfig", "ipAddress"),
    "port": ("ServerConfig", "port"),
    "httpsEnabled": ("ServerConfig", "httpsEnabled"),
    "interCommTLSEnabled": ("ServerConfig", "interCommTLSEnabled"),
    "multiNodesInferEnabled": ("BackendConfig", "multiNodesInferEnabled"),
    "interNodeTLSEnabled": ("BackendConfig", "interNodeTLSEnabled"),
    "npuDeviceIds": ("BackendConfig", "npuDeviceIds"),
    "modelName": ("BackendConfig", "ModelDeployConfig", "ModelConfig", 0, "modelName"),
    "modelWeightPath": ("BackendConfig", "ModelDeployConfig", "ModelConfig", 0, "modelWeightPath"),
    "worldSize": ("BackendConfig", "ModelDeployConfig", "ModelConfig", 0, "worldSize"),
    "maxSeqLen": ("BackendConfig", "ModelDeployConfig", "maxSeqLen"),
    "maxInputTokenLen": ("BackendConfig", "ModelDeployConfig", "maxInputTokenLen"),
    "maxPrefillBatchSize": ("BackendConfig", "ScheduleConfig", "maxPrefillBatchSize"),
    "maxPrefillTokens": ("BackendConfig", "ScheduleConfig", "maxPrefillTokens"),
    "maxBatchSize": ("BackendConfig", "ScheduleConfig", "maxBatchSize"),
    "maxIterTimes": ("BackendConfig", "ScheduleConfig", "maxIterTimes"),
}
# Runbook 001 §6.3.
RUNBOOK_001_SERVE = r'''
chmod -R 750 /data2/DeepSeek-V3-0324-w8a8/
chmod 640 /data/hm/hccl_2s_16p.json

cd /usr/local/Ascend/mindie/latest/mindie-service
./bin/mindieservice_daemon
'''

# 002_f7811b85faf47f18.txt, section "步骤 1：安装 GPUStack 服务端".
RUNBOOK_002_SERVER_DOCKER_RUN = r'''
docker run -d --name gpustack \
    --restart=unless-stopped \
    --device /dev/davinci0 \
    --device /dev/davinci1 \
    --device /dev/davinci2 \
    --device /dev/davinci3 \
    --device /dev/davinci4 \
    --device /dev/davinci5 \
    --device /dev/davinci6 \
    --device /dev/davinci7 \
    --device /dev/davinci_manager \
    --device /dev/devmm_svm \
    --device /dev/hisi_hdc \
    -v /usr/local/dcmi:/usr/local/dcmi \
    -v /usr/local/bin/npu-smi:/usr/local/bin/npu-smi \
    -v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro \
    -v /usr/local/Ascend/firmware:/usr/local/Ascend/firmware:ro \
    -v /etc/hccn.conf:/etc/hccn.conf:ro \
    -v /etc/ascend_install.info:/etc/ascend_install.info:ro \
    -v gpustack-data:/var/lib/gpustack \
    -v /path/to/your/model:/path/to/your/model \
    --shm-size=1g \
    --network=host \
    --ipc=host \
    gpustack/gpustack:latest-npu
'''

# 002_f7811b85faf47f18.txt, section "步骤 2：安装 GPUStack 工作节点".
RUNBOOK_002_WORKER_DOCKER_RUN = r'''
docker run -d --name gpustack \
    --restart=unless-stopped \
    --device /dev/davinci0 \
    --device /dev/davinci1 \
    --device /dev/davinci2 \
    --device /dev/davinci3 \
    --device /dev/davinci4 \
    --device /dev/davinci5 \
    --device /dev/davinci6 \
    --device /dev/davinci7 \
    --device /dev/davinci_manager \
    --device /dev/devmm_svm \
    --device /dev/hisi_hdc \
    -v /usr/local/dcmi:/usr/local/dcmi \
    -v /usr/local/bin/npu-smi:/usr/local/bin/npu-smi \
    -v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro \
    -v /usr/local/Ascend/firmware:/usr/local/Ascend/firmware:ro \
    -v /etc/hccn.conf:/etc/hccn.conf:ro \
    -v /etc/ascend_install.info:/etc/ascend_install.info:ro \
    -v gpustack-data:/var/lib/gpustack \
    -v /path/to/your/model:/path/to/your/model \
    --shm-size=1g \
    --network=host \
    --ipc=host \
    gpustack/gpustack:latest-npu \
    --server-url http://your_gpustack_server_ip_or_hostname \
    --token your_gpustack_token
'''

# 002_f7811b85faf47f18.txt, section "步骤 4：部署 DeepSeek R1 模型" (items 3-7).
RUNBOOK_002_BACKEND_PARAMETERS = [
    "--data-parallel-size=4",
    "--tensor-parallel-size=8",
    "--moe-tensor-parallel-size=1",
    "--moe-expert-parallel-size=32",
    "--npu-memory-fraction=0.95",
]

# 003_0315b5ee7550cb6b.txt, section "启动脚本" (设置环境变量&启动ray进程).
RUNBOOK_003_ENV = r'''
export vLLM_MODEL_BACKEND=MindFormers
export MS_ENABLE_LCCL=off
export ASCEND_RT_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
export GLOO_SOCKET_IFNAME=enp125s0f0
export TP_SOCKET_IFNAME=enp125s0f0
export MS_SUBMODULE_LOG_v="{PARSER:2,ANALYZER:2}"
export DEVICE_NUM_PER_NODE=8

# 300I Duo 新增
export MS_ENABLE_INTERNAL_BOOST=off
export MS_ENABLE_TRACE_MEMORY=on
export DISABLE_SHAPE_RESAHPE=on
export MS_DEV_RUNTIME_CONF="only_local_comm:true"
export MS_ALLOC_CONF=enable_vmm:true
export MS_INTERNAL_ENABLE_CUSTOM_KERNEL_LIST=AddRmsNorm,RmsNormQuant,InferenceSwiGLU,TransposeBatchMatmulTranspose
export VLLM_PP_LAYER_PARTITION="31,30"  #pp并行层数设置

# 设置为predict_ds_671b.yaml的绝对路径
export MINDFORMERS_MODEL_CONFIG=/workspace/predict_deepseek_r1_671b_300iduo.yaml
'''
# Same section: "# 主节点" / "#从节点".
RUNBOOK_003_RAY_HEAD = "ray start --head --port=6333"
RUNBOOK_003_RAY_WORKER = "ray start --address=xxx.xxx.xxx.xxx:6333"

# 003_0315b5ee7550cb6b.txt, section "启动服务化".
RUNBOOK_003_SERVE = r'''
vllm-mindspore serve "/home/ckpt/deepseek_r1_671b" --trust-remote-code --no-enable-prefix-caching --dtype float16 --tensor-parallel-size=8 --pipeline_parallel_size=2 --max-num-seqs=256 --block-size=128 --gpu-memory-utilization=0.8 --max-num-batched-tokens=16384 --max-model-len=32768 --distributed-executor-backend=ray > vllm.txt 2>&1
'''  # noqa: E501 (runbook text, verbatim)

# 004_014e9801958552dd.txt, section "1. 创建 Docker 容器（可选）".
RUNBOOK_004_DOCKER_RUN = r'''
docker run -it \
  --net=host \
  --entrypoint /bin/bash \
  --shm-size=500g \
  --device=/dev/davinci0 \
  --device=/dev/davinci1 \
  --device=/dev/davinci2 \
  --device=/dev/davinci3 \
  --device=/dev/davinci4 \
  --device=/dev/davinci5 \
  --device=/dev/davinci6 \
  --device=/dev/davinci7 \
  --device=/dev/davinci_manager \
  --device=/dev/devmm_svm \
  --device=/dev/hisi_hdc \
  --privileged=true \
  -v /usr/local/Ascend/driver:/usr/local/Ascend/driver \
  -v /usr/local/Ascend/add-ons/:/usr/local/Ascend/add-ons \
  -v /usr/local/sbin/:/usr/local/sbin \
  -v /usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi \
  -v /usr/log/npu/conf/slog/slog.conf:/var/log/npu/conf/slog/slog.conf \
  -v /var/log/npu/slog/:/var/log/npu/slog/ \
  -v /var/log/npu/profiling/:/var/log/npu/profiling/ \
  -v /var/log/npu/dump/:/var/log/npu/dump/ \
  -v /var/log/npu/:/usr/slog \
  -v /lib/modules:/lib/modules \
  crpi-4crprmm5baj1v8iv.cn-hangzhou.personal.cr.aliyuncs.com/lmdeploy_dlinfer/ascend:a2-latest
'''

# 004_014e9801958552dd.txt, sections "2.2 启动 Head 节点" and "2.3 Worker 节点加入集群".
RUNBOOK_004_ENV_HEAD = r'''
# Head node
export GLOO_SOCKET_IFNAME=IFNAME
export TP_SOCKET_IFNAME=IFNAME
export HCCL_IF_IP=NODE_IP
export RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1

ray start --head --port=PORT
'''
RUNBOOK_004_ENV_WORKER = r'''
# Worker node
export GLOO_SOCKET_IFNAME=IFNAME
export TP_SOCKET_IFNAME=IFNAME
export HCCL_IF_IP=NODE_IP
export RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1

ray start --address=HEAD_NODE_IP:PORT --node-ip-address=NODE_IP
'''
# 004 §2.1: HCCL_IF_IP is the node's own IP ("注意是 IP，不是网卡名").
RUNBOOK_004_PER_NODE_ENV = {"HCCL_IF_IP"}

# 004_014e9801958552dd.txt, section "4.1 启动 API 服务（在 Head 节点执行）".
RUNBOOK_004_SERVE = r'''
export ASCEND_RANK_TABLE_FILE_PATH=/path/to/rank_table.json

lmdeploy serve api_server \
  $CONTAINER_MODEL_PATH \
  --backend pytorch \
  --device ascend \
  --eager-mode \
  --tp 16
'''

# 004_014e9801958552dd.txt, section "3. 配置 Rank Table" (2 devices per server shown).
RUNBOOK_004_RANK_TABLE = r'''
{
  "status": "completed",
  "version": "1.0",
  "server_count": "2",
  "server_list": [
    {
      "server_id": "node_0",
      "device": [
        {
          "device_id": "0",
          "device_ip": "192.168.1.8",
          "device_port": "16667",
          "rank_id": "0"
        },
        {
          "device_id": "1",
          "device_ip": "192.168.1.9",
          "device_port": "16667",
          "rank_id": "1"
        }
      ]
    },
    {
      "server_id": "node_1",
      "device": [
        {
          "device_id": "0",
          "device_ip": "192.168.2.8",
          "device_port": "16667",
          "rank_id": "2"
        },
        {
          "device_id": "1",
          "device_ip": "192.168.2.9",
          "device_port": "16667",
          "rank_id": "3"
        }
      ]
    }
  ]
}
'''


# --------------------------------------------------------------------------
# Parsers shared by runbook text and rendered files
# --------------------------------------------------------------------------

def parse_exports(text: str) -> list[tuple[str, str]]:
    """`export NAME=VALUE` lines as (name, value), shell quoting and trailing
    comments removed, in order."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("export "):
            continue
        for token in shlex.split(stripped, comments=True)[1:]:
            name, sep, value = token.partition("=")
            assert sep, f"export without a value: {line!r}"
            out.append((name, value))
    return out


def parse_sources(text: str) -> list[str]:
    """Scripts a runbook block or an env file sources, in order."""
    return re.findall(r"(?:^|[;\s])source\s+([^\s;]+)", text, re.M)


def parse_serve(command: str, prefix: tuple[str, ...]) -> dict:
    """{flag: value} of a serve command: `--foo_bar` -> `--foo-bar`,
    `--flag value` -> value, boolean flags -> True, the first positional
    argument -> `--model`; shell redirections dropped (kept as `>`)."""
    tokens = shlex.split(command.replace("\\\n", " "))
    assert tuple(tokens[:len(prefix)]) == prefix, f"{command!r} does not start with {' '.join(prefix)}"
    rest = tokens[len(prefix):]
    flags: dict = {}
    positionals = []
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith(">") or token == "2>&1":
            if token == ">":
                flags[">"] = rest[i + 1]
                i += 1
            i += 1
            continue
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            name = "--" + name[2:].replace("_", "-")
            if not eq:
                if i + 1 < len(rest) and not rest[i + 1].startswith("-") and not rest[i + 1].startswith(">"):
                    value = rest[i + 1]
                    i += 1
                else:
                    value = True
            assert name not in flags, f"{name} given twice in {command!r}"
            flags[name] = value
        else:
            positionals.append(token)
        i += 1
    if positionals:
        assert "--model" not in flags, f"model given twice in {command!r}"
        assert len(positionals) == 1, f"unexpected positional arguments {positionals} in {command!r}"
        flags["--model"] = positionals[0]
    return flags


DOCKER_VALUE_FLAGS = {"--name", "--device", "-v", "--volume", "--shm-size", "--network", "--net", "--ipc",
                      "--restart", "--entrypoint", "-e", "--env", "--label"}


def parse_docker_run(text: str) -> dict:
    tokens = shlex.split(text.replace("\\\n", " "))
    assert tokens[:2] == ["docker", "run"], text
    out = {"name": None, "devices": [], "mounts": [], "shm_size": None, "network": None, "ipc": None,
           "privileged": False, "restart": None, "entrypoint": None, "env": [], "short": set(),
           "image": None, "args": []}
    i = 2
    while i < len(tokens):
        token = tokens[i]
        if out["image"] is not None:
            out["args"].append(token)
        elif token.startswith("--") and "=" in token:
            name, _, value = token.partition("=")
            _docker_flag(out, name, value)
        elif token in DOCKER_VALUE_FLAGS:
            _docker_flag(out, token, tokens[i + 1])
            i += 1
        elif token == "--privileged":
            out["privileged"] = True
        elif token.startswith("--"):
            raise AssertionError(f"unexpected docker flag {token}")
        elif token.startswith("-"):
            out["short"] |= set(token[1:])
        else:
            out["image"] = token
        i += 1
    return out


def _docker_flag(out: dict, name: str, value: str) -> None:
    if name == "--device":
        out["devices"].append(value)
    elif name in ("-v", "--volume"):
        out["mounts"].append(value)
    elif name in ("--network", "--net"):
        out["network"] = value
    elif name == "--privileged":
        out["privileged"] = value == "true"
    elif name in ("-e", "--env"):
        out["env"].append(value)
    elif name == "--label":
        pass
    else:
        out[name.lstrip("-").replace("-", "_")] = value


def rendered_docker_run(directory: Path, node: str) -> tuple[str, dict]:
    text = (directory / node / "docker-run.sh").read_text()
    lines = [line for line in text.splitlines() if line.startswith("docker run")]
    assert len(lines) == 1, f"expected one docker run line in {node}/docker-run.sh:\n{text}"
    return lines[0], parse_docker_run(lines[0])


def rendered_serve_command(directory: Path, node: str) -> str:
    text = (directory / node / "scripts" / "serve-start.sh").read_text()
    match = re.search(r'^\s*nohup (.*?) > "\$log_file" 2>&1 &\s*$', text, re.M)
    assert match, f"no `nohup <command> > \"$log_file\"` line in {node}/scripts/serve-start.sh:\n{text}"
    return match.group(1)


def ray_start_line(directory: Path, node: str) -> str:
    text = (directory / node / "scripts" / "ray-start.sh").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("ray start")]
    assert len(lines) == 1, text
    return lines[0]


def stack_nodes(stack: str) -> list[dict]:
    return load_stack_doc(stack)["config"][NS + "nodes"]


def node_ip(node: dict) -> str:
    return node.get("ip") or node["host"]


def set_path(document, path, value):
    for part in path[:-1]:
        document = document[part]
    document[path[-1]] = value


# --------------------------------------------------------------------------
# Serve commands
# --------------------------------------------------------------------------

SERVE_CASES = {
    # stack: (runbook command, command prefix, placeholders in the runbook text)
    "tp16-vllm-mindspore": (RUNBOOK_000_SERVE, ("vllm-mindspore", "serve"), {}),
    "tp8-pp2-300iduo": (RUNBOOK_003_SERVE, ("vllm-mindspore", "serve"), {}),
    "tp16-lmdeploy": (RUNBOOK_004_SERVE.split("\n\n", 1)[1], ("lmdeploy", "serve", "api_server"),
                      {"$CONTAINER_MODEL_PATH": "model.path"}),
}


# Flags the program passes beyond its runbook, each on purpose: prefix caching
# is said either way, as vLLM's default differs between its V0 (off) and V1 (on) engines.
SERVE_BEYOND_THE_RUNBOOK = {"tp16-vllm-mindspore": {"--enable-prefix-caching": True}}


def _stack_value(stack: str, dotted: str):
    section, key = dotted.split(".")
    return load_stack_doc(stack)["config"][NS + section][key]


@pytest.mark.parametrize("stack", sorted(SERVE_CASES))
def test_serve_command_has_exactly_the_runbook_flags(rendered, stack):
    runbook, prefix, placeholders = SERVE_CASES[stack]
    for placeholder, dotted in placeholders.items():
        runbook = runbook.replace(placeholder, _stack_value(stack, dotted))
    expected = parse_serve(runbook.strip(), prefix)
    expected.pop(">", None)
    expected.update(SERVE_BEYOND_THE_RUNBOOK.get(stack, {}))
    actual = parse_serve(rendered_serve_command(rendered[stack], "node0"), prefix)
    # The one departure: the serving API key (docs/security.md#endpoints),
    # which the runbooks do not set. LMDeploy takes it only as a flag; vLLM
    # reads it from its container env (VLLM_API_KEY), so no flag there.
    for flag, value in API_KEY_FLAGS.get(stack, {}).items():
        assert actual.pop(flag, None) == value, f"{stack}: serving API key flag {flag} {value} missing"
    missing = {k: v for k, v in expected.items() if k not in actual}
    wrong = {k: (v, actual[k]) for k, v in expected.items() if k in actual and actual[k] != v}
    extra = {k: v for k, v in actual.items() if k not in expected}
    assert not missing and not wrong and not extra, (
        f"{stack}: runbook flags missing {missing}, different (runbook, rendered) {wrong}, not in the runbook {extra}")


# Flags the program adds to the runbooks' serve commands for the API key.
API_KEY_FLAGS = {"tp16-lmdeploy": {"--api-keys": "$ASCEND_INFERENCE_API_KEY"}}


@pytest.mark.parametrize("stack", sorted(SERVE_CASES))
def test_serve_runs_on_the_head_only(rendered, stack):
    assert (rendered[stack] / "node0" / "scripts" / "serve-start.sh").is_file()
    assert not (rendered[stack] / "node1" / "scripts" / "serve-start.sh").exists()


def test_300iduo_serve_logs_to_the_runbooks_file(rendered):
    # Runbook 003: `... > vllm.txt 2>&1`.
    text = (rendered["tp8-pp2-300iduo"] / "node0" / "scripts" / "serve-start.sh").read_text()
    assert re.search(r'log_file="\$run_dir/vllm\.txt"', text), text


def test_mindie_daemon_starts_on_every_node_from_its_install_dir(rendered):
    # Runbook 001 §6.3: `cd /usr/local/Ascend/mindie/latest/mindie-service; ./bin/mindieservice_daemon`
    # on every server, after the config.json is in place.
    cd_line, daemon = [line.strip() for line in RUNBOOK_001_SERVE.strip().splitlines()[-2:]]
    for node in ("node0", "node1"):
        text = (rendered["tp16-mindie"] / node / "scripts" / "serve-start.sh").read_text()
        assert cd_line in text, text
        assert rendered_serve_command(rendered["tp16-mindie"], node) == daemon
        # The config.json is the image's own, edited in place before (config-edit), not copied over.
        conf = "/usr/local/Ascend/mindie/latest/mindie-service/conf/config.json"
        assert conf not in text, text
        edit = (rendered["tp16-mindie"] / node / "scripts" / "config-edit.sh").read_text()
        assert re.search(rf"^python3 - {re.escape(conf)} \S+/mindie/config-edits\.json ", edit, re.M), edit


def test_mindie_weights_and_rank_table_permissions(rendered):
    # Runbook 001 §6.3: chmod -R 750 <weights>; chmod 640 <rank table>.
    text = (rendered["tp16-mindie"] / "node0" / "scripts" / "weights.sh").read_text()
    assert re.search(r'chmod -R 750 "\$MODEL"', text) and "MODEL=/data2/DeepSeek-V3-0324-w8a8" in text, text
    table = rendered["tp16-mindie"] / "node0" / "files" / "data" / "hm" / "hccl_2s_16p.json"
    assert table.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------
# Env files
# --------------------------------------------------------------------------

ENV_CASES = {
    # stack: (runbook env block, per-node variables (checked against the node IP), placeholders)
    "tp16-vllm-mindspore": (RUNBOOK_000_ENV, set(), {}),
    "tp16-mindie": (RUNBOOK_001_ENV, RUNBOOK_001_PER_NODE_ENV, {}),
    "tp8-pp2-300iduo": (RUNBOOK_003_ENV, set(), {}),
    "tp16-lmdeploy": (RUNBOOK_004_ENV_HEAD.split("\n\nray start")[0] + "\n" + RUNBOOK_004_SERVE.split("\n\n")[0],
                      RUNBOOK_004_PER_NODE_ENV,
                      {"IFNAME": "network.socket_ifname", "/path/to/rank_table.json": "engine.rank_table_path"}),
}


def test_runbook_004_head_and_worker_env_blocks_agree():
    head = parse_exports(RUNBOOK_004_ENV_HEAD)
    assert head == parse_exports(RUNBOOK_004_ENV_WORKER)
    assert [name for name, _ in head] == ["GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "HCCL_IF_IP",
                                          "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"]


# Variables the program sets beyond its runbook, each on purpose.
BEYOND_THE_RUNBOOK = {
    # Runbook 001's MindIE reads RANKTABLEFILE; current MindIE-LLM reads RANK_TABLE_FILE.
    # ATB_LOG_LEVEL is the name ATB reads; the runbook's ATB__LOG_LEVEL is a typo.
    "tp16-mindie": {"RANK_TABLE_FILE", "ATB_LOG_LEVEL"},
}
# Runbook variables the program renders under another name, each on purpose: name -> the one rendered instead.
RUNBOOK_TYPOS = {
    "tp16-mindie": {"ATB__LOG_LEVEL": "ATB_LOG_LEVEL"},
    # The stack pins vllm-mindspore 0.4.0 (runbook 003's vLLM 0.9.1), which reads the new name.
    "tp8-pp2-300iduo": {"vLLM_MODEL_BACKEND": "VLLM_MS_MODEL_BACKEND"},
}
# Runbook variables the program does not render, each on purpose (docs/runbooks.md says why).
WITHOUT_A_READER = {
    # Read only by build scripts (MindSpore's CMake), nothing at run time.
    "tp16-vllm-mindspore": {"ASCEND_CUSTOM_PATH"},
    # DISABLE_SHAPE_RESAHPE: no reader in MindSpore or vllm-mindspore. MINDFORMERS_MODEL_CONFIG:
    # vllm-mindspore 0.4.0 raises at import when it is set.
    "tp8-pp2-300iduo": {"DISABLE_SHAPE_RESAHPE", "MINDFORMERS_MODEL_CONFIG"},
}
# Runbook values the program changes, each on purpose: MindSpore reads
# MS_ENABLE_TRACE_MEMORY only as "off" (its 310P scripts export off), so `on` does nothing.
CHANGED_VALUES = {"tp8-pp2-300iduo": {"MS_ENABLE_TRACE_MEMORY": "off"}}


@pytest.mark.parametrize("stack", sorted(ENV_CASES))
def test_env_file_has_exactly_the_runbook_variables(rendered, stack):
    block, per_node, placeholders = ENV_CASES[stack]
    expected = dict(parse_exports(block))
    for name, value in expected.items():
        if value in placeholders:
            expected[name] = str(_stack_value(stack, placeholders[value]))
    for typo, right in RUNBOOK_TYPOS.get(stack, {}).items():
        expected[right] = expected.pop(typo)
    for name in WITHOUT_A_READER.get(stack, set()):
        del expected[name]
    expected.update(CHANGED_VALUES.get(stack, {}))
    for node in stack_nodes(stack):
        env_text = (rendered[stack] / node["name"] / "env.sh").read_text()
        actual = dict(parse_exports(env_text))
        want = dict(expected)
        for name in per_node:
            want[name] = node_ip(node)
        missing = sorted(set(want) - set(actual))
        wrong = {k: (want[k], actual[k]) for k in want if k in actual and actual[k] != want[k]}
        extra = sorted(set(actual) - set(want) - BEYOND_THE_RUNBOOK.get(stack, set()))
        assert not missing and not wrong and not extra, (
            f"{stack} {node['name']}: missing {missing}, different (runbook, rendered) {wrong}, "
            f"not in the runbook {extra}")


@pytest.mark.parametrize("stack", sorted(ENV_CASES))
def test_env_file_keeps_the_runbook_order_and_sources(rendered, stack):
    block = ENV_CASES[stack][0]
    runbook_order = [name for name, _ in parse_exports(block)]
    env_text = (rendered[stack] / "node0" / "env.sh").read_text()
    typos = RUNBOOK_TYPOS.get(stack, {})
    runbook_order = [typos.get(name, name) for name in runbook_order
                     if name not in WITHOUT_A_READER.get(stack, set())]
    rendered_order = [name for name, _ in parse_exports(env_text) if name in runbook_order]
    assert rendered_order == runbook_order
    assert parse_sources(env_text) == parse_sources(block)


def test_mindie_env_per_node_value_is_the_node_ip(rendered):
    for node in stack_nodes("tp16-mindie"):
        env = dict(parse_exports((rendered["tp16-mindie"] / node["name"] / "env.sh").read_text()))
        assert env["MIES_CONTAINER_IP"] == node_ip(node)
        assert env["WORLD_SIZE"] == "16"
        assert env["RANKTABLEFILE"] == "/data/hm/hccl_2s_16p.json"
        # Current MindIE-LLM reads the other spelling; both point at the same table.
        assert env["RANK_TABLE_FILE"] == env["RANKTABLEFILE"]


def test_300iduo_pp_layer_partition(rendered):
    for node in ("node0", "node1"):
        env_text = (rendered["tp8-pp2-300iduo"] / node / "env.sh").read_text()
        assert dict(parse_exports(env_text))["VLLM_PP_LAYER_PARTITION"] == "31,30"


def test_gpustack_needs_no_env_variables(rendered):
    # Runbook 002 sets no environment variable: the containers carry everything.
    for node in stack_nodes("dp4-ep32-gpustack"):
        assert parse_exports((rendered["dp4-ep32-gpustack"] / node["name"] / "env.sh").read_text()) == []


# --------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------

# Every head gets --node-ip-address and --dashboard-host=127.0.0.1, every
# worker --node-ip-address (not in runbooks 000/003, only the workers' in 004):
# Ray on the node's cluster address, not its guess among the host's addresses
# (on a host with several NICs it may pick one that is not the rank table's),
# and its dashboard on loopback only (docs/security.md#ray).
HEAD_FLAGS = " --node-ip-address=NODE_IP --dashboard-host=127.0.0.1"
WORKER_FLAG = " --node-ip-address=NODE_IP"

RAY_CASES = {
    # stack: (head line, worker line, placeholders -> "master" | "node" | literal)
    "tp16-vllm-mindspore": (RUNBOOK_000_RAY_HEAD + HEAD_FLAGS, RUNBOOK_000_RAY_WORKER + WORKER_FLAG,
                            {"<head_node_ip>": "master", "<port>": "6379", "NODE_IP": "node"}),
    "tp8-pp2-300iduo": (RUNBOOK_003_RAY_HEAD + HEAD_FLAGS, RUNBOOK_003_RAY_WORKER + WORKER_FLAG,
                        {"xxx.xxx.xxx.xxx": "master", "NODE_IP": "node"}),
    "tp16-lmdeploy": (RUNBOOK_004_ENV_HEAD.strip().splitlines()[-1] + HEAD_FLAGS,
                      RUNBOOK_004_ENV_WORKER.strip().splitlines()[-1],
                      {"HEAD_NODE_IP": "master", "NODE_IP": "node", "PORT": "6379"}),
}


@pytest.mark.parametrize("stack", sorted(RAY_CASES))
def test_ray_start_lines(rendered, stack):
    head, worker, placeholders = RAY_CASES[stack]
    nodes = stack_nodes(stack)
    for index, node in enumerate(nodes):
        line = head if index == 0 else worker
        # Longest placeholder first: HEAD_NODE_IP before NODE_IP.
        for placeholder in sorted(placeholders, key=len, reverse=True):
            value = placeholders[placeholder]
            value = node_ip(nodes[0]) if value == "master" else node_ip(node) if value == "node" else value
            line = line.replace(placeholder, value)
        assert ray_start_line(rendered[stack], node["name"]) == line
        script = (rendered[stack] / node["name"] / "scripts" / "ray-start.sh").read_text()
        # The env is set before Ray starts (runbook 000), and a stale Ray is stopped first (003).
        assert script.index("env.sh") < script.index("ray stop") < script.index("ray start"), script


def test_ray_ports_come_from_the_runbooks():
    assert load_stack_doc("tp8-pp2-300iduo")["config"][NS + "engine"]["ray_port"] == 6333
    assert load_stack_doc("tp16-vllm-mindspore")["config"][NS + "engine"]["ray_port"] == 6379


@pytest.mark.parametrize("stack", ["tp16-mindie", "dp4-ep32-gpustack"])
def test_no_ray_for_engines_without_it(rendered, stack):
    assert not list(rendered[stack].glob("*/scripts/ray-*.sh"))


# --------------------------------------------------------------------------
# docker run
# --------------------------------------------------------------------------

DOCKER_CASES = {
    # stack: {node: runbook docker run}; 003 has none and reuses 000's container (same engine).
    "tp16-vllm-mindspore": {"node0": RUNBOOK_000_DOCKER_RUN, "node1": RUNBOOK_000_DOCKER_RUN},
    "tp16-mindie": {"node0": RUNBOOK_001_DOCKER_RUN, "node1": RUNBOOK_001_DOCKER_RUN},
    "dp4-ep32-gpustack": {"node0": RUNBOOK_002_SERVER_DOCKER_RUN, "node1": RUNBOOK_002_WORKER_DOCKER_RUN,
                          "node2": RUNBOOK_002_WORKER_DOCKER_RUN, "node3": RUNBOOK_002_WORKER_DOCKER_RUN},
    "tp16-lmdeploy": {"node0": RUNBOOK_004_DOCKER_RUN, "node1": RUNBOOK_004_DOCKER_RUN},
}


# Runbook mounts the program fixes, each on purpose: runbook 004's slog.conf
# source is a path no Ascend host has; the driver puts it under /var/log/npu.
MOUNTS_FIXED = {"tp16-lmdeploy": {"/usr/log/npu/conf/slog/slog.conf:/var/log/npu/conf/slog/slog.conf":
                                  "/var/log/npu/conf/slog/slog.conf:/var/log/npu/conf/slog/slog.conf"}}
# Runbook images the program pins instead, each on purpose (docs/engine-versions.md):
# runbook 002's `latest-npu` is GPUStack 0.x, whose API the program does not speak;
# runbook 004's `a2-latest` names no LMDeploy release, and multi-node needs 0.8.0 to 0.14.x.
IMAGES_PINNED = {"dp4-ep32-gpustack": ("gpustack/gpustack:latest-npu", "gpustack/gpustack:v2.3.0"),
                 "tp16-lmdeploy": ("crpi-4crprmm5baj1v8iv.cn-hangzhou.personal.cr.aliyuncs.com/lmdeploy_dlinfer/"
                                   "ascend:a2-latest", "lmdeploy_dlinfer:a2-v0.14.0")}


@pytest.mark.parametrize("stack", sorted(DOCKER_CASES))
def test_docker_run_matches_the_runbook(rendered, stack):
    for node, runbook in DOCKER_CASES[stack].items():
        want = parse_docker_run(runbook.strip())
        fixed = MOUNTS_FIXED.get(stack, {})
        want["mounts"] = [fixed.get(m, m) for m in want["mounts"]]
        _, got = rendered_docker_run(rendered[stack], node)
        where = f"{stack} {node}"
        assert sorted(got["devices"]) == sorted(want["devices"]), where
        missing = [m for m in want["mounts"] if m not in got["mounts"]]
        assert not missing, f"{where}: runbook mounts missing from the rendered docker run: {missing}"
        assert got["shm_size"] == want["shm_size"], where
        assert got["network"] == "host" and want["network"] == "host", where
        assert got["ipc"] == want["ipc"], f"{where}: --ipc={want['ipc']} in the runbook, {got['ipc']} rendered"
        assert got["privileged"] == want["privileged"], where
        if stack in IMAGES_PINNED:
            assert (want["image"], got["image"]) == IMAGES_PINNED[stack], where
        else:
            assert got["image"] == want["image"], where
        if want["name"]:
            assert got["name"] == want["name"], where
        if want["restart"]:
            assert got["restart"] == want["restart"], where
        if want["entrypoint"]:
            assert got["entrypoint"] == want["entrypoint"], where
        assert "d" in got["short"], f"{where}: the container must run detached"


def test_docker_run_of_the_300iduo_stack_has_the_vllm_mindspore_devices_and_mounts(rendered):
    # Runbook 003 gives no docker run; its stack uses runbook 000's container,
    # less /etc/hccn.conf: a 300I Duo has no RoCE fabric and so no such file.
    want = parse_docker_run(RUNBOOK_000_DOCKER_RUN.strip())
    for node in ("node0", "node1"):
        _, got = rendered_docker_run(rendered["tp8-pp2-300iduo"], node)
        assert sorted(got["devices"]) == sorted(want["devices"])
        assert [m for m in want["mounts"] if m not in got["mounts"]] == ["/etc/hccn.conf:/etc/hccn.conf"]
        assert got["network"] == "host" and got["ipc"] == "host" and got["privileged"]
        assert got["args"] == ["bash"]


def test_vllm_mindspore_container_keeps_the_runbook_shell(rendered):
    want = parse_docker_run(RUNBOOK_000_DOCKER_RUN.strip())
    _, got = rendered_docker_run(rendered["tp16-vllm-mindspore"], "node0")
    assert got["args"] == want["args"] == ["bash"]
    assert {"i", "t"} <= got["short"]


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-mindie", "tp8-pp2-300iduo", "tp16-lmdeploy",
                                   "dp4-ep32-gpustack"])
def test_model_path_is_mounted_at_the_same_path(rendered, stack):
    path = load_stack_doc(stack)["config"][NS + "model"]["path"]
    for node in stack_nodes(stack):
        _, got = rendered_docker_run(rendered[stack], node["name"])
        assert container_mount_for(path, got["mounts"]) is not None, (
            f"{stack} {node['name']}: model path {path} is not mounted at the same path: {got['mounts']}")


# --------------------------------------------------------------------------
# GPUStack
# --------------------------------------------------------------------------

def test_gpustack_server_runs_its_builtin_worker_under_the_node_name(rendered):
    """GPUStack 2.x: the server uses the master's NPUs only with --enable-worker;
    it registers no token of its own (it writes one), and its worker is named as the node."""
    line, got = rendered_docker_run(rendered["dp4-ep32-gpustack"], "node0")
    assert got["args"] == ["--enable-worker", "--worker-name", "node0"]
    # 2.x workers start MindIE as a container through the host's docker socket.
    assert "/var/run/docker.sock:/var/run/docker.sock" in got["mounts"]
    assert "-e ASCEND_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" in line


def test_gpustack_worker_command(rendered):
    master = node_ip(stack_nodes("dp4-ep32-gpustack")[0])
    want = parse_docker_run(RUNBOOK_002_WORKER_DOCKER_RUN.strip())["args"]
    assert want == ["--server-url", "http://your_gpustack_server_ip_or_hostname", "--token", "your_gpustack_token"]
    for node in ("node1", "node2", "node3"):
        line, got = rendered_docker_run(rendered["dp4-ep32-gpustack"], node)
        # The runbook's `--token` departs (docs/security.md#endpoints): the token is the
        # container's GPUSTACK_TOKEN env, taken from docker's caller (`-e NAME`), never an argument.
        assert got["args"] == ["--server-url", f"http://{master}", "--worker-name", node]
        assert "GPUSTACK_TOKEN" in got["env"] and "--token" not in line
        assert "/var/run/docker.sock:/var/run/docker.sock" in got["mounts"]
        assert "your_gpustack_token" not in line


def test_gpustack_model_deployment_request(rendered):
    directory = rendered["dp4-ep32-gpustack"]
    found = list(directory.glob("node0/files/**/model-deployment.json"))
    assert len(found) == 1, found
    request = json.loads(found[0].read_text())
    assert request["backend"] == "MindIE"
    assert request["source"] == "local_path"
    assert request["local_path"] == "/path/to/your/model"
    assert request["name"] == "DeepSeek-R1"
    assert request["backend_parameters"] == RUNBOOK_002_BACKEND_PARAMETERS
    assert " ".join(request["backend_parameters"]) == (
        "--data-parallel-size=4 --tensor-parallel-size=8 --moe-tensor-parallel-size=1 "
        "--moe-expert-parallel-size=32 --npu-memory-fraction=0.95")
    # Only the server deploys the model.
    assert not list(directory.glob("node[123]/files/**/model-deployment.json"))


# --------------------------------------------------------------------------
# Rank tables
# --------------------------------------------------------------------------

def _check_rank_table_shape(table: dict, nodes: list[dict], *, device_keys: set, server_keys: set):
    assert set(table) == {"server_count", "server_list", "status", "version"}
    assert table["status"] == "completed"
    assert table["version"] == "1.0"
    assert table["server_count"] == str(len(nodes))
    assert len(table["server_list"]) == len(nodes)
    rank = 0
    for server, node in zip(table["server_list"], nodes, strict=True):
        assert set(server) == server_keys
        assert server["server_id"] == node_ip(node)
        assert [d["device_ip"] for d in server["device"]] == node["device_ips"]
        for local, device in enumerate(server["device"]):
            assert set(device) == device_keys
            assert device["device_id"] == str(local)
            assert device["rank_id"] == str(rank)
            rank += 1

    def strings(value):
        if isinstance(value, dict):
            return all(strings(v) for v in value.values())
        if isinstance(value, list):
            return all(strings(v) for v in value)
        return isinstance(value, str)

    assert strings(table), "every value of an HCCL rank table is a string"
    return rank


def test_mindie_rank_table(rendered):
    # Runbook 001 §3.2 format: container_ip on every server, equal to server_id.
    nodes = stack_nodes("tp16-mindie")
    table = json.loads((rendered["tp16-mindie"] / "rank_table.json").read_text())
    ranks = _check_rank_table_shape(table, nodes, device_keys={"device_id", "device_ip", "rank_id"},
                                    server_keys={"device", "server_id", "container_ip"})
    assert ranks == 16 and table["server_count"] == "2"
    for server in table["server_list"]:
        assert server["container_ip"] == server["server_id"]
    # First server = master.
    assert table["server_list"][0]["server_id"] == node_ip(nodes[0])
    # The same document on every node, at RANKTABLEFILE.
    for node in nodes:
        copy_on_node = rendered["tp16-mindie"] / node["name"] / "files" / "data" / "hm" / "hccl_2s_16p.json"
        assert json.loads(copy_on_node.read_text()) == table


def test_lmdeploy_rank_table(rendered):
    # Runbook 004 §3 format: device_port "16667" on every device, no container_ip.
    sample = json.loads(RUNBOOK_004_RANK_TABLE)
    nodes = stack_nodes("tp16-lmdeploy")
    table = json.loads((rendered["tp16-lmdeploy"] / "rank_table.json").read_text())
    device_keys = set(sample["server_list"][0]["device"][0])
    server_keys = set(sample["server_list"][0])
    assert device_keys == {"device_id", "device_ip", "device_port", "rank_id"}
    ranks = _check_rank_table_shape(table, nodes, device_keys=device_keys, server_keys=server_keys)
    assert ranks == 16
    assert {d["device_port"] for s in table["server_list"] for d in s["device"]} == {"16667"}
    assert set(table) == set(sample)
    for node in nodes:
        on_node = rendered["tp16-lmdeploy"] / node["name"] / "files" / "data" / "hm" / "rank_table.json"
        assert json.loads(on_node.read_text()) == table


# --------------------------------------------------------------------------
# MindIE config.json
# --------------------------------------------------------------------------

def runbook_001_config_edits() -> dict:
    edits = {}
    for line in RUNBOOK_001_CONFIG_SED.strip().splitlines():
        match = re.search(r"""/"(\w+)" : (.*?),/'""", line)
        assert match, line
        edits[match.group(1)] = json.loads(match.group(2).replace("\\/", "/"))
    return edits


def test_runbook_001_edits_are_the_documented_ones():
    edits = runbook_001_config_edits()
    assert set(edits) == set(MINDIE_KEY_PATHS)
    assert edits["npuDeviceIds"] == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert edits["modelWeightPath"] == "/data2/DeepSeek-V3-0324-w8a8"


def dotted(path: tuple) -> str:
    """("A", "B", 0, "c") -> "A.B[0].c", the edit list's path form."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _rendered_mindie_edits(rendered, node: str) -> list:
    found = list((rendered["tp16-mindie"] / node / "files").glob("**/mindie/config-edits.json"))
    assert len(found) == 1, found
    document = json.loads(found[0].read_text())
    assert document["file"] == "/usr/local/Ascend/mindie/latest/mindie-service/conf/config.json"
    return document["edits"]


@pytest.mark.parametrize("node_index", [0, 1])
def test_mindie_config_edits_per_node(rendered, node_index):
    """Exactly runbook 001 §6.2's 16 edits, at their real key paths, with its values."""
    node = stack_nodes("tp16-mindie")[node_index]
    edits = _rendered_mindie_edits(rendered, node["name"])
    expected = runbook_001_config_edits()
    expected["ipAddress"] = node_ip(node)  # the runbook's 192.168.0.20 is "本机ip地址"
    assert len(edits) == len({path for path, _ in edits}) == 16
    assert dict(edits) == {dotted(MINDIE_KEY_PATHS[key]): value for key, value in expected.items()}


@pytest.mark.parametrize("node_index", [0, 1])
def test_mindie_config_json_from_the_default_keeps_the_rest(rendered, node_index):
    """On an image holding MindIE's default config.json, the edit list gives
    the default with the runbook's 16 values and nothing else changed."""
    from ascend_inference.config_edit import apply_edits

    node = stack_nodes("tp16-mindie")[node_index]
    default = json.loads((FIXTURES / "mindie_config.default.json").read_text())
    expected = copy.deepcopy(default)
    edits = runbook_001_config_edits()
    edits["ipAddress"] = node_ip(node)
    for key, path in MINDIE_KEY_PATHS.items():
        set_path(expected, path, edits[key])
    config = apply_edits(default, _rendered_mindie_edits(rendered, node["name"]))
    assert config == expected
    server, backend = config["ServerConfig"], config["BackendConfig"]
    assert server["httpsEnabled"] is False and server["interCommTLSEnabled"] is False
    assert backend["multiNodesInferEnabled"] is True and backend["interNodeTLSEnabled"] is False
    assert backend["npuDeviceIds"] == [list(range(8))]


def test_mindie_edits_differ_only_in_ip_address(rendered):
    first, second = (dict(_rendered_mindie_edits(rendered, n)) for n in ("node0", "node1"))
    assert first.pop("ServerConfig.ipAddress") != second.pop("ServerConfig.ipAddress")
    assert first == second


# --------------------------------------------------------------------------
# MindFormers yaml (runbook 003)
# --------------------------------------------------------------------------

def _parse_yaml(file: Path):
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        tail = file.read_text()[-120:]
        pytest.fail(f"rendered {file.name} is not valid YAML ({error.problem}, {error.problem_mark}); "
                    f"it ends with: ...{tail!r}")


# The shipped 300I Duo stack pins vllm-mindspore 0.4.0, which reads no predict
# yaml; an image of the runbook's own era (before 0.4.0) still gets runbook
# 003's yaml written with `write_mindformers_yaml`.
RUNBOOK_003_YAML = "/workspace/predict_deepseek_r1_671b_300iduo.yaml"


@pytest.fixture(scope="module")
def rendered_pre_0_4(tmp_path_factory) -> dict[str, Path]:
    doc = load_stack_doc("tp8-pp2-300iduo")
    doc["config"][NS + "container"]["engine_version"] = "0.3.0"
    doc["config"][NS + "engine"].update(mindformers_model_config=RUNBOOK_003_YAML, write_mindformers_yaml=True)
    base = tmp_path_factory.mktemp("pre-0.4")
    target = base / "out"
    result = run_cli("render", "--stack", write_stack(base, "tp8-pp2-300iduo-pre-0-4", doc), "--out", target)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"tp8-pp2-300iduo": target}


def _rendered_mindformers_yaml(rendered, node: str) -> tuple[Path, str]:
    """The host file the program writes for the yaml, found through the
    container's -v mount that shows it at MINDFORMERS_MODEL_CONFIG's path."""
    path = RUNBOOK_003_YAML
    line = (rendered["tp8-pp2-300iduo"] / node / "docker-run.sh").read_text().splitlines()[-1]
    argv = shlex.split(line)
    mounts = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-v"]
    hosts = [m.split(":")[0] for m in mounts if m.split(":")[1] == path]
    assert hosts, f"no -v mount shows {path} in the container of {node}: {mounts}"
    file = rendered["tp8-pp2-300iduo"] / node / "files" / hosts[0].lstrip("/")
    assert file.is_file(), f"{hosts[0]} (mounted at {path}) not rendered for {node}"
    return file, path


@pytest.mark.parametrize("node", ["node0", "node1"])
def test_mindformers_yaml_parses_with_the_runbook_layout(rendered_pre_0_4, node):
    file, _ = _rendered_mindformers_yaml(rendered_pre_0_4, node)
    document = _parse_yaml(file)
    assert document["parallel_config"]["model_parallel"] == 8
    assert document["parallel_config"]["pipeline_stage"] == 2
    assert document["model"]["model_config"]["quantization_config"]["quant_method"] == "a8w4"
    assert document["model"]["model_config"]["num_layers"] == 61
    assert document["moe_config"]["expert_num"] == 256


def test_mindformers_yaml_equals_the_runbooks(rendered_pre_0_4):
    file, _ = _rendered_mindformers_yaml(rendered_pre_0_4, "node0")
    want = yaml.safe_load((FIXTURES / "runbook003_predict_deepseek_r1_671b_300iduo.yaml").read_text())
    assert _parse_yaml(file) == want


def test_mindformers_yaml_is_what_the_env_points_to(rendered_pre_0_4):
    _, path = _rendered_mindformers_yaml(rendered_pre_0_4, "node0")
    env = dict(parse_exports((rendered_pre_0_4["tp8-pp2-300iduo"] / "node0" / "env.sh").read_text()))
    assert env["MINDFORMERS_MODEL_CONFIG"] == path == "/workspace/predict_deepseek_r1_671b_300iduo.yaml"
