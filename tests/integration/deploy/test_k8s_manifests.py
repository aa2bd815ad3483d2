"""deploy/k8s: kubernetes-validate --strict, kustomization completeness, manifests that fit together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.integration.deploy.deploy_support import K8S, K8S_VERSIONS, tool, run


# --- Kubernetes manifests -------------------------------------------------------------------------

def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_manifests() -> dict[str, dict]:
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization()["resources"]}


def test_kustomization_lists_every_manifest() -> None:
    kust = kustomization()
    assert kust["kind"] == "Kustomization"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk
    deployment = k8s_manifests()["deployment.yaml"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kust["images"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate(version: str) -> None:
    validate = tool("kubernetes-validate")
    files = [str(K8S / name) for name in kustomization()["resources"]]
    pinned = [] if version == "default" else ["--kubernetes-version", version]
    done = run([validate, "--strict", *pinned, *files])
    assert done.returncode == 0 and "ERROR" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_kubernetes_validate_is_strict(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"))
    assert run([validate, "--strict", str(bad)]).returncode != 0


def test_kubernetes_manifests_fit_together() -> None:
    m = k8s_manifests()
    deployment, service, hpa, pdb, pvc = (m[n] for n in ("deployment.yaml", "service.yaml", "hpa.yaml",
                                                         "pdb.yaml", "pvc.yaml"))
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    [container] = pod["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names[service["spec"]["ports"][0]["targetPort"]] == 8000  # Dockerfile EXPOSE
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]

    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001  # Dockerfile USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    mounts = {v["mountPath"]: v for v in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert "/tmp" in mounts  # the only writable path with a read-only root filesystem
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == pvc["metadata"]["name"] and claim["readOnly"] is True

