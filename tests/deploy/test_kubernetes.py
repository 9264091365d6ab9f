"""deploy/kubernetes: every manifest valid against the Kubernetes schemas (offline, strict), and the
values that must agree with the code agreeing with it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from wcu_ai.api.app import create_app
from wcu_ai.api.main import GRACEFUL_SHUTDOWN_SECONDS
from wcu_ai.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still in EKS' standard support when this was written, and the newest
# kubernetes-validate bundles.
VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# Kinds that need a CRD: no bundled schema, parsed only.
CRD_KINDS = {"ExternalSecret", "SecretStore", "ServiceMonitor"}
# Read by someone else than Settings: uvicorn, Agno, the provider SDKs.
OTHER_VARIABLES = {
    "FORWARDED_ALLOW_IPS",
    "AGNO_TELEMETRY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AWS_REGION",
}


def variable(field: str) -> str:
    """The environment variable of a Settings field (DATABASE_URL is an alias, the rest WCU_*)."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"WCU_{field.upper()}"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in BASE.rglob("*.yaml") if p.name != "kustomization.yaml")


def base() -> dict[tuple[str, str], dict[str, Any]]:
    """The resources of the kustomization, by (kind, name)."""
    kustomization = documents(BASE / "kustomization.yaml")[0]
    found = {}
    for name in kustomization["resources"]:
        for doc in documents(BASE / name):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config() -> dict[str, str]:
    return base()["ConfigMap", "wcu-ai-config"]["data"]


def configured(field: str) -> Any:
    """A setting as the pods get it: the ConfigMap's value, else the default."""
    name = variable(field)
    if name in config():
        return getattr(Settings.model_validate({field: config()[name]}), field)
    return Settings.model_fields[field].default


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(BASE)))
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        if doc["kind"] in CRD_KINDS:
            assert path.parent.name == "optional", f"{doc['kind']} needs a CRD: keep it out of the base"
            continue
        # strict: an unknown or misspelt field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_field_fails_the_validation() -> None:
    deployment = base()["Deployment", "wcu-ai-api"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_base_manifest() -> None:
    listed = set(documents(BASE / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk


def test_ports_probes_and_uid_agree_with_the_code_and_the_images() -> None:
    resources = base()
    api, runner = resources["Deployment", "wcu-ai-api"], resources["Deployment", "wcu-ai-runner"]
    api_port = configured("api_port")
    [http] = container(api)["ports"]
    assert (http["name"], http["containerPort"]) == ("http", api_port)
    images = (ROOT / "nix" / "images.nix").read_text()
    assert f'ExposedPorts."{api_port}/tcp"' in images
    service = resources["Service", "wcu-ai-api"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    # The probe paths are routes of the app, liveness the one that never touches the database.
    app = create_app(Settings.model_validate({"api_keys": ["k" * 16]}))
    paths = {getattr(route, "path", None) for route in app.routes}
    probes = container(api)
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
    assert probes["startupProbe"]["httpGet"]["path"] == "/health"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {"/health", "/health/ready"} <= paths

    uid = int(re.search(r"^\s*uid = (\d+);", images, re.M).group(1))  # type: ignore[union-attr]
    for deployment in (api, runner):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "wcu-ai"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == uid
        security = container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        assert mounts.keys() == {"/tmp", "/home/app"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert all("emptyDir" in volumes[name] for name in mounts.values())
        resources_of = container(deployment)["resources"]
        assert resources_of["requests"].keys() == {"cpu", "memory"} and "memory" in resources_of["limits"]
        env_from = container(deployment)["envFrom"]
        assert {"configMapRef": {"name": "wcu-ai-config"}} in env_from
        assert {"secretRef": {"name": "wcu-ai-secrets"}} in env_from
        assert "command" not in container(deployment) and "lifecycle" not in container(deployment)
    account = resources["ServiceAccount", "wcu-ai"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_replicas_and_rollouts_fit_the_leader_and_the_load_balancer() -> None:
    resources = base()
    api, runner = resources["Deployment", "wcu-ai-api"], resources["Deployment", "wcu-ai-runner"]
    assert api["spec"]["replicas"] >= 2
    assert resources["HorizontalPodAutoscaler", "wcu-ai-api"]["spec"]["minReplicas"] >= 2
    assert resources["PodDisruptionBudget", "wcu-ai-api"]["spec"]["minAvailable"] >= 1
    assert runner["spec"]["replicas"] == 2  # a leader and a hot standby
    assert runner["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    for deployment, name in ((api, "wcu-ai-api"), (runner, "wcu-ai-runner")):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert resources["PodDisruptionBudget", name]["spec"]["selector"]["matchLabels"] == selector


def test_grace_periods_cover_the_runner_grace_and_the_api_drain() -> None:
    resources = base()
    runner_grace = configured("runner_grace_seconds")
    runner = resources["Deployment", "wcu-ai-runner"]["spec"]["template"]["spec"]
    # Past the grace the runner still hands back its tasks and releases its lock: leave it time.
    assert runner["terminationGracePeriodSeconds"] >= runner_grace + 15

    drain = configured("api_drain_seconds")
    assert drain > 0, "the API must drain: the load balancer keeps sending while it deregisters"
    api = resources["Deployment", "wcu-ai-api"]["spec"]["template"]["spec"]
    assert api["terminationGracePeriodSeconds"] > drain + GRACEFUL_SHUTDOWN_SECONDS


def test_metrics_ports_and_scrape_annotations_agree_with_the_settings() -> None:
    resources = base()
    assert configured("api_metrics_enabled") is True
    runner_port = configured("runner_metrics_port")
    assert runner_port == 9464  # the conventional port, shared with the images
    runner = resources["Deployment", "wcu-ai-runner"]
    [metrics] = container(runner)["ports"]
    assert (metrics["name"], metrics["containerPort"]) == ("metrics", runner_port)
    assert container(runner)["readinessProbe"]["tcpSocket"]["port"] == "metrics"
    annotations = runner["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        str(runner_port),
        "/metrics",
    )
    api_annotations = resources["Deployment", "wcu-ai-api"]["spec"]["template"]["metadata"]["annotations"]
    assert api_annotations["prometheus.io/port"] == str(configured("api_port"))
    assert [p["targetPort"] for p in resources["Service", "wcu-ai-runner-metrics"]["spec"]["ports"]] == [
        "metrics"
    ]
    monitors = documents(BASE / "optional" / "servicemonitor.yaml")
    assert {m["spec"]["endpoints"][0]["port"] for m in monitors} == {"http", "metrics"}


def test_every_variable_set_is_one_the_service_reads() -> None:
    settings_variables = {variable(field) for field in Settings.model_fields}
    set_here: dict[str, str] = {}
    for path in manifests():
        for doc in documents(path):
            if doc["kind"] == "ConfigMap":
                set_here |= dict.fromkeys(doc["data"], path.name)
            if doc["kind"] == "Secret":
                set_here |= dict.fromkeys(doc["stringData"], path.name)
            if doc["kind"] == "Deployment":
                for env in container(doc).get("env", []):
                    set_here[env["name"]] = path.name
    unknown = {
        name: where for name, where in set_here.items() if name not in settings_variables | OTHER_VARIABLES
    }
    assert not unknown, f"not read by the service (a typo?): {unknown}"
    # And each value the ConfigMap sets is one the settings accept.
    for name, value in config().items():
        field = next((f for f in Settings.model_fields if variable(f) == name), None)
        if field is not None:
            Settings.model_validate({field: value})
