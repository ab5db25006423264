"""The Kubernetes manifests (deploy/k8s), validated offline.

* Rendered as ``kubectl apply -k`` would (the kustomization's resources, its namespace and
  labels), every document is validated against the Kubernetes OpenAPI schemas of the target
  version, strictly (an unknown or misspelt field fails), by ``kubernetes-validate`` (the schemas
  ship in the wheel: no cluster, no network).  KEDA's two custom resources are validated against
  strict schemas of our own (tests/schemas/keda.json).
* Our policy on top: non-root, read-only root filesystem, no capabilities, no privilege
  escalation, a seccomp profile, CPU and memory requests and a memory limit on every container,
  probes on long-running ones, secrets only from Secrets, pinned images, and a ScaledObject that
  scales the worker Deployment on our real queue lists down to zero.  A deliberately broken copy
  of each rule is caught (the checks can fail).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
SCHEMAS = json.loads((Path(__file__).parent / "schemas" / "keda.json").read_text())
#: Peak RSS of a worker process serving the shipped model (README "Kubernetes": measured).
WORKER_PEAK_RSS_MIB = 680
SECRET_NAMES = ("PASSWORD", "TOKEN", "SECRET", "REDIS_URL", "ACCESS_KEY")


def render() -> list[dict[str, Any]]:
    """The documents ``kubectl apply -k deploy/k8s`` would send."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            doc["metadata"].setdefault("labels", {}).update(labels)
            docs.append(doc)
    return docs


def schema_errors(doc: dict[str, Any]) -> list[str]:
    import jsonschema
    import kubernetes_validate

    kind = doc["kind"]
    if doc["apiVersion"].startswith("keda.sh/"):
        schema = {**SCHEMAS[kind], "definitions": SCHEMAS["definitions"]}
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{kind}/{doc['metadata']['name']}: {e.message}" for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{kind}/{doc['metadata']['name']}: {str(exc).splitlines()[0]}"]
    return []


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [spec["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def policy_violations(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        for pod in pod_specs(doc):
            security = pod.get("securityContext", {})
            if not security.get("runAsNonRoot") or not security.get("runAsUser"):
                out.append(f"{name}: pod must run as a non-root user")
            if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                out.append(f"{name}: pod needs the RuntimeDefault seccomp profile")
            for c in pod["containers"]:
                where = f"{name}/{c['name']}"
                sc = c.get("securityContext", {})
                if sc.get("readOnlyRootFilesystem") is not True:
                    out.append(f"{where}: root filesystem must be read-only")
                if sc.get("allowPrivilegeEscalation") is not False:
                    out.append(f"{where}: privilege escalation must be off")
                if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    out.append(f"{where}: must drop every capability")
                resources = c.get("resources", {})
                if not {"cpu", "memory"} <= set(resources.get("requests", {})):
                    out.append(f"{where}: needs cpu and memory requests")
                if "memory" not in resources.get("limits", {}):
                    out.append(f"{where}: needs a memory limit")
                image = c["image"]
                tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
                if not tag or tag == "latest" or not any(ch.isdigit() for ch in tag):
                    out.append(f"{where}: image {image!r} is not pinned to a version")
                if doc["kind"] != "CronJob" and not (
                    c.get("livenessProbe") or c.get("readinessProbe")
                ):
                    out.append(f"{where}: a long-running container needs probes")
                for env in c.get("env", []):
                    secret_like = any(s in env["name"] for s in SECRET_NAMES)
                    if secret_like and "secretKeyRef" not in env.get("valueFrom", {}):
                        out.append(f"{where}: {env['name']} must come from a Secret")
    return out


def test_every_manifest_is_valid_against_the_kubernetes_and_keda_schemas() -> None:
    docs = render()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "CronJob", "ScaledObject", "NetworkPolicy"} <= kinds
    errors = [e for d in docs for e in schema_errors(d)]
    assert errors == []
    # The example Secrets are valid too, and every other manifest is in the kustomization.
    examples = [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]
    assert [e for d in examples for e in schema_errors(d)] == []
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
    }


def test_a_misspelt_field_fails_schema_validation() -> None:
    docs = render()
    worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker"
    )
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert schema_errors(broken)
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    broken = copy.deepcopy(scaled)
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 5  # must be a string
    assert schema_errors(broken)
    del broken["spec"]["scaleTargetRef"]
    assert schema_errors(broken)


def test_the_policy_holds_and_each_rule_can_fail() -> None:
    docs = render()
    assert policy_violations(docs) == []
    worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker"
    )
    breakages = {
        "non-root": lambda p, c: p["securityContext"].pop("runAsNonRoot"),
        "read-only": lambda p, c: c["securityContext"].update(readOnlyRootFilesystem=False),
        "privilege escalation": lambda p, c: c["securityContext"].pop("allowPrivilegeEscalation"),
        "capability": lambda p, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
        "requests": lambda p, c: c["resources"].pop("requests"),
        "memory limit": lambda p, c: c["resources"].pop("limits"),
        "not pinned": lambda p, c: c.update(image="review-sentiment-worker:latest"),
        "probes": lambda p, c: (c.pop("livenessProbe"), c.pop("startupProbe")),
        "from a Secret": lambda p, c: c["env"].append({"name": "REDIS_URL", "value": "redis://x"}),
        "seccomp": lambda p, c: p["securityContext"].pop("seccompProfile"),
    }
    for needle, breakage in breakages.items():
        broken = copy.deepcopy(worker)
        pod = broken["spec"]["template"]["spec"]
        breakage(pod, pod["containers"][0])
        found = policy_violations([broken])
        assert any(needle in v for v in found), (needle, found)


def test_keda_scales_the_worker_on_our_queue_lists_down_to_zero() -> None:
    from rq import Queue

    from shared.queues import WORKER_QUEUES

    docs = render()
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    worker = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker"
    )
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0
    lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"}
    assert lists == {Queue.redis_queue_namespace_prefix + q for q in WORKER_QUEUES}
    auth = {t["authenticationRef"]["name"] for t in scaled["spec"]["triggers"]}
    trigger_auth = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    assert auth <= trigger_auth
    # The Redis address points at the Service in the manifests' namespace.
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "redis")
    for trigger in scaled["spec"]["triggers"]:
        host = trigger["metadata"]["address"].split(":")[0]
        assert host.startswith(f"{service['metadata']['name']}.{service['metadata']['namespace']}.")
    # The worker's memory request covers its measured peak RSS; its cache is the S3 store's.
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert _mebibytes(container["resources"]["requests"]["memory"]) >= WORKER_PEAK_RSS_MIB
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["MODEL_STORE_URL"].startswith("s3://")
    # Scaled to zero, HTTP can still wake it: the API's readiness is not tied to workers
    # (tests/api/test_api.py: /readyz answers 200 with no worker).
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")
    probe = api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"


def test_the_bot_never_runs_two_pollers() -> None:
    bot = next(d for d in render() if d["kind"] == "Deployment" and d["metadata"]["name"] == "bot")
    assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"]["type"] == "Recreate"


def _env(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (pod,) = pod_specs(doc)
    return {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}


def _secret_of(env: dict[str, Any]) -> tuple[str, str]:
    ref = env["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_deployment_that_holds_secrets_users_and_networks_apart() -> None:
    docs = render()
    # Applying never resets a real Secret to placeholders: none is in the kustomization.
    assert not [d for d in docs if d["kind"] == "Secret"]
    by_name = {d["metadata"]["name"]: d for d in docs if pod_specs(d)}
    # One Redis user per component; Redis itself knows only their ACL (no shared password).
    keys = {name: _secret_of(_env(by_name[name])["REDIS_URL"])[1] for name in
            ("worker", "api", "bot", "trainer", "exporter")}  # fmt: skip
    assert len(set(keys.values())) == 5, keys
    redis = by_name["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert "--aclfile" in redis["command"] and "--requirepass" not in " ".join(redis["command"])
    # Workers read the store, only the trainer writes it and signs what it publishes.
    worker, trainer = _env(by_name["worker"]), _env(by_name["trainer"])
    assert _secret_of(worker["AWS_ACCESS_KEY_ID"])[0] == "sentiment-store-reader"
    assert _secret_of(trainer["AWS_ACCESS_KEY_ID"])[0] == "sentiment-store-writer"
    assert _secret_of(trainer["MODEL_SIGNING_KEY"])[0] == "sentiment-store-writer"
    assert "MODEL_SIGNING_KEY" not in worker
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["MODEL_VERIFY_KEY"]  # workers verify every version they fetch
    # Where votes are kept, a salt.
    for name in ("api", "bot"):
        assert _secret_of(_env(by_name[name])["FEEDBACK_SALT"]) == (
            "sentiment-secrets",
            "FEEDBACK_SALT",
        )
    # Networks: everything denied, then each component its own connections.
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert [r["from"] for r in policies["redis"]["ingress"]]
    allowed = policies["redis"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    assert set(allowed["values"]) == {"worker", "api", "bot", "trainer", "exporter"}
