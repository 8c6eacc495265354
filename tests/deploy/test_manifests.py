"""The deployment files, checked without Docker or a cluster.

Kubernetes manifests against the Kubernetes JSON schemas (``kubernetes-validate``, schemas bundled), the
kustomize overlay rendered here (base resources, overlay namespace/images/replicas/patches), the compose file
against the Compose Specification schema (the copy ``check-jsonschema`` ships), the systemd unit with
``systemd-analyze verify``, the Dockerfile's structure, and every ``GBOPS_*`` name in them against
:class:`gbcore.settings.Settings`, so that renaming a setting breaks this test rather than a deployment.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gbcore.settings import Settings
from tests.conftest import ROOT, need, need_tool

DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
UNIT = DEPLOY / "systemd" / "gbops@.service"
DOCKERFILE = ROOT / "Dockerfile"
DOC = ROOT / "docs" / "deploy.md"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise (mixed-protocol LoadBalancer is GA)

GBOPS_NAME = re.compile(r"\bGBOPS_[A-Z0-9_]*[A-Z0-9]\b")
# names that are not settings on purpose: the test-suite's own variables, quoted in the docs
NOT_SETTINGS = {"GBOPS_TEST_DATABASE_URL", "GBOPS_TEST_REDIS_URL", "GBOPS_CONFIG"}


def _yaml():
    try:
        import yaml
    except ImportError:
        need(False, "PyYAML is not installed (pip install kubernetes-validate)")
    return yaml


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in _yaml().safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# ---------------------------------------------------------------------------------------- kustomize
def _merge(base: Any, patch: Any) -> Any:
    """Strategic-merge subset: maps merge key by key, lists of named maps merge by ``name``, else replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        index = {item["name"]: n for n, item in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = _merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build folder`` produces, for the features these kustomizations use."""
    kust = _yaml().safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    allowed = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    assert set(kust) <= allowed, f"{folder}: kustomize features this renderer does not know: {set(kust) - allowed}"
    resources: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = (folder / entry).resolve()
        assert path.exists(), f"{folder}/kustomization.yaml names a missing resource {entry}"
        resources += render(path) if path.is_dir() else _docs(path)
    for patch_entry in kust.get("patches", []):
        assert set(patch_entry) == {"path"}, "only file patches (target from kind and name) are rendered"
        patches = _docs(folder / patch_entry["path"])
        assert len(patches) == 1, f"{patch_entry['path']}: one patch per file"
        for patch in patches:
            matches = [n for n, r in enumerate(resources) if _key(r) == _key(patch)]
            assert len(matches) == 1, f"patch {patch_entry['path']} {_key(patch)} matches {len(matches)} resources"
            resources[matches[0]] = _merge(resources[matches[0]], patch)
    for rep in kust.get("replicas", []):
        matches = [r for r in resources if r["metadata"]["name"] == rep["name"] and "replicas" in r.get("spec", {})]
        assert len(matches) == 1, f"replicas: {rep['name']} matches {len(matches)} workloads"
        matches[0]["spec"]["replicas"] = rep["count"]
    for image in kust.get("images", []):
        for res in resources:
            for c in res.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    if "namespace" in kust:
        for res in resources:
            res["metadata"]["namespace"] = kust["namespace"]
    return resources


def _kv():
    try:
        import kubernetes_validate
    except ImportError:
        need(False, "kubernetes-validate is not installed (pip install kubernetes-validate)")
    return kubernetes_validate


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay-example"])
def test_kustomization_renders_to_valid_kubernetes_resources(folder: Path) -> None:
    kv = _kv()
    resources = render(folder)
    assert resources
    seen = set()
    for res in resources:
        assert _key(res) not in seen, f"duplicate resource {_key(res)}"
        seen.add(_key(res))
        kv.validate(res, K8S_VERSION, strict=True)  # raises ValidationError with the offending path


def test_every_base_file_is_a_resource_and_each_validates_alone() -> None:
    kv = _kv()
    kust = _yaml().safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == set(kust["resources"]), "a manifest in base/ that kustomize would not deploy"
    for name in files:
        for doc in _docs(BASE / name):
            kv.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The schema check is real: a misspelt field and a wrong type are errors."""
    kv = _kv()
    media = next(r for r in render(BASE) if _key(r) == ("Deployment", "gbops-media"))
    bad = copy.deepcopy(media)
    bad["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(media)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def _deployments(resources: list[dict]) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == "Deployment"}


def _container(dep: dict) -> dict:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "<ref>") for e in container.get("env", [])}


def test_k8s_roles_probes_drain_and_security() -> None:
    resources = render(OVERLAY)
    deps = _deployments(resources)
    assert set(deps) == {"gbops-control", "gbops-media"}
    assert _env(_container(deps["gbops-control"]))["GBOPS_ROLES"] == "sip,portal,worker"
    assert _env(_container(deps["gbops-media"]))["GBOPS_ROLES"] == "media"
    assert deps["gbops-media"]["spec"]["replicas"] == 3  # the overlay's replicas
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        c = _container(dep)
        assert c["image"] == "registry.example/gbops:0.1.0", name
        assert dep["metadata"]["namespace"] == "gbops"
        assert c["livenessProbe"]["httpGet"]["path"] == "/api/health"
        assert c["readinessProbe"]["httpGet"]["path"] == "/api/health?ready=1"
        assert c["startupProbe"]["httpGet"]["path"] == "/api/health"
        assert "GBOPS_NODE_ID" in _env(c), f"{name}: every pod needs its own node id"
        assert pod["terminationGracePeriodSeconds"] >= 60, f"{name}: no time to drain"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        requests = c["resources"]["requests"]
        assert requests["cpu"] and requests["memory"], f"{name}: requests from the benchmarks"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/run/secrets"]]["secret"]["secretName"] == "gbops-env"
        # the keys reach the node as 0600 files of its own user (a clustered node refuses group-readable keys):
        # an init container copies the Secret into a memory-backed folder
        assert "emptyDir" in volumes[mounts["/etc/gbops/keys"]]
        (init,) = pod["initContainers"]
        init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        assert init_mounts["/etc/gbops/keys"] == mounts["/etc/gbops/keys"]
        source = [p for p, v in init_mounts.items() if "secret" in volumes[v]]
        assert len(source) == 1 and volumes[init_mounts[source[0]]]["secret"]["secretName"] == "gbops-keys"
        assert "install -m 0600" in " ".join(init["command"]) and source[0] in " ".join(init["command"])
        assert c["envFrom"] == [{"configMapRef": {"name": "gbops-config"}}]
    media = deps["gbops-media"]["spec"]["template"]["spec"]
    assert media["hostNetwork"] is True and media["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert media["terminationGracePeriodSeconds"] > deps["gbops-control"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    media_env = _env(_container(deps["gbops-media"]))
    assert media_env["GBOPS_WATERMARK_MAX_ENCODERS"] == "21"  # the overlay's patch merged into the env list
    assert media_env["GBOPS_MEDIA_MAX_STREAMS"] == "200"  # the base value kept beside it
    assert Settings(rtp_ports=media_env["GBOPS_RTP_PORTS"]).rtp_port_range[1] <= 65535
    # $(VAR) references resolve to variables defined earlier in the same list
    names: list[str] = []
    for e in _container(deps["gbops-media"])["env"]:
        for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
            assert ref in names, f"{e['name']} refers to $({ref}) before it is defined"
        names.append(e["name"])


def test_k8s_services_and_disruption_budgets() -> None:
    resources = render(OVERLAY)
    sip = next(r for r in resources if _key(r) == ("Service", "gbops-sip"))
    assert sip["spec"]["externalTrafficPolicy"] == "Local"
    ports = {(p["port"], p["protocol"]) for p in sip["spec"]["ports"]}
    assert {(5060, "UDP"), (5060, "TCP"), (5061, "TCP")} <= ports
    deps = _deployments(resources)
    for svc in (r for r in resources if r["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        targets = [d for d in deps.values() if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert targets, f"Service {svc['metadata']['name']} selects no pod"
        named = {p["name"] for d in targets for p in _container(d)["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named, f"{svc['metadata']['name']}: no container port {port['targetPort']}"
    pdbs = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    for name, dep in deps.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name} needs exactly one PodDisruptionBudget"
        if name == "gbops-control":
            # one SIP node until registrations have a per-node owner: replaced (Recreate), never doubled
            assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", name
        else:
            assert dep["spec"]["replicas"] >= 2, f"{name}: one replica cannot roll without an interruption"


def test_k8s_secrets_hold_placeholders_only() -> None:
    """Never a real value in the repository: every password placeholder is empty (a node refuses to start)."""
    secrets = [r for r in render(BASE) if r["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"gbops-env", "gbops-keys"}
    for s in secrets:
        for value in list(s.get("stringData", {}).values()) + list((s.get("data") or {}).values()):
            assert value == "", f"Secret {s['metadata']['name']} carries a value"
    env = next(s for s in secrets if s["metadata"]["name"] == "gbops-env")
    assert set(env["stringData"]) == {"GBOPS_DATABASE_URL", "GBOPS_REDIS_URL", "GBOPS_SIP_PASSWORD",
                                      "GBOPS_ADMIN_PASSWORD"}
    assert Settings.model_fields["sip_password"].annotation is not str  # secrets stay SecretStr


# ---------------------------------------------------------------------------------------- compose
def _compose_schema() -> dict:
    try:
        from check_jsonschema.builtin_schemas import get_builtin_schema
    except ImportError:
        need(False, "check-jsonschema is not installed (it ships the Compose Specification schema)")
    return get_builtin_schema("vendor.compose-spec")


def test_compose_file_matches_the_compose_specification() -> None:
    import jsonschema

    schema = _compose_schema()
    assert "services" in schema["properties"]
    data = _yaml().safe_load(COMPOSE.read_text(encoding="utf-8"))
    jsonschema.validate(data, schema)  # raises with the offending path
    broken = copy.deepcopy(data)
    broken["services"]["control"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _port_range(text: str) -> range:
    low, high = Settings(rtp_ports=text).rtp_port_range
    return range(low, high + 1)


def test_compose_cluster_shape() -> None:
    data = _yaml().safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = data["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    nodes = {name: s for name, s in services.items() if "GBOPS_ROLES" in (s.get("environment") or {})}
    roles = sorted(s["environment"]["GBOPS_ROLES"] for s in nodes.values())
    assert roles == ["media", "media", "sip,portal,worker"]
    ids = [s["environment"]["GBOPS_NODE_ID"] for s in nodes.values()]
    assert len(set(ids)) == len(ids)
    media = [s for s in nodes.values() if s["environment"]["GBOPS_ROLES"] == "media"]
    r1, r2 = (_port_range(s["environment"]["GBOPS_RTP_PORTS"]) for s in media)
    assert not set(r1) & set(r2), "media nodes on one host need distinct RTP ranges"
    host_ports = [(s["environment"].get("GBOPS_HTTP_PORT", "8080"), s["environment"].get("GBOPS_HTTPS_PORT", "8443"))
                  for s in nodes.values()]
    flat = [p for pair in host_ports for p in pair]
    assert len(set(flat)) == len(flat), "nodes on the host network need distinct HTTP(S) ports"
    for s in media:
        env = s["environment"]
        assert env["GBOPS_PUBLIC_URL"].endswith(":" + env["GBOPS_HTTPS_PORT"])
        assert "GBOPS_MEDIA_IP" in env and "GBOPS_RECORD_DIRS" in env
    for name, s in nodes.items():
        assert s["network_mode"] == "host"
        assert s["healthcheck"]["test"][-1] == "deploy.healthcheck", name
        assert s["environment"]["GBOPS_SECRETS_DIR"] == "/etc/gbops/keys"
        assert any(v.endswith(":/etc/gbops/keys:ro") for v in s["volumes"]), name
        assert any(v.endswith(":/var/lib/gbops") for v in s["volumes"]), name
        targets = {sec["target"] for sec in s["secrets"]}
        assert {"GBOPS_DATABASE_URL", "GBOPS_REDIS_URL", "GBOPS_SIP_PASSWORD"} <= targets
        assert {"postgres", "redis"} <= set(s["depends_on"])
    for s in services.values():
        assert "healthcheck" in s
    # every ${VAR} interpolated has a default or is set in .env.example
    example = dict(line.split("=", 1) for line in (COMPOSE.parent / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for var, modifier in re.findall(r"(?<!\$)\$\{(\w+)(:?[-?][^}]*)?\}", COMPOSE.read_text(encoding="utf-8")):
        assert modifier.startswith((":-", "-")) or var in example, f"${{{var}}} has no default and no example"


# ---------------------------------------------------------------------------------------- systemd
def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    gbops = shutil.which("gbops", path=str(Path(sys.executable).parent))
    need(gbops is not None, "the gbops console script is not installed in this environment")
    text = UNIT.read_text(encoding="utf-8").replace("/opt/gbops/bin/gbops", str(gbops))
    instance = tmp_path / "gbops@control.service"
    instance.write_text(text, encoding="utf-8")
    out = subprocess.run([tool, "verify", "--man=no", str(instance)], capture_output=True, text=True, timeout=60)
    complaints = [ln for ln in (out.stdout + out.stderr).splitlines() if str(tmp_path) in ln or "gbops@" in ln]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr
    # the check is real: an unknown key is reported
    (tmp_path / "gbops@bad.service").write_text(text.replace("Restart=on-failure", "Restart=on-failur"))
    bad = subprocess.run([tool, "verify", "--man=no", str(tmp_path / "gbops@bad.service")], capture_output=True,
                         text=True, timeout=60)
    assert "on-failur" in bad.stdout + bad.stderr


def test_systemd_unit_hardening_and_drain() -> None:
    svc = _unit(UNIT)["Service"]
    assert svc["User"] == ["gbops"]
    assert svc["ExecStart"] == ["/opt/gbops/bin/gbops run"]
    assert "/etc/gbops/%i.env" in svc["EnvironmentFile"]
    assert svc["NoNewPrivileges"] == ["yes"] and svc["ProtectSystem"] == ["strict"]
    assert svc["ReadWritePaths"] and svc["Restart"] == ["on-failure"]
    assert int(svc["TimeoutStopSec"][0]) >= 120
    assert svc.get("AmbientCapabilities", [""]) == [""], "no capability while every port is above 1024"
    for env_file in (DEPLOY / "systemd").glob("*.env.example"):
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                      if line and not line.startswith("#"))
        for name in values:
            assert name.startswith("GBOPS_"), f"{env_file.name}: {name}"
        ports = [int(values[k]) for k in values if k.endswith("_PORT") and values[k] != "0"]
        assert all(p >= 1024 for p in ports), f"{env_file.name} binds below 1024 without a capability"
        if "GBOPS_ROLES" in values:
            Settings(roles=values["GBOPS_ROLES"])


# ---------------------------------------------------------------------------------------- Dockerfile
def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure() -> None:
    ins = _instructions(DOCKERFILE)
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    assert len(froms) >= 3, "multi-stage: front-end assets, builder, runtime"
    runtime = ins[froms[-1]:]
    assert runtime[0][1].endswith(" AS runtime")
    users = [rest for w, rest in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime runs as a non-root user"
    assert any(w == "HEALTHCHECK" and "deploy.healthcheck" in rest for w, rest in runtime)
    entry = [rest for w, rest in runtime if w == "ENTRYPOINT"]
    assert entry and "deploy.entrypoint" in entry[-1]
    runs = " ".join(rest for w, rest in runtime if w == "RUN")
    args = " ".join(rest for w, rest in runtime if w == "ARG")
    assert "fonts-wqy-microhei" in args + runs and "fonts-noto-cjk" in args + runs
    assert "ffmpeg" not in runs, "PyAV carries its own FFmpeg: the runtime needs no ffmpeg package"
    env = " ".join(rest for w, rest in runtime if w == "ENV")
    assert "GBOPS_DATA_DIR=/var/lib/gbops" in env
    exposed = " ".join(rest for w, rest in runtime if w == "EXPOSE").split()
    for port in ("5060/udp", "5060/tcp", "5061/tcp", "8443/tcp", "30000-30999/udp"):
        assert port in exposed
    # every package that pyproject installs is copied into the builder (a new package breaks this test)
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {rest.split()[0] for w, rest in ins if w == "COPY" and not rest.startswith("--")}
    for pattern in include:
        assert pattern.rstrip("*") in copied, f"Dockerfile does not copy package {pattern.rstrip('*')}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored


# ---------------------------------------------------------------------------------------- settings names
def _deployment_files() -> list[Path]:
    files = [DOCKERFILE, COMPOSE, COMPOSE.parent / ".env.example", DOC]
    files += sorted((DEPLOY / "k8s").rglob("*.yaml")) + sorted((DEPLOY / "systemd").iterdir())
    return files


def test_every_gbops_variable_is_a_setting() -> None:
    known = {f"GBOPS_{name.upper()}" for name in Settings.model_fields}
    assert DOC.is_file(), "docs/deploy.md is missing"
    seen = set()
    for path in _deployment_files():
        for name in GBOPS_NAME.findall(path.read_text(encoding="utf-8")):
            seen.add(name)
            assert name in known or name in NOT_SETTINGS, f"{path.relative_to(ROOT)}: {name} is not a setting"
    assert {"GBOPS_ROLES", "GBOPS_NODE_ID", "GBOPS_REDIS_URL", "GBOPS_DATABASE_URL", "GBOPS_PUBLIC_URL",
            "GBOPS_SECRETS_DIR"} <= seen


# ---------------------------------------------------------------------------------------- settings values
def _settings_of(env: dict[str, str], where: str) -> Settings:
    """The node's settings from its literal GBOPS_* values (values built from other variables are skipped)."""
    values = {k.removeprefix("GBOPS_").lower(): v for k, v in env.items()
              if k.startswith("GBOPS_") and "$(" not in v and "${" not in v}
    try:
        return Settings(_env_file=None, **values)
    except Exception as exc:  # pydantic's ValidationError names the setting
        raise AssertionError(f"{where}: {exc}") from None


def _interpolate(text: str, variables: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name, op, arg = m[1], m[2] or "", m[3] or ""
        if name in variables and variables[name]:
            return variables[name]
        assert op.endswith("-"), f"${{{name}}} is required and unset"
        return arg
    return re.sub(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, text)


def test_every_node_configuration_is_accepted_by_settings() -> None:
    example = dict(line.split("=", 1) for line in (COMPOSE.parent / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    data = _yaml().safe_load(_interpolate(COMPOSE.read_text(encoding="utf-8"), example))
    nodes = {n: s for n, s in data["services"].items() if "GBOPS_ROLES" in (s.get("environment") or {})}
    for name, service in nodes.items():
        s = _settings_of({k: str(v) for k, v in service["environment"].items()}, f"compose {name}")
        assert s.node_id == name.replace("control", "control-1")
        assert s.secrets_dir is not None and str(s.secrets_dir) == "/etc/gbops/keys"
    config = next(r for r in render(OVERLAY) if _key(r) == ("ConfigMap", "gbops-config"))["data"]
    for name, dep in _deployments(render(OVERLAY)).items():
        env = {**config, **{k: v for k, v in _env(_container(dep)).items() if v != "<ref>"}}
        s = _settings_of(env, f"k8s {name}")
        assert s.sip_id == "44010000002000000001"  # the overlay's value reached every node
    for env_file in sorted((DEPLOY / "systemd").glob("*.env.example")):
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
        _settings_of(env, f"systemd {env_file.name}")
