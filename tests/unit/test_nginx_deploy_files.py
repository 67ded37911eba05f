"""The nginx deployment shape (infra/deploy/nginx) agrees with itself and the code: Entrepôt's config names
nginx's internal location, nginx proxies to the port Entrepôt listens on and aliases its blob directory,
both containers run as the image's uid, and nginx's port is the one published."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from infra.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "infra" / "deploy" / "nginx"
CONF = (NGINX / "nginx.conf").read_text()
IMAGE_UID = "10001"   # infra/deploy/Dockerfile: USER 10001:10001


def settings():
    return load_settings(str(NGINX / "entrepot.toml"))


def objects() -> dict[str, dict]:
    found = {}
    for name in yaml.safe_load((NGINX / "kustomization.yaml").read_text())["resources"]:
        for doc in yaml.safe_load_all((NGINX / name).read_text()):
            found[doc["kind"]] = doc
    return found


def containers() -> dict[str, dict]:
    return {c["name"]: c for c in objects()["StatefulSet"]["spec"]["template"]["spec"]["containers"]}


def listen_port() -> int:
    return int(re.search(r"^\s*listen (\d+);", CONF, re.M)[1])


def test_entrepots_config_names_nginxs_internal_location_port_and_blob_directory():
    loaded = settings()
    internal = re.search(r"location (\S+) \{\s*internal;\s*alias (\S+);", CONF)
    assert loaded.storage.backend == "filesystem"
    assert loaded.storage.accel_redirect == internal[1]
    assert internal[2] == f"{loaded.data_dir}/storage/blobs/"   # infra/storage: <data_dir>/storage/blobs
    assert re.search(rf"server 127\.0\.0\.1:{loaded.port};", CONF)
    assert loaded.host == "127.0.0.1"   # only nginx, in the same network namespace, reaches it
    assert dockerfile_user() == f"{IMAGE_UID}:{IMAGE_UID}"


def dockerfile_user() -> str:
    return re.search(r"^USER (\S+)$", (ROOT / "infra" / "deploy" / "Dockerfile").read_text(), re.M)[1]


def test_kustomization_lists_every_manifest_and_generates_the_config_from_the_files_compose_mounts():
    kustomization = yaml.safe_load((NGINX / "kustomization.yaml").read_text())
    on_disk = {p.name for p in NGINX.glob("*.yaml")} - {"kustomization.yaml", "compose.yaml"}
    assert set(kustomization["resources"]) == on_disk
    [generator] = kustomization["configMapGenerator"]
    assert set(generator["files"]) == {"entrepot.toml", "nginx.conf"}
    pod_volumes = {v["name"]: v for v in objects()["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    assert pod_volumes["config"]["configMap"]["name"] == generator["name"]


def test_the_sidecar_reads_the_blob_volume_read_only_as_entrepots_uid_and_serves_the_service_port():
    pod = objects()["StatefulSet"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == IMAGE_UID
    entrepot, nginx = containers()["entrepot"], containers()["nginx"]
    data_dir = settings().data_dir
    assert {"name": "data", "mountPath": data_dir} in entrepot["volumeMounts"]
    assert {"name": "data", "mountPath": data_dir, "readOnly": True} in nginx["volumeMounts"]
    conf_path = nginx["args"][nginx["args"].index("-c") + 1]
    assert any(m["mountPath"] == conf_path and m.get("subPath") == "nginx.conf" for m in nginx["volumeMounts"])
    config_path = entrepot["args"][entrepot["args"].index("--config") + 1]
    assert any(m["mountPath"] == config_path and m.get("subPath") == "entrepot.toml" for m in entrepot["volumeMounts"])
    assert nginx["ports"] == [{"name": "http", "containerPort": listen_port()}]
    service = objects()["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == objects()["StatefulSet"]["spec"]["selector"]["matchLabels"]
    assert any(m["mountPath"] == "/tmp" for m in nginx["volumeMounts"])   # its pid and temp files (read-only root)


def test_compose_runs_nginx_in_entrepots_network_namespace_with_the_same_files():
    services = yaml.safe_load((NGINX / "compose.yaml").read_text())["services"]
    entrepot, nginx = services["entrepot"], services["nginx"]
    assert nginx["network_mode"] == "service:entrepot"
    assert nginx["user"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert entrepot["ports"] == [f"127.0.0.1:5000:{listen_port()}"]   # nginx's port, never Entrepôt's
    assert "./nginx.conf:" + nginx["command"][nginx["command"].index("-c") + 1] + ":ro" in nginx["volumes"]
    assert f"data:{settings().data_dir}:ro" in nginx["volumes"]
    assert f"data:{settings().data_dir}" in entrepot["volumes"]
    config_path = entrepot["command"][entrepot["command"].index("--config") + 1]
    assert f"./entrepot.toml:{config_path}:ro" in entrepot["volumes"]
