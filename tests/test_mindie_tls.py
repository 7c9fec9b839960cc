"""MindIE's HTTPS and inter-node TLS kept on when the stack asks
(docs/security.md#mindie-https-and-tls): the config.json edits and mounts for
the stack's TLS files, readiness and smoke over https with the CA checked
(never -k) against a 127.0.0.1 server of this test, the runbook's plain text
only as an explicit choice named as a warning, and the bad combinations
refused with one line each.

The test's certificates are made here with `cryptography` (a CA, a server
certificate for 127.0.0.1, a client certificate); the server serves a fixed
number of requests, so nothing waits on the clock.
"""
from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from ascend_inference.engines.base import HttpCheck
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template
from ascendctl.preview.stack import record_stack
from tests.conftest import NS, load_stack_doc, run_cli, write_stack
from tests.readiness import run_readiness
from tests.test_bad_input import one_error_line

INSTALL = "/usr/local/Ascend/mindie/latest/mindie-service"
TLS = {"ca": "/etc/mindie-tls/ca.pem", "cert": "/etc/mindie-tls/server.pem", "key": "/etc/mindie-tls/server.key.pem",
       "key_unlock_file": "/etc/mindie-tls/key_pwd.txt", "kmc_master": "/etc/mindie-tls/ksfa",
       "kmc_standby": "/etc/mindie-tls/ksfb"}
SWITCHES = ("https_enabled", "inter_comm_tls_enabled", "inter_node_tls_enabled")


def mindie_stack(tmp_path: Path, label: str, *, drop: tuple[str, ...] = (), **engine) -> Path:
    doc = load_stack_doc("tp16-mindie")
    section = doc["config"][NS + "engine"]
    section.update(engine)
    for key in drop:
        section.pop(key, None)
    return write_stack(tmp_path, label, doc)


def all_on(tmp_path: Path, label: str = "tls", **tls) -> Path:
    return mindie_stack(tmp_path, label, https_enabled=True, inter_comm_tls_enabled=True,
                        inter_node_tls_enabled=True, tls={**TLS, **tls})


def edits_of(loaded, index: int = 0) -> dict:
    ctx = render_node(loaded, index)
    edits_file = next(content for path, content in ctx.files.items() if path.endswith("config-edits.json"))
    return dict(json.loads(edits_file)["edits"])


# ---------------------------------------------------------------- rendering

@pytest.mark.pure
def test_tls_on_keeps_mindie_s_switches_and_points_its_keys_at_the_stack_files(tmp_path):
    loaded = load_stack(str(all_on(tmp_path)))
    edits = edits_of(loaded)
    assert edits["ServerConfig.httpsEnabled"] is True
    assert edits["ServerConfig.interCommTLSEnabled"] is True
    assert edits["BackendConfig.interNodeTLSEnabled"] is True
    # MindIE's own default places (data/mindie_config.default.json), relative to the install path.
    assert edits["ServerConfig.tlsCaPath"] == "security/ca/" and edits["ServerConfig.tlsCaFile"] == ["ca.pem"]
    assert edits["ServerConfig.tlsCert"] == "security/certs/server.pem"
    assert edits["ServerConfig.tlsPkPwd"] == "security/pass/key_pwd.txt"
    assert edits["BackendConfig.interNodeTlsCaFiles"] == ["ca.pem"]
    assert edits["BackendConfig.interNodeTlsPkPwd"] == "security/grpc/pass/mindie_server_key_pwd.txt"
    assert edits["ServerConfig.interCommPk"] == "security/grpc/keys/server.key.pem"
    assert edits["ServerConfig.kmcKsfMaster"] == "tools/pmt/master/ksfa"
    assert edits["BackendConfig.interNodeKmcKsfStandby"] == "tools/pmt/standby/ksfb"
    # Every key set exists in MindIE's default config.json (the edit step refuses one that does not).
    default = json.loads((Path(__file__).parents[1] / "ascend_inference/engines/data/mindie_config.default.json")
                         .read_text())
    for path in edits:
        section, _, key = path.partition(".")
        if "." not in key and "[" not in key:
            assert key in default[section], path
    mounts = {(m.container, m.host, m.read_only) for m in render_node(loaded, 1).container.mounts}
    assert (f"{INSTALL}/security/certs/server.pem", TLS["cert"], True) in mounts
    assert (f"{INSTALL}/security/grpc/pass/mindie_server_key_pwd.txt", TLS["key_unlock_file"], True) in mounts
    assert (f"{INSTALL}/tools/pmt/standby/ksfb", TLS["kmc_standby"], True) in mounts
    assert (TLS["ca"], TLS["ca"], True) in mounts


@pytest.mark.pure
def test_readiness_and_smoke_go_over_https_with_the_ca_checked(tmp_path):
    loaded = load_stack(str(all_on(tmp_path)))
    spec, engine = loaded.spec, loaded.spec.engine_plugin
    assert engine.endpoint(spec) == "https://192.0.2.11:1025"
    assert engine.readiness(spec).url.startswith("https://") and engine.readiness(spec).cacert == TLS["ca"]
    master = render_node(loaded, 0)
    smoke = master.scripts.smoke.command if master.scripts.smoke else ""
    ready = master.scripts.serve_ready.command if master.scripts.serve_ready else ""
    for script in (smoke, ready):
        assert f"--cacert {TLS['ca']}" in script and "https://192.0.2.11:1025/v1/" in script
        assert " -k " not in script and "--insecure" not in script and "--cert " not in script


@pytest.mark.pure
def test_a_client_certificate_is_presented_where_the_stack_names_one(tmp_path):
    loaded = load_stack(str(all_on(tmp_path, client_cert="/etc/mindie-tls/client.pem",
                                   client_key="/etc/mindie-tls/client.key.pem")))
    master = render_node(loaded, 0)
    smoke = master.scripts.smoke.command if master.scripts.smoke else ""
    assert "--cert /etc/mindie-tls/client.pem --key /etc/mindie-tls/client.key.pem" in smoke
    mounts = {m.container for m in master.container.mounts}
    assert {"/etc/mindie-tls/client.pem", "/etc/mindie-tls/client.key.pem"} <= mounts


@pytest.mark.pure
def test_https_alone_mounts_only_its_files(tmp_path):
    path = mindie_stack(tmp_path, "https", https_enabled=True, inter_comm_tls_enabled=False,
                        inter_node_tls_enabled=False, tls=TLS)
    loaded = load_stack(str(path))
    edits = edits_of(loaded)
    assert edits["ServerConfig.httpsEnabled"] is True and edits["BackendConfig.interNodeTLSEnabled"] is False
    assert "ServerConfig.tlsCert" in edits and not any(k.startswith("BackendConfig.interNodeTls") for k in edits)
    targets = {m.container for m in render_node(loaded, 0).container.mounts}
    assert f"{INSTALL}/security/certs/server.pem" in targets
    assert not any("/security/grpc/" in t for t in targets)


@pytest.mark.pure
def test_inter_node_tls_alone_keeps_http_for_the_api(tmp_path):
    path = mindie_stack(tmp_path, "grpc", https_enabled=False, inter_comm_tls_enabled=False,
                        inter_node_tls_enabled=True, tls=TLS)
    loaded = load_stack(str(path))
    assert loaded.spec.engine_plugin.endpoint(loaded.spec).startswith("http://")
    assert loaded.spec.engine_plugin.smoke_request(loaded.spec).cacert == ""
    targets = {m.container for m in render_node(loaded, 0).container.mounts}
    assert f"{INSTALL}/security/grpc/certs/server.pem" in targets and TLS["ca"] not in targets
    result = run_cli("validate", "--stack", str(path))
    assert result.returncode == 0, result.stderr
    assert f"warning: {NS}engine.https_enabled: is false" in result.stdout
    assert f"warning: {NS}engine.inter_node_tls_enabled" not in result.stdout


# ---------------------------------------------------------------- the insecure choice, named

@pytest.mark.pure
def test_the_runbook_s_plain_text_is_three_named_warnings():
    result = run_cli("validate", "--stack", "tp16-mindie")
    assert result.returncode == 0, result.stderr
    for switch in SWITCHES:
        assert f"warning: {NS}engine.{switch}: is false" in result.stdout
    assert "MindIE's OpenAI API on the cluster network is plain HTTP" in result.stdout


@pytest.mark.graph
def test_preview_and_the_program_name_the_plain_text(tmp_path, monkeypatch):
    printed = run_cli("preview", "--stack", "tp16-mindie").stdout
    for switch in SWITCHES:
        assert f"Warning: {NS}engine.{switch}: is false" in printed
    tls_printed = run_cli("preview", "--stack", str(all_on(tmp_path))).stdout
    assert "Warning" not in tls_printed


@pytest.mark.graph
def test_the_program_logs_each_plain_text_choice(monkeypatch):
    import pulumi

    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: logged.append(message))
    loaded = load_stack("tp16-mindie")
    record_stack(loaded, loaded.raw_config)
    for switch in SWITCHES:
        assert any(line.startswith(f"{NS}engine.{switch}: is false") for line in logged), logged


# ---------------------------------------------------------------- bad combinations

BAD = {
    "https on, no tls": (dict(https_enabled=True), ("tls",),
                         f"{NS}engine.tls: is not set, but https_enabled is true"),
    "tls with every switch off": (dict(tls=TLS), (), f"{NS}engine.tls: is set, but https_enabled"),
    "a switch not said": ({}, ("inter_node_tls_enabled",),
                          f"{NS}engine.inter_node_tls_enabled: is not set: MindIE ships "
                          "BackendConfig.interNodeTLSEnabled on"),
    "a client certificate without its key": (
        dict(https_enabled=True, tls={**TLS, "client_cert": "/etc/mindie-tls/client.pem"}), (),
        f"{NS}engine.tls: has only one of client_cert and client_key"),
    "a relative TLS file": (dict(https_enabled=True, tls={**TLS, "cert": "server.pem"}), (),
                            "is not an absolute path"),
    "a TLS file missing": (dict(https_enabled=True, tls={k: v for k, v in TLS.items() if k != "kmc_master"}), (),
                           "kmc_master"),
}


@pytest.mark.graph
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tls_combination_is_one_line(tmp_path, case):
    engine, drop, expected = BAD[case]
    path = mindie_stack(tmp_path, "bad", drop=drop, **engine)
    line = one_error_line(run_cli("validate", "--stack", str(path)))
    assert str(path) in line and expected in line, line


# ---------------------------------------------------------------- the scripts against an HTTPS server

def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, a client
    certificate signed by it, and an unrelated CA, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def make(subject, issuer_name, issuer_key, *, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name or name(subject))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    files: dict[str, Path] = {}

    def write(label, key, cert):
        (directory / f"{label}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{label}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        files[label] = directory / f"{label}.pem"
        files[f"{label}.key"] = directory / f"{label}.key"

    ca_key, ca_cert = make("test CA", None, None, ca=True)
    write("ca", ca_key, ca_cert)
    write("server", *make("server", ca_cert.subject, ca_key,
                          san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    write("client", *make("client", ca_cert.subject, ca_key))
    write("other-ca", *make("other CA", None, None, ca=True))
    return files


class HttpsServer:
    """127.0.0.1 over TLS with the test's server certificate; asks for a
    client certificate signed by the test CA when `client_required`; serves
    at most `requests` connections, then stops by itself."""

    def __init__(self, files: dict[str, Path], requests: int, *, client_required: bool = False):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"data": [{"id": "DeepSeek-V3-0324"}], "choices": [{"text": "hi"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files["server"], files["server.key"])
        if client_required:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(files["ca"])
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

        def serve():
            for _ in range(requests):
                self.server.handle_request()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.thread.join()
        self.server.server_close()


def _smoke(url: str, **tls) -> str:
    check = HttpCheck("POST", f"{url}/v1/chat/completions", json.dumps({"model": "m"}), timeout_s=30,
                      expect='"choices"', **tls)
    return render_template("smoke.sh.j2", purpose="Smoke request", stack="t", node=None, smoke=check)


@pytest.mark.pure
def test_smoke_over_https_checks_the_server_against_the_ca(tmp_path):
    files = _certificates(tmp_path)
    server = HttpsServer(files, requests=2)
    good = subprocess.run(["bash", "-c", _smoke(server.url, cacert=str(files["ca"]))], capture_output=True,
                          text=True)
    # Another CA: curl refuses the server's certificate, the smoke step fails.
    bad = subprocess.run(["bash", "-c", _smoke(server.url, cacert=str(files["other-ca"]))], capture_output=True,
                         text=True)
    server.close()
    assert good.returncode == 0 and '"choices"' in good.stdout, good.stderr
    assert bad.returncode != 0 and "certificate" in bad.stderr.lower(), bad.stderr


@pytest.mark.pure
def test_readiness_over_https_presents_the_client_certificate(tmp_path):
    files = _certificates(tmp_path)
    server = HttpsServer(files, requests=1, client_required=True)
    check = HttpCheck("GET", f"{server.url}/v1/models", None, (), 60, expect="DeepSeek-V3-0324",
                      cacert=str(files["ca"]), client_cert=str(files["client"]), client_key=str(files["client.key"]))
    _, result = run_readiness(tmp_path, check)
    server.close()
    assert result.returncode == 0 and '"ready": true' in result.stdout, result.stderr
    assert "https://127.0.0.1:" in result.stdout
