"""Fleet provisioning (ansible/): lint, syntax, and real runs of the roles on this machine.

The checks use the isolated tooling of ``scripts/setup-ansible.sh`` (``.venv-ansible``:
pinned ansible-core and ansible-lint) and skip, saying so, when it is missing.

The real runs stage a device and a centre under a folder of the test (``kiosk_device_prefix``,
``kiosk_centre_prefix``) on this machine itself, with ``ansible_connection=local``:

* apt is off (``kiosk_device_install_packages: false``): installing Chromium and cage on
  every CI run would take minutes and prove nothing about the roles; the users are not
  created and the services are not started (no systemd here, and a test must not add
  system users); the files are owned by root instead of the service users;
* everything else is real: the wheel is built from a snapshot of the tree, installed with
  its dependencies into a fresh virtual environment (pip's cache makes it quick), the
  models are fetched once into a controller cache by ``kiosk models fetch``, copied and
  checked by sha256, the configuration is rendered and checked by the installed kiosk,
  the device secret is made, the MQTT credentials come from certificates that the PKI
  playbook issued, and the units are copied;
* each role runs twice and the second run must change nothing;
* the broker configuration the centre role wrote is then run by a real mosquitto, and a
  device's certificate may publish only under its own topic and receive only its own
  receipts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANSIBLE = REPO / "ansible"
VENV = REPO / ".venv-ansible"
EXAMPLE = ANSIBLE / "inventories" / "example-site"
VAULT_PASSWORD = EXAMPLE / "vault-password.example"
PLAYBOOKS = ("site.yml", "device.yml", "centre.yml", "pki.yml")
DEVICE_ID = "test-0001"
SITE = "lab"
UNITS = (
    "kiosk.service",
    "kiosk-screen.service",
    "kiosk-ingest@.service",
    "kiosk.sysusers.conf",
    "kiosk.tmpfiles.conf",
)

pytestmark = pytest.mark.skipif(
    not (VENV / "bin" / "ansible-playbook").exists(),
    reason=".venv-ansible is missing: run scripts/setup-ansible.sh (scripts/setup.sh dev does)",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(
    args: list[str], *, cwd: Path = ANSIBLE, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    text = (proc.stdout + "\n" + proc.stderr).strip().splitlines()
    return "\n".join(line for line in text[-lines:] if not line.startswith("WARNING: Location"))


def _recap(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.+)$", proc.stdout, re.MULTILINE)
    assert match, f"no PLAY RECAP for localhost:\n{_tail(proc)}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- lint and syntax ------------------------------------------------------------------------


def test_ansible_lint_production_profile() -> None:
    proc = _run([str(VENV / "bin" / "ansible-lint"), "--profile", "production", "--nocolor"])
    assert proc.returncode == 0, _tail(proc)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    proc = _run(
        [
            str(VENV / "bin" / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(EXAMPLE),
            "--vault-password-file",
            str(VAULT_PASSWORD),
            playbook,
        ]
    )
    assert proc.returncode == 0, _tail(proc)


def test_example_inventory_vaults_a_device_secret() -> None:
    proc = _run(
        [
            str(VENV / "bin" / "ansible"),
            "-i",
            str(EXAMPLE),
            "--vault-password-file",
            str(VAULT_PASSWORD),
            "kiosk-0001",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=kiosk_device_secret",
        ]
    )
    assert proc.returncode == 0, _tail(proc)
    match = re.search(r'"kiosk_device_secret": "([^"]+)"', proc.stdout)
    assert match, f"kiosk-0001's vaulted device secret did not decrypt:\n{_tail(proc)}"
    assert len(base64.b64decode(match.group(1), validate=True)) == 32
    text = (EXAMPLE / "host_vars" / "kiosk-0001.yml").read_text()
    assert "$ANSIBLE_VAULT" in text and match.group(1) not in text


# --- real runs on this machine --------------------------------------------------------------


@dataclass
class Staged:
    """A device and a centre staged under ``root`` by two runs of each role."""

    tmp: Path
    root: Path
    device_runs: list[subprocess.CompletedProcess[str]]
    centre_runs: list[subprocess.CompletedProcess[str]]
    inventory: Path
    vars_file: Path

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def _snapshot_source(dest: Path) -> None:
    """The package's sources as they are now: the tree may change while the test runs."""
    dest.mkdir()
    for name in ("kiosk", "models", "hardware"):
        shutil.copytree(
            REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)


def _units_dir(tmp: Path) -> Path:
    """The project's units, or stand-ins while systemd/ does not hold them all yet."""
    if all((REPO / "systemd" / name).is_file() for name in UNITS):
        return REPO / "systemd"
    units = tmp / "units"
    units.mkdir()
    for name in UNITS:
        source = REPO / "systemd" / name
        if source.is_file():
            shutil.copy2(source, units / name)
        else:
            (units / name).write_text(f"# stand-in for systemd/{name} (not written yet)\n")
    return units


def _playbook(args: list[str], playbook: Path | str) -> subprocess.CompletedProcess[str]:
    return _run([str(VENV / "bin" / "ansible-playbook"), *args, str(playbook)], timeout=280)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    controller_kiosk = Path(sys.executable).with_name("kiosk")
    if not controller_kiosk.exists():
        pytest.skip(f"no kiosk command beside {sys.executable} to fetch the models with")
    tmp = tmp_path_factory.mktemp("ansible")
    root = tmp / "root"
    (root / "boot" / "firmware").mkdir(parents=True)
    # A Raspberry Pi OS firmware configuration without the camera line.
    (root / "boot" / "firmware" / "config.txt").write_text(
        "# For more options and information see config.txt(5)\ndtparam=audio=on\n"
        "#camera_auto_detect=0\n[all]\n"
    )
    source = tmp / "src"
    _snapshot_source(source)
    units = _units_dir(tmp)
    pki = tmp / "pki"
    inventory = tmp / "hosts.yml"
    inventory.write_text(
        "devices:\n"
        "  hosts:\n"
        "    localhost:\n"
        "      ansible_connection: local\n"
        f"      ansible_python_interpreter: {VENV / 'bin' / 'python'}\n"
        "centre:\n"
        "  hosts:\n"
        "    localhost:\n"
    )
    vars_file = tmp / "vars.yml"
    vars_file.write_text(
        f"""
kiosk_device_id: {DEVICE_ID}
kiosk_device_site: {SITE}
kiosk_device_prefix: {root}
kiosk_device_install_packages: false
kiosk_device_manage_users: false
kiosk_device_manage_services: false
kiosk_device_user: root
kiosk_device_group: root
kiosk_device_units_dir: {units}
kiosk_device_source_dir: {source}
kiosk_device_controller_kiosk: {controller_kiosk}
kiosk_device_controller_cache: {tmp / "controller-cache"}
kiosk_device_mqtt_host: localhost
kiosk_device_mqtt_ca_cert: "{{{{ lookup('ansible.builtin.file', '{pki}/ca.crt') }}}}"
kiosk_device_mqtt_cert: "{{{{ lookup('ansible.builtin.file', '{pki}/devices/{DEVICE_ID}.crt') }}}}"
kiosk_device_mqtt_key: "{{{{ lookup('ansible.builtin.file', '{pki}/devices/{DEVICE_ID}.key') }}}}"
kiosk_device_gpio:
  relay:
    enabled: true
    pulse_s: 4
  keypad:
    enabled: true
    layout: 4x4
    col_pins: [16, 26, 25, 4]
kiosk_device_config:
  auth:
    lockout_minutes: 15
kiosk_pki_dir: {pki}
kiosk_centre_prefix: {root}
kiosk_centre_install_packages: false
kiosk_centre_manage_users: false
kiosk_centre_manage_services: false
kiosk_centre_manage_database: false
kiosk_centre_units_dir: {units}
kiosk_centre_source_dir: {source}
kiosk_centre_mqtt_ca_cert: "{{{{ lookup('ansible.builtin.file', '{pki}/ca.crt') }}}}"
kiosk_centre_mqtt_server_cert: "{{{{ lookup('ansible.builtin.file', '{pki}/broker.crt') }}}}"
kiosk_centre_mqtt_server_key: "{{{{ lookup('ansible.builtin.file', '{pki}/broker.key') }}}}"
kiosk_centre_ingest_cert: "{{{{ lookup('ansible.builtin.file', '{pki}/ingest.crt') }}}}"
kiosk_centre_ingest_key: "{{{{ lookup('ansible.builtin.file', '{pki}/ingest.key') }}}}"
kiosk_centre_mqtt_crl: "{{{{ lookup('ansible.builtin.file', '{pki}/ca.crl') }}}}"
kiosk_centre_mqtt_readers: [dashboard]
"""
    )
    args = ["-i", str(inventory), "-e", f"@{vars_file}"]
    proc = _playbook(args, ANSIBLE / "pki.yml")
    assert proc.returncode == 0, _tail(proc)
    device_runs = []
    for _ in range(2):
        proc = _playbook(args, ANSIBLE / "device.yml")
        assert proc.returncode == 0, _tail(proc)
        device_runs.append(proc)
    centre_runs = []
    for _ in range(2):
        proc = _playbook(args, ANSIBLE / "centre.yml")
        assert proc.returncode == 0, _tail(proc)
        centre_runs.append(proc)
    yield Staged(tmp, root, device_runs, centre_runs, inventory, vars_file)


def test_device_role_second_run_changes_nothing(staged: Staged) -> None:
    first, second = (_recap(run) for run in staged.device_runs)
    assert first["failed"] == 0 and first["changed"] > 0
    assert second["failed"] == 0
    assert second["changed"] == 0, _tail(staged.device_runs[1], 200)


def test_device_role_installs_a_working_kiosk(staged: Staged) -> None:
    kiosk = staged.path("/opt/kiosk/venv/bin/kiosk")
    proc = subprocess.run(
        [str(kiosk), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "models" in proc.stdout
    assert len(list(staged.path("/opt/kiosk/wheels").glob("kiosk-*.whl"))) == 1


def test_device_role_installs_verified_models(staged: Staged) -> None:
    with (REPO / "models" / "manifest.toml").open("rb") as fh:
        manifest = tomllib.load(fh)["model"]
    models = staged.path("/var/lib/kiosk/models")
    for entry in manifest:
        path = models / entry["file"]
        assert path.is_file(), f"{entry['file']} was not installed"
        assert _sha256(path) == entry["sha256"], f"{entry['file']} does not match the manifest"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_device_role_renders_a_configuration_the_kiosk_accepts(staged: Staged) -> None:
    config = staged.path("/etc/kiosk/kiosk.toml")
    with config.open("rb") as fh:
        data = tomllib.load(fh)
    assert data["device"] == {"device_id": DEVICE_ID, "site": SITE}
    assert data["screen"]["port"] == 8321 and data["screen"]["host"] == "127.0.0.1"
    assert data["sync"]["enabled"] is True and data["sync"]["port"] == 8883
    # The key is a credential: kiosk.service names it (KIOSK_SYNC__KEY_FILE), not the file.
    assert data["sync"]["cert_file"] == "/etc/kiosk/mqtt-client.crt"
    assert "key_file" not in data["sync"]
    assert data["devices"]["keypad"]["col_pins"] == [16, 26, 25, 4]
    assert data["auth"]["lockout_minutes"] == 15
    python = staged.path("/opt/kiosk/venv/bin/python")
    code = (
        "from kiosk.config import load_settings; s = load_settings(); "
        "print(s.device.device_id, s.device.site, s.devices.relay.pulse_s, s.sync.enabled)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_")}
    env["KIOSK_CONFIG"] = str(config)
    proc = subprocess.run(
        [str(python), "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [DEVICE_ID, SITE, "4.0", "True"]


def test_device_role_installs_credentials_and_units(staged: Staged) -> None:
    secret = staged.path("/etc/kiosk/credentials/device-secret")
    assert secret.stat().st_size == 32
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(staged.path("/etc/kiosk/credentials").stat().st_mode) == 0o700
    key = staged.path("/etc/kiosk/credentials/mqtt-client.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text() == (staged.tmp / "pki" / "devices" / f"{DEVICE_ID}.key").read_text()
    cert = staged.path("/etc/kiosk/mqtt-client.crt").read_text()
    assert cert == (staged.tmp / "pki" / "devices" / f"{DEVICE_ID}.crt").read_text()
    for unit in ("kiosk.service", "kiosk-screen.service"):
        assert staged.path(f"/etc/systemd/system/{unit}").is_file()
    assert staged.path("/etc/sysusers.d/kiosk.conf").is_file()
    assert staged.path("/etc/tmpfiles.d/kiosk.conf").is_file()
    assert staged.path("/etc/udev/rules.d/70-kiosk.rules").is_file()
    default = staged.path("/etc/systemd/system/default.target")
    assert os.readlink(default) == "/lib/systemd/system/graphical.target"
    boot = staged.path("/boot/firmware/config.txt").read_text().splitlines()
    assert "camera_auto_detect=1" in boot and "#camera_auto_detect=0" not in boot
    state = staged.path("/var/lib/kiosk")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_centre_role_second_run_changes_nothing(staged: Staged) -> None:
    first, second = (_recap(run) for run in staged.centre_runs)
    assert first["failed"] == 0 and first["changed"] > 0
    assert second["failed"] == 0
    assert second["changed"] == 0, _tail(staged.centre_runs[1], 200)
    with staged.path("/etc/kiosk/ingest.toml").open("rb") as fh:
        config = tomllib.load(fh)
    assert config["centre"]["share_group"] == "ingest"
    assert config["sync"]["cert_file"] == "/etc/kiosk/ingest-mqtt-client.crt"
    key = staged.path("/etc/kiosk/credentials/ingest-mqtt-client.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert staged.path("/etc/systemd/system/kiosk-ingest@.service").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Client:
    """A paho MQTT 5 client with a certificate, recording reason codes and messages."""

    def __init__(self, port: int, pki: Path, name: str, client_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.results: dict[int, object] = {}
        self.messages: list[str] = []
        self.event = threading.Event()
        self.connected: object = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set(
            ca_certs=str(pki / "ca.crt"),
            certfile=str(pki / f"{name}.crt"),
            keyfile=str(pki / f"{name}.key"),
        )
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_result
        self.client.on_subscribe = self._on_result
        self.client.on_message = lambda _c, _u, message: self.messages.append(message.topic)
        self.client.connect("localhost", port)
        self.client.loop_start()
        assert self.event.wait(10), f"{name} did not connect"
        self.event.clear()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.connected = rc
        self.event.set()

    def _on_result(self, _c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        self.results[mid] = rc
        self.event.set()

    def _wait(self, mid: int) -> str:
        deadline = time.monotonic() + 10
        while mid not in self.results and time.monotonic() < deadline:
            self.event.wait(0.1)
            self.event.clear()
        result = self.results[mid]
        return str(result[0] if isinstance(result, list) else result)

    def publish(self, topic: str) -> str:
        return self._wait(self.client.publish(topic, b"{}", qos=1).mid)

    def subscribe(self, topic: str) -> str:
        mid = self.client.subscribe(topic, qos=1)[1]
        assert mid is not None
        return self._wait(mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def _broker(staged: Staged) -> Iterator[int]:
    """mosquitto on a free loopback port with the configuration the centre role wrote."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        pytest.skip("mosquitto is not installed (scripts/setup.sh dev installs it)")
    port = _free_port()
    conf = staged.path("/etc/mosquitto/conf.d/kiosk.conf").read_text()
    # The staged files name their place on a real centre; here they are under the root.
    conf = conf.replace("/etc/mosquitto", str(staged.path("/etc/mosquitto")))
    conf = re.sub(r"^listener 8883$", f"listener {port} 127.0.0.1", conf, flags=re.MULTILINE)
    assert f"listener {port} 127.0.0.1" in conf
    test_conf = staged.tmp / "mosquitto.conf"
    test_conf.write_text(conf + "user root\npersistence false\nlog_dest stderr\n")
    broker = subprocess.Popen(
        [mosquitto, "-c", str(test_conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert broker.poll() is None, "mosquitto stopped"
                time.sleep(0.1)
        yield port
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def test_broker_lets_a_device_publish_only_under_its_own_topic(staged: Staged) -> None:
    pki = staged.tmp / "pki"
    clients: list[_Client] = []
    with _broker(staged) as port:
        try:
            ingest = _Client(port, pki, "ingest", "kiosk-ingest-test-1")
            clients.append(ingest)
            device = _Client(port, pki, f"devices/{DEVICE_ID}", f"kiosk-{DEVICE_ID}")
            clients.append(device)
            assert "Success" in str(ingest.connected) and "Success" in str(device.connected)
            assert "Granted" in ingest.subscribe("$share/ingest/kiosk/+/+/audit")
            assert "Granted" in device.subscribe(f"kiosk/{SITE}/{DEVICE_ID}/receipt")
            # A device subscribing to others' topics gets nothing from them (checked below).
            device.subscribe("kiosk/#")
            own = f"kiosk/{SITE}/{DEVICE_ID}"
            assert device.publish(f"{own}/audit") == "Success"
            assert device.publish(f"{own}/status") in ("Success", "No matching subscribers")
            for foreign in (
                "kiosk/lab/test-0002/audit",
                f"kiosk/other-site/{DEVICE_ID}/audit",
                "kiosk/lab/test-0002/receipt",
                f"{own}/receipt",
            ):
                assert device.publish(foreign) == "Not authorized", foreign
            assert ingest.publish(f"{own}/receipt") == "Success"
            assert ingest.publish("kiosk/lab/test-0002/receipt") == "Success"
            assert ingest.publish(f"{own}/audit") == "Not authorized"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (device.messages and ingest.messages):
                time.sleep(0.1)
            time.sleep(0.5)
            # (its own receipt may come twice: once per matching subscription)
            assert set(device.messages) == {f"{own}/receipt"}
            assert ingest.messages == [f"{own}/audit"]
        finally:
            for client in clients:
                client.close()


def _connects(port: int, pki: Path, name: str) -> bool:
    try:
        client = _Client(port, pki, name, f"probe-{name.replace('/', '-')}")
    except (AssertionError, OSError):
        return False
    client.close()
    return "Success" in str(client.connected)


def test_a_revoked_device_certificate_is_refused(staged: Staged) -> None:
    args = ["-i", str(staged.inventory), "-e", f"@{staged.vars_file}"]
    revoke = ["-e", f'{{"kiosk_pki_revoke": ["{DEVICE_ID}"]}}']
    proc = _playbook([*args, *revoke], ANSIBLE / "pki.yml")
    assert proc.returncode == 0, _tail(proc)
    assert _recap(proc)["changed"] > 0
    proc = _playbook([*args, *revoke], ANSIBLE / "pki.yml")
    assert proc.returncode == 0 and _recap(proc)["changed"] == 0, _tail(proc)
    proc = _playbook(args, ANSIBLE / "centre.yml")
    assert proc.returncode == 0, _tail(proc)
    crl = staged.path("/etc/mosquitto/certs/kiosk-ca.crl").read_text()
    assert crl == (staged.tmp / "pki" / "ca.crl").read_text()
    pki = staged.tmp / "pki"
    with _broker(staged) as port:
        assert _connects(port, pki, "ingest")
        assert not _connects(port, pki, f"devices/{DEVICE_ID}")


def test_device_secret_is_never_replaced_unless_asked(staged: Staged) -> None:
    playbook = staged.tmp / "credentials.yml"
    playbook.write_text(
        "- name: The device role's credentials tasks alone\n"
        "  hosts: devices\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Install the credentials\n"
        "      ansible.builtin.include_role:\n"
        "        name: kiosk_device\n"
        "        tasks_from: credentials.yml\n"
    )
    secret = staged.path("/etc/kiosk/credentials/device-secret")
    old = secret.read_bytes()
    state = staged.path("/var/lib/kiosk")
    (state / "kiosk.db").write_bytes(b"a database keyed by the old secret")
    new = os.urandom(32)
    args = [
        "-i",
        str(staged.inventory),
        "-e",
        f"@{staged.vars_file}",
        "-e",
        f"kiosk_device_secret={base64.b64encode(new).decode()}",
    ]

    refused = _playbook(args, playbook)
    assert refused.returncode != 0
    assert "differs from kiosk_device_secret" in refused.stdout, _tail(refused)
    assert secret.read_bytes() == old and (state / "kiosk.db").exists()

    replaced = _playbook([*args, "-e", "kiosk_device_secret_replace=true"], playbook)
    assert replaced.returncode == 0, _tail(replaced)
    assert secret.read_bytes() == new
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not (state / "kiosk.db").exists()
    (rotated,) = state.glob("rotated-*")
    assert (rotated / "device-secret").read_bytes() == old
    assert (rotated / "kiosk.db").read_bytes() == b"a database keyed by the old secret"

    again = _playbook([*args, "-e", "kiosk_device_secret_replace=true"], playbook)
    assert again.returncode == 0, _tail(again)
    assert _recap(again)["changed"] == 0
