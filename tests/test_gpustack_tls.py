"""GPUStack over HTTPS when the stack asks (docs/security.md#gpustack-over-https):
the server's `--ssl-*` flags and read-only mounts, the workers' https server
URL and CA (`SSL_CERT_FILE`), the control host's API client and the smoke
script checking the server against the stack's CA (never unchecked) against
a 127.0.0.1 HTTPS server of this test, runbook 002's plain HTTP only as an
explicit choice named as a warning, and each bad combination refused with
one line.

Certificates are made per test (tests/test_mindie_tls.py `_certificates`);
the HTTPS server serves a fixed number of connections, so nothing waits on
the clock.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ascend_inference import gpustack_api
from ascend_inference.errors import StackError
from ascend_inference.gpustack_api import GpustackApi, GpustackError, GpustackUnreachable
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.conftest import FIXTURES, NS, load_stack_doc, run_cli, write_stack
from tests.test_bad_input import one_error_line
from tests.test_mindie_tls import HttpsServer, _certificates

STACK = "dp4-ep32-gpustack"
MASTER = "192.0.2.11"
CONTROL_CA = FIXTURES / "gpustack-tls" / "ca.pem"
TLS = {"ca": "/etc/gpustack-tls/ca.pem", "cert": "/etc/gpustack-tls/server.pem",
       "key": "/etc/gpustack-tls/server.key", "control_ca": str(CONTROL_CA)}


def gpustack_stack(tmp_path: Path, label: str, *, drop: tuple[str, ...] = (), **engine) -> Path:
    doc = load_stack_doc(STACK)
    section = doc["config"][NS + "engine"]
    section.update(engine)
    for key in drop:
        section.pop(key, None)
    return write_stack(tmp_path, label, doc)


def https_loaded(**engine):
    loaded = load_stack(STACK)
    config = {**loaded.raw_config}
    config[NS + "engine"] = {**config[NS + "engine"], "https_enabled": True, "tls": TLS, **engine}
    return loaded_with_config(loaded, config)


# ---------------------------------------------------------------- rendering

@pytest.mark.pure
def test_the_server_gets_the_stack_s_key_pair_and_ca_read_only():
    server = render_node(https_loaded(), 0).container
    line = server.docker_run_line()
    flags = (("--ssl-certfile", TLS["cert"]), ("--ssl-keyfile", TLS["key"]), ("--ssl-ca-certfile", TLS["ca"]))
    for flag, path in flags:
        assert f" {flag} {path}" in line, line
        assert f"-v {path}:{path}:ro" in line, line
    # The default HTTPS port (443) is GPUStack's own: no --tls-port.
    assert "--tls-port" not in line
    # The server's own clients keep the system's trust store (external auth, hubs).
    assert "SSL_CERT_FILE" not in line


@pytest.mark.pure
def test_a_worker_gets_the_https_url_and_the_ca_but_never_the_key():
    loaded = https_loaded(tls_port=8443)
    worker = render_node(loaded, 1).container.docker_run_line()
    assert f"--server-url https://{MASTER}:8443" in worker
    assert f"-e SSL_CERT_FILE={TLS['ca']}" in worker
    assert f"-v {TLS['ca']}:{TLS['ca']}:ro" in worker
    assert TLS["key"] not in worker and TLS["cert"] not in worker
    assert "--tls-port 8443" in render_node(loaded, 0).container.docker_run_line()
    assert loaded.spec.engine_plugin.endpoint(loaded.spec) == f"https://{MASTER}:8443"


@pytest.mark.pure
def test_readiness_and_smoke_check_the_server_against_the_ca():
    loaded = https_loaded()
    engine, spec = loaded.spec.engine_plugin, loaded.spec
    for check in (engine.readiness(spec), engine.smoke_request(spec)):
        assert check.url.startswith(f"https://{MASTER}/") and check.cacert == TLS["ca"]
    smoke = render_node(loaded, 0).scripts.smoke.text
    assert f"server=https://{MASTER}\n" in smoke and f"tls=(--cacert {TLS['ca']} )" in smoke
    assert " -k " not in smoke and "--insecure" not in smoke


@pytest.mark.pure
def test_plain_http_renders_runbook_002_s_server():
    loaded = load_stack(STACK)
    line = render_node(loaded, 1).container.docker_run_line()
    assert f"--server-url http://{MASTER}" in line and "SSL_CERT_FILE" not in line
    assert "--ssl-" not in render_node(loaded, 0).container.docker_run_line()
    assert loaded.spec.engine_plugin.control_ca_pem(loaded.spec, loaded.file) is None


# ---------------------------------------------------------------- the program's resource

@pytest.mark.graph
def test_the_model_resource_checks_the_server_with_the_control_host_s_ca():
    loaded = https_loaded()
    model = record_stack(loaded, loaded.raw_config).by_name("gpustack-model-deploy")
    assert model.inputs["server_url"] == f"https://{MASTER}"
    assert model.inputs["ca_pem"] == CONTROL_CA.read_text()
    plain = load_stack(STACK)
    # None: the mocks drop the input, as the engine does an unset one.
    assert record_stack(plain, plain.raw_config).by_name("gpustack-model-deploy").inputs.get("ca_pem") is None


# ---------------------------------------------------------------- the clients against an HTTPS server

@pytest.mark.pure
def test_the_api_client_logs_in_over_https_with_the_stack_s_ca(tmp_path):
    files = _certificates(tmp_path)
    server = HttpsServer(files, 1)
    try:
        api = GpustackApi(server.url, "admin", "pw", ca_pem=files["ca"].read_text(), timeout_s=30)
    finally:
        server.close()
    assert api.server == server.url


@pytest.mark.pure
def test_the_model_resource_s_session_checks_the_server_with_its_ca_pem_input(tmp_path):
    """The provider's create, read, update and delete log in through `_session`, from the
    resource's inputs: its `ca_pem` is the CA the server is checked against. Found by mutation
    testing: `props.get("ca_pem") or None` -> `and None` (the system's trust store instead,
    which refuses this server) passed every test."""
    files = _certificates(tmp_path)
    server = HttpsServer(files, 1)
    try:
        props = {"server_url": server.url, "password": "pw", "ca_pem": files["ca"].read_text()}
        api = gpustack_api._session(props)
    finally:
        server.close()
    assert api.server == server.url


@pytest.mark.pure
@pytest.mark.parametrize("ca", ["other-ca", None])
def test_the_api_client_refuses_a_server_its_ca_did_not_sign(tmp_path, ca):
    """Another CA, or none (the system's trust store): refused at once, with
    the fix, and not taken for a server still starting (not retried)."""
    files = _certificates(tmp_path)
    server = HttpsServer(files, 1)
    try:
        with pytest.raises(GpustackError) as refused:
            GpustackApi(server.url, "admin", "pw", ca_pem=files[ca].read_text() if ca else None, timeout_s=30)
    finally:
        server.close()
    assert not isinstance(refused.value, GpustackUnreachable)
    assert "certificate was refused" in str(refused.value) and "engine.tls.control_ca" in str(refused.value)


def _smoke_script(server_url: str, ca: str) -> str:
    loaded = https_loaded()
    text = render_node(loaded, 0).scripts.smoke.text
    return text.replace(f"https://{MASTER}", server_url).replace(TLS["ca"], ca)


@pytest.mark.pure
def test_the_smoke_script_logs_in_and_asks_over_https_with_the_ca(tmp_path):
    files = _certificates(tmp_path)
    server = HttpsServer(files, 2)          # the login, then the completion
    try:
        done = subprocess.run(["bash", "-c", _smoke_script(server.url, str(files["ca"]))], input="pw\n",
                              capture_output=True, text=True)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert '"choices"' in done.stdout


@pytest.mark.pure
def test_the_smoke_script_refuses_a_server_its_ca_did_not_sign(tmp_path):
    files = _certificates(tmp_path)
    server = HttpsServer(files, 1)
    try:
        done = subprocess.run(["bash", "-c", _smoke_script(server.url, str(files["other-ca"]))], input="pw\n",
                              capture_output=True, text=True)
    finally:
        server.close()
    assert done.returncode == 11 and "did not answer the login" in done.stderr, done.stderr


# ---------------------------------------------------------------- plain HTTP, named

@pytest.mark.pure
def test_plain_http_is_a_named_warning_and_https_is_not():
    plain = run_cli("validate", "--stack", STACK)
    assert plain.returncode == 0, plain.stderr
    assert f"warning: {NS}engine.https_enabled: is false: GPUStack's API on the cluster network is plain HTTP" \
        in plain.stdout
    assert "registration token" in plain.stdout


@pytest.mark.pure
def test_plain_http_is_the_one_insecure_choice_named_in_process():
    # Found by mutation testing: `https_enabled is False` -> `is True` and `>= False` passed
    # every test: the warnings were read only through a `python -m ascendctl` subprocess.
    assert [w for w in load_stack(STACK).spec.insecure_warnings() if "https_enabled" in w] == [
        f"warning: {NS}engine.https_enabled: is false: GPUStack's API on the cluster network is plain HTTP "
        "(runbook 002's http://<server>): the admin login and its password, the session cookie, the workers' "
        "registration token and every model request and reply travel in clear on port 80 "
        "(see docs/security.md#endpoints)"]
    assert [w for w in https_loaded().spec.insecure_warnings() if "https_enabled" in w] == []


@pytest.mark.graph
def test_preview_names_plain_http(tmp_path):
    printed = run_cli("preview", "--stack", STACK).stdout
    assert f"Warning: {NS}engine.https_enabled: is false" in printed
    secure = gpustack_stack(tmp_path, "https", https_enabled=True, tls=TLS)
    assert "https_enabled" not in run_cli("preview", "--stack", str(secure)).stdout


@pytest.mark.graph
def test_the_program_logs_plain_http(monkeypatch):
    import pulumi

    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: logged.append(message))
    loaded = load_stack(STACK)
    record_stack(loaded, loaded.raw_config)
    assert any(line.startswith(f"{NS}engine.https_enabled: is false") for line in logged), logged


# ---------------------------------------------------------------- bad combinations

BAD = {
    "https not said": ({}, ("https_enabled",), f"{NS}engine.https_enabled: is not set"),
    "https on, no tls": (dict(https_enabled=True), (), f"{NS}engine.tls: is not set, but https_enabled is true"),
    "tls with https off": (dict(tls=TLS), (), f"{NS}engine.tls: is set, but https_enabled is false"),
    "a tls port without https": (dict(tls_port=8443), (), f"{NS}engine.tls_port: is set, but https_enabled"),
    "the tls port on the http port": (dict(https_enabled=True, tls=TLS, port=443), (), "443"),
    "a relative node file": (dict(https_enabled=True, tls={**TLS, "key": "server.key"}), (),
                             "is not an absolute path"),
    "a tls file not named": (dict(https_enabled=True, tls={k: v for k, v in TLS.items() if k != "cert"}), (),
                             "cert"),
    "control_ca missing": (dict(https_enabled=True, tls={**TLS, "control_ca": "no-such-ca.pem"}), (),
                           f"{NS}engine.tls.control_ca: "),
    "control_ca not a certificate": (dict(https_enabled=True, tls={**TLS, "control_ca": "not-a-ca.pem"}), (),
                                     "holds no PEM certificate"),
    "control_ca empty": (dict(https_enabled=True, tls={**TLS, "control_ca": "empty.pem"}), (),
                         "holds no PEM certificate"),
    "control_ca a directory": (dict(https_enabled=True, tls={**TLS, "control_ca": "."}), (),
                               "cannot be read as a PEM file"),
}


@pytest.mark.graph
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_https_setting_is_one_line(tmp_path, case):
    engine, drop, expected = BAD[case]
    (tmp_path / "not-a-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (tmp_path / "empty.pem").write_text("\n")
    path = gpustack_stack(tmp_path, "bad", drop=drop, **engine)
    line = one_error_line(run_cli("validate", "--stack", str(path)))
    assert str(path) in line and expected in line, line
    if case == "control_ca missing":
        assert "does not exist" in line and "(fix: name the PEM file of the CA" in line, line


def _problems(path: Path) -> list[str]:
    try:
        load_stack(str(path))
    except StackError as error:
        return [str(p) for p in error.problems]
    return []


@pytest.mark.pure
@pytest.mark.parametrize(("port", "refused"), [(8443, True), (442, True), (443, False)])
def test_a_tls_port_other_than_443_without_https_is_refused_in_process(tmp_path, port, refused):
    # Found by mutation testing: `tls_port != DEFAULT_TLS_PORT` -> `<`, `>` and `is not` (a 443
    # read from the stack file is another object than the constant), and `DEFAULT_TLS_PORT =
    # 443` -> 442, 444, passed every test: only the CLI's subprocess (8443) checked the rule.
    problems = _problems(gpustack_stack(tmp_path, "port", tls_port=port))
    named = [p for p in problems if f"{NS}engine.tls_port: is set, but https_enabled is not true" in p]
    assert (len(named), len(problems)) == ((1, 1) if refused else (0, 0)), problems


@pytest.mark.pure
@pytest.mark.parametrize(("size", "refused"), [(2**20, False), (2**20 + 1, True)])
def test_a_control_ca_bundle_of_1_mib_is_read_and_a_byte_more_is_refused(tmp_path, size, refused):
    # Found by mutation testing: `MAX_CA_BYTES = 2**20` -> `2**19`, `2**21`, `2<<20`, `3**20`
    # passed every test. 1 MiB is GPUStack's own cap on the CA bundle a worker downloads.
    pem = CONTROL_CA.read_text()
    (tmp_path / "big-ca.pem").write_text(pem + "\n" * (size - len(pem)))
    assert (tmp_path / "big-ca.pem").stat().st_size == size
    path = gpustack_stack(tmp_path, "big", https_enabled=True, tls={**TLS, "control_ca": "big-ca.pem"})
    problems = _problems(path)
    if refused:
        [line] = problems
        assert f"{NS}engine.tls.control_ca: cannot be read as a PEM file" in line, line
        assert "more than the 1,048,576 bytes allowed" in line, line
    else:
        assert problems == []
        loaded = load_stack(str(path))
        assert loaded.spec.engine_plugin.control_ca_pem(loaded.spec, str(path)) == pem + "\n" * (size - len(pem))


@pytest.mark.pure
@pytest.mark.parametrize("https", [True, False])
def test_the_tls_port_is_a_host_port_only_with_https(tmp_path, https):
    # Found by mutation testing: host_ports' `if self.https_enabled` -> `if not` passed every
    # test: the CLI's subprocess alone checked the TLS port against the HTTP port.
    engine = dict(https_enabled=True, tls=TLS) if https else dict(https_enabled=False)
    problems = _problems(gpustack_stack(tmp_path, "ports", port=443, **engine))
    assert problems == ([f"{tmp_path / 'Pulumi.ports.yaml'}: {NS}engine.tls_port: port 443 is also engine.port "
                         "on every node (fix: give each port of the stack its own number)"] if https else [])



@pytest.mark.pure
@pytest.mark.parametrize("case", sorted(BAD) + ["control_ca not ASCII", "control_ca under a file"])
def test_bad_https_setting_is_one_problem_in_process(tmp_path, case):
    # Found by mutation testing: `if s.https_enabled and s.tls is not None` -> `is None`, the
    # control CA's `except (NotARegularFile, OSError, UnicodeDecodeError)` without `OSError` or
    # `UnicodeDecodeError`, and an empty text's `else 0` -> `else 1` passed every test:
    # `test_bad_https_setting_is_one_line` runs them through the CLI's subprocess, which the
    # mutation run does not select, and no case raised an OSError other than a missing file.
    extra = {"control_ca not ASCII": "latin1.pem", "control_ca under a file": "empty.pem/ca.pem"}
    engine, drop, expected = BAD[case] if case in BAD else (
        dict(https_enabled=True, tls={**TLS, "control_ca": extra[case]}), (), "cannot be read as a PEM file")
    (tmp_path / "not-a-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (tmp_path / "empty.pem").write_text("\n")
    (tmp_path / "latin1.pem").write_bytes(CONTROL_CA.read_bytes() + "# Zertifikat für\n".encode("latin-1"))
    [line] = _problems(gpustack_stack(tmp_path, "bad", drop=drop, **engine))
    assert expected in line, line
    if case == "control_ca missing":
        # `except FileNotFoundError` -> another exception passed too: it is an OSError, read next.
        assert "does not exist" in line and "cannot be read" not in line, line


@pytest.mark.pure
@pytest.mark.parametrize(("port", "flag"), [(443, ()), (8443, ("--tls-port", "8443")), (442, ("--tls-port", "442"))])
def test_the_server_is_told_its_tls_port_only_off_gpustacks_443(tmp_path, port, flag):
    # Found by mutation testing: `tls_port != DEFAULT_TLS_PORT` -> `is not` (a 443 read from the
    # stack file is another object than the constant) and `>` passed every test.
    loaded = load_stack(str(gpustack_stack(tmp_path, "tls-port", https_enabled=True, tls=TLS, tls_port=port)))
    command = render_node(loaded, 0).container.command
    assert command[command.index("--ssl-ca-certfile") + 2:][:len(flag)] == flag
    assert ("--tls-port" in command) is bool(flag)
    # and the workers' URL names the port only then (`tls_port == DEFAULT_TLS_PORT` -> `<=`, `is`).
    assert render_node(loaded, 1).container.command[:2] == (
        "--server-url", f"https://{MASTER}" + (f":{port}" if flag else ""))
