"""The deployment files: Kubernetes manifests, the antenna entry point, the health check.

The kustomizations are rendered with kubectl and every object is validated against the
Kubernetes schemas with ``kubernetes-validate --strict`` (offline). What a schema cannot
see is checked here: the command each pod of the StatefulSet really runs (the rendered
command, environment and ConfigMap, through ``dsim-antenna`` with a stand-in ``dsim``),
parsed by dsim's own command line: digitiser ids, multicast groups, one sync time.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dsim.cli import parse_args
from dsim.settings import Settings

from .support import DsimProcess

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes",
    "array-4": DEPLOY / "kubernetes" / "overlays" / "array-4",
}
ANTENNA_SCRIPT = DEPLOY / "bin" / "dsim_antenna.py"
HEALTHCHECK_SCRIPT = DEPLOY / "bin" / "dsim_healthcheck.py"
#: The oldest schema kubernetes-validate carries that we promise to fit, and its newest.
KUBERNETES_VERSIONS = ["1.27.0", None]

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="needs kubectl (for kubectl kustomize)"
)


def _validator() -> str | None:
    """The kubernetes-validate command: next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "kubernetes-validate"
    return str(beside) if beside.exists() else shutil.which("kubernetes-validate")


def render(name: str) -> list[dict[str, Any]]:
    """The objects of a kustomization, rendered by kubectl (offline)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {name} failed: {out.stderr.strip()}"
    yaml = pytest.importorskip("yaml", reason="needs PyYAML (installed with kubernetes-validate)")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def load_antenna_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dsim_antenna", ANTENNA_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ schemas


@needs_kubectl
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
def test_kustomization_renders_and_validates_strictly(
    name: str, version: str | None, tmp_path: Path
) -> None:
    validator = _validator()
    if validator is None:
        pytest.skip("needs kubernetes-validate (pip install kubernetes-validate)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {name} failed: {out.stderr.strip()}"
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(out.stdout)
    command = [validator, "--strict", *(["-k", version] if version else []), str(rendered)]
    check = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"{' '.join(command)}:\n{check.stdout}{check.stderr}"
    passed = check.stdout.count(" passed for resource ")
    kinds = {"base": 3, "array-4": 4}  # ConfigMap, Service, StatefulSet (+ Namespace)
    assert passed == kinds[name], check.stdout


@needs_kubectl
def test_the_overlay_is_a_four_antenna_array_on_the_base() -> None:
    base, overlay = render("base"), render("array-4")
    statefulset = one(overlay, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 4
    assert one(overlay, "Namespace")["metadata"]["name"] == statefulset["metadata"]["namespace"]
    # The same pod template as the base's, but for the merged ConfigMap's hashed name.
    names = [one(objects, "ConfigMap")["metadata"]["name"] for objects in (base, overlay)]
    base_template = json.dumps(one(base, "StatefulSet")["spec"]["template"])
    assert json.loads(base_template.replace(*names)) == statefulset["spec"]["template"]
    service = one(overlay, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= (
        statefulset["spec"]["template"]["metadata"]["labels"].items()
    )


@needs_kubectl
def test_pod_template_has_what_an_antenna_needs() -> None:
    statefulset = one(render("array-4"), "StatefulSet")
    template = statefulset["spec"]["template"]
    pod = template["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"katcp": 7147, "metrics": 9100}
    assert container["livenessProbe"]["exec"]["command"] == ["dsim-healthcheck"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@needs_kubectl
def test_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (container,) = one(render("base"), "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"localhost/dsim:{version}", (
        "deploy/kubernetes/base/kustomization.yaml: set images[0].newTag to the version in "
        "pyproject.toml (what scripts/build_image.sh tags)"
    )


@needs_kubectl
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_memory_covers_the_signal_window(name: str) -> None:
    """The measured model in statefulset.yaml: 60 MB + 22 B per sample of max-period."""
    objects = render(name)
    config = one(objects, "ConfigMap")["data"]
    (container,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit == container["resources"]["requests"]["memory"]
    units = {"Mi": 2**20, "Gi": 2**30}
    limit_bytes = int(limit[:-2]) * units[limit[-2:]]
    need = 60e6 + 22 * int(config["DSIM_MAX_PERIOD"])
    assert limit_bytes >= 1.2 * need, f"memory {limit} is too little for {need / 1e6:.0f} MB"
    assert int(config["DSIM_PERIOD"]) <= int(config["DSIM_MAX_PERIOD"])


# ------------------------------------------------------------------ what each pod runs


def pod_environment(
    objects: list[dict[str, Any]], ordinal: int, host_ip: str
) -> tuple[list[str], dict[str, str]]:
    """The command and environment the kubelet gives the container of pod `ordinal`."""
    statefulset = one(objects, "StatefulSet")
    configmaps = {c["metadata"]["name"]: c["data"] for c in objects if c["kind"] == "ConfigMap"}
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    fields = {
        "metadata.name": f"{statefulset['metadata']['name']}-{ordinal}",
        "status.hostIP": host_ip,
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return [*container["command"], *container.get("args", [])], env


def run_entrypoint(command: list[str], env: dict[str, str], bin_dir: Path) -> list[str]:
    """Run the pod's command with a stand-in dsim that prints its arguments as JSON."""
    result = subprocess.run(
        command,
        env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``dsim-antenna`` (the real script, as installed in the image) and a stand-in dsim."""
    (tmp_path / "dsim-antenna").symlink_to(ANTENNA_SCRIPT)
    stub = tmp_path / "dsim"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    return tmp_path


@needs_kubectl
def test_each_pod_is_its_own_antenna_on_one_clock(bin_dir: Path) -> None:
    objects = render("array-4")
    config = one(objects, "ConfigMap")["data"]
    base = ipaddress.IPv4Address(config["DSIM_BASE_GROUP"])
    settings: list[Settings] = []
    for k in range(4):
        command, env = pod_environment(objects, k, host_ip="127.0.0.1")
        args = run_entrypoint(command, env, bin_dir)
        got = parse_args(args)  # dsim's own parser accepts it (exit 2 otherwise)
        settings.append(got)
        assert got.format == "meerkat"
        assert got.digitiser_id == 2 * k
        assert got.destinations == [f"{base + 16 * k}+7:7148", f"{base + 16 * k + 8}+7:7148"]
        assert got.dither_seed == int(config["DSIM_DITHER_SEED"]) + k
        assert got.interface == "127.0.0.1"
        assert (got.katcp_host, got.katcp_port, got.prometheus_port) == ("0.0.0.0", 7147, 9100)
        assert got.signals == config["DSIM_SIGNALS"]
    assert {s.sync_time for s in settings} == {float(config["DSIM_SYNC_TIME"])}
    assert {s.adc_sample_rate for s in settings} == {float(config["DSIM_ADC_SAMPLE_RATE"])}
    assert {(s.period, s.max_period) for s in settings} == {
        (int(config["DSIM_PERIOD"]), int(config["DSIM_MAX_PERIOD"]))
    }
    groups = [g for s in settings for g in s.destinations]
    assert len(set(groups)) == 8, "every polarisation of every antenna has groups of its own"


@needs_kubectl
def test_base_groups_of_the_base_array(bin_dir: Path) -> None:
    objects = render("base")
    command, env = pod_environment(objects, 1, host_ip="127.0.0.1")
    args = run_entrypoint(command, env, bin_dir)
    assert args[args.index("--digitiser-id") + 1] == "2"
    assert args[-2:] == ["239.102.0.16+7:7148", "239.102.0.24+7:7148"]


# ------------------------------------------------------------------ dsim-antenna itself

BASE_ENV = {"DSIM_SYNC_TIME": "1700000000.5", "POD_NAME": "dsim-12"}


def test_antenna_ordinal_and_groups() -> None:
    antenna = load_antenna_module()
    command: Callable[..., list[str]] = antenna.command
    args = command(BASE_ENV, ["--log-level", "DEBUG"])
    assert args[:5] == ["dsim", "--format", "meerkat", "--digitiser-id", "24"]
    assert args[args.index("--sync-time") + 1] == "1700000000.5"
    assert args[args.index("--adc-sample-rate") + 1] == "1712e6"
    assert args[-4:] == ["--log-level", "DEBUG", "239.102.0.192+7:7148", "239.102.0.200+7:7148"]
    assert "--dither-seed" not in args and "--interface" not in args
    # DSIM_ANTENNA wins over the pod name; other strides and group counts.
    env = {
        **BASE_ENV,
        "DSIM_ANTENNA": "3",
        "DSIM_BASE_GROUP": "239.10.0.0",
        "DSIM_GROUPS": "4",
        "DSIM_POL_STRIDE": "4",
        "DSIM_ANTENNA_STRIDE": "8",
        "DSIM_DATA_PORT": "7150",
        "DSIM_DITHER_SEED": str(2**100),
    }
    args = command(env)
    assert args[-2:] == ["239.10.0.24+3:7150", "239.10.0.28+3:7150"]
    assert args[args.index("--dither-seed") + 1] == str(2**100 + 3)
    assert command({**env, "DSIM_GROUPS": "1", "DSIM_POL_STRIDE": "1"})[-2:] == [
        "239.10.0.24:7150",
        "239.10.0.25:7150",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"POD_NAME": "dsim-0"}, "DSIM_SYNC_TIME is not set"),
        ({"DSIM_SYNC_TIME": "soon", "POD_NAME": "dsim-0"}, "is not a number"),
        ({"DSIM_SYNC_TIME": "1"}, "no antenna index"),
        ({"DSIM_SYNC_TIME": "1", "POD_NAME": "node-a"}, "no antenna index"),
        ({**BASE_ENV, "DSIM_BASE_GROUP": "10.0.0.1"}, "leave the multicast range"),
        ({**BASE_ENV, "DSIM_BASE_GROUP": "239.255.255.100"}, "leave the multicast range"),
        ({**BASE_ENV, "DSIM_POL_STRIDE": "4"}, "must be at least 8"),
        ({**BASE_ENV, "DSIM_DATA_PORT": "70000"}, "is not a UDP port"),
    ],
)
def test_antenna_refuses_bad_settings_in_one_line(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ANTENNA_SCRIPT)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("dsim-antenna: error: ")
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# ------------------------------------------------------------------ health check


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env={**os.environ, "DSIM_KATCP_HOST": "0.0.0.0", "DSIM_KATCP_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_healthcheck_asks_dsim_over_katcp(
    dsim_processes: Callable[..., Any],
) -> None:
    dsim: DsimProcess = await dsim_processes("--katcp-host", "127.0.0.1")
    ok = healthcheck(dsim.port)
    assert ok.returncode == 0, ok.stderr
    dsim.process.kill()
    await dsim.process.wait()
    down = healthcheck(dsim.port)
    assert down.returncode == 1
    assert down.stderr.startswith(f"dsim-healthcheck: katcp 127.0.0.1:{dsim.port}: ")


def test_healthcheck_finds_the_katcp_address_of_the_main_process(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("dsim_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(
        b"/opt/dsim/bin/python\0/opt/dsim/bin/dsim\0--katcp-port\0"
        b"7200\0--katcp-host=10.0.0.5\0--start\0"
    )
    assert module.main_process_options(str(cmdline)) == {
        "--katcp-port": "7200",
        "--katcp-host": "10.0.0.5",
    }
    assert module.main_process_options(str(tmp_path / "missing")) == {}
