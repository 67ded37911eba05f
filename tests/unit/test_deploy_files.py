"""The deployment files (infra/deploy) agree with the code: config keys, commands, probe paths, ports,
mounts and environment variables. Each test fails when a file drifts from what the code reads."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import botocore
import yaml  # PyPI PyYAML, installed with the test extra (moto[server] depends on it)
from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment

from infra.persistence import postgres_env
from infra.settings import DEFAULT_PORT, Settings, load_settings
from interfaces.cli import parser, projections_run, serve
from interfaces.http.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SOURCE_DIRS = ("domain", "application", "projections", "infra", "interfaces")
API, RUNNER = ("Deployment", "entrepot-api"), ("Deployment", "entrepot-projections")


# -- loading -----------------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def manifests() -> dict[tuple[str, str], dict]:
    """Every Kubernetes object under infra/deploy/kubernetes, by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict) -> dict:
    (only,) = pod(deployment)["containers"]
    return only


def configmap_settings(tmp_path: Path) -> Settings:
    data = manifests()[("ConfigMap", "entrepot-config")]["data"]
    path = tmp_path / "entrepot.toml"
    path.write_text(data["entrepot.toml"])
    return load_settings(str(path))


def config_path(args: list[str]) -> str:
    return args[args.index("--config") + 1]


def entrepot_services() -> dict[str, dict]:
    """The compose services that run the Entrepôt image."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def instruction(name: str, stage: int = -1) -> list[str]:
    """The arguments of every `name` instruction in one build stage (default: the final one)."""
    stages: list[list[tuple[str, str]]] = []
    for key, value in dockerfile():
        if key == "FROM":
            stages.append([])
        stages[-1].append((key, value))
    return [value for key, value in stages[stage] if key == name]


def source_text(directories: list[Path]) -> str:
    return "\n".join(p.read_text(errors="replace") for d in directories for p in d.rglob("*.py"))


# -- every file parses --------------------------------------------------------------------------------

def test_every_yaml_file_parses_and_every_manifest_is_a_named_object():
    assert yaml_files(), "no YAML under infra/deploy"
    for path in yaml_files():
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, f"{path} is empty"
    for (kind, name), obj in manifests().items():
        assert obj["apiVersion"] and kind and name
        if kind != "Namespace":
            assert obj["metadata"].get("namespace") == "entrepot", f"{kind}/{name} outside the entrepot namespace"


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}   # placeholder secrets never reach a cluster
    assert kustomization["namespace"] == "entrepot"


# -- the config files load and select the production shape -------------------------------------------

def assert_production_shape(settings: Settings) -> None:
    assert settings.database.url.startswith("postgresql://")
    postgres_env(settings.database.url, settings.database.schema)   # a URL eventsourcing can connect with
    assert settings.database.run_projections is False   # the API leaves them to `projections run`
    assert settings.storage.backend == "s3" and settings.storage.bucket
    assert settings.redis.url.startswith("redis://")
    assert settings.host == "0.0.0.0"                   # reachable from the Service / other containers
    assert not settings.secret_key and not settings.admin_token, "secrets belong in the environment"
    assert urlsplit(settings.database.url).password is None, "the password belongs in $PGPASSWORD"
    assert settings.organizations


def test_the_configmap_config_loads_and_selects_postgresql_s3_and_redis(tmp_path):
    settings = configmap_settings(tmp_path)
    assert_production_shape(settings)
    assert settings.data_dir == "/var/lib/entrepot"


def test_the_compose_config_loads_and_names_the_compose_services(tmp_path):
    settings = load_settings(str(DEPLOY / "compose" / "entrepot.toml"))
    assert_production_shape(settings)
    services = compose()["services"]
    assert urlsplit(settings.database.url).hostname == "postgres" and "postgres" in services
    assert urlsplit(settings.redis.url).hostname == "redis" and "redis" in services
    assert urlsplit(settings.storage.endpoint_url).hostname == "s3" and "s3" in services
    upstreams = {urlsplit(org.upstream).hostname for org in settings.organizations}
    assert "upstream" in upstreams and services["upstream"]["image"].startswith("registry:2")
    # The database user of the URL and its password are the ones the postgres container creates.
    postgres = services["postgres"]["environment"]
    assert urlsplit(settings.database.url).username == postgres["POSTGRES_USER"]
    assert urlsplit(settings.database.url).path == "/" + postgres["POSTGRES_DB"]
    for service in entrepot_services().values():
        assert service["environment"]["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]


def test_the_image_default_config_is_the_embedded_mode_in_the_image_volume():
    settings = load_settings(str(DEPLOY / "image" / "entrepot.toml"))
    assert not settings.database.url and settings.storage.backend == "filesystem" and not settings.redis.url
    assert settings.host == "0.0.0.0" and settings.port == DEFAULT_PORT
    assert json.loads(instruction("VOLUME")[0]) == [settings.data_dir]
    copies = [value.split() for value in instruction("COPY")]
    assert ["infra/deploy/image/entrepot.toml", config_path(json.loads(instruction("CMD")[0]))] in copies


# -- probes -------------------------------------------------------------------------------------------

def probe_paths() -> dict[str, str]:
    c = container(manifests()[API])
    return {probe: c[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}


def test_probes_are_healthz_and_readyz_and_routes_of_the_app():
    paths = probe_paths()
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    routes = {route.path for route in create_app(container=None).routes}   # the container is used at start only
    assert set(paths.values()) <= routes
    for service in entrepot_services().values():
        if "healthcheck" in service:
            url = re.search(r"https?://[^'\" ]+", " ".join(service["healthcheck"]["test"])).group()
            assert urlsplit(url).path in routes and urlsplit(url).port == DEFAULT_PORT


def test_probe_ports_and_the_service_reach_the_port_the_server_listens_on(tmp_path):
    settings = configmap_settings(tmp_path)
    objects = manifests()
    c = container(objects[API])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == settings.port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ports.get(c[probe]["httpGet"]["port"], c[probe]["httpGet"]["port"]) == settings.port
    service = objects[("Service", "entrepot")]
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and ports.get(port["targetPort"], port["targetPort"]) == settings.port
    assert [int(p) for p in instruction("EXPOSE")] == [settings.port]


def labels_match(selector: dict, deployment: dict) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_service_and_the_disruption_budget_select_the_api_pods_only():
    objects = manifests()
    for selector in (objects[("Service", "entrepot")]["spec"]["selector"],
                     objects[("PodDisruptionBudget", "entrepot-api")]["spec"]["selector"]["matchLabels"]):
        assert labels_match(selector, objects[API])
        assert not labels_match(selector, objects[RUNNER])   # the runner has no listener
    for deployment in (objects[API], objects[RUNNER]):
        assert labels_match(deployment["spec"]["selector"]["matchLabels"], deployment)


# -- the deployments run the right commands with the right files --------------------------------------

def test_the_api_deployment_serves_with_the_mounted_config(tmp_path):
    objects = manifests()
    deployment = objects[API]
    c = container(deployment)
    args = parser().parse_args(c["args"])
    assert args.func is serve
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert set(c["resources"]["requests"]) >= {"cpu", "memory"} and set(c["resources"]["limits"]) >= {"memory"}
    assert_mounts(deployment, c["args"], objects, data_dir=configmap_settings(tmp_path).data_dir)
    assert configmap_settings(tmp_path).database.run_projections is False


def test_the_runner_deployment_runs_the_projections_with_the_same_config(tmp_path):
    objects = manifests()
    deployment = objects[RUNNER]
    c = container(deployment)
    args = parser().parse_args(c["args"])
    assert args.func is projections_run and c["args"][:2] == ["projections", "run"]
    assert deployment["spec"]["replicas"] == 1
    assert_mounts(deployment, c["args"], objects, data_dir=configmap_settings(tmp_path).data_dir)


def assert_mounts(deployment: dict, args: list[str], objects: dict, *, data_dir: str) -> None:
    spec = pod(deployment)
    c = container(deployment)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    path = Path(config_path(args))
    config_volume = mounts[str(path.parent)]
    assert ("ConfigMap", config_volume["configMap"]["name"]) in objects
    assert path.name in objects[("ConfigMap", config_volume["configMap"]["name"])]["data"]
    assert "emptyDir" in mounts[data_dir]   # the spool of fills in progress
    # Non-root, as the image's user.
    uid = int(instruction("USER")[0].split(":")[0])
    assert uid != 0 and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == uid
    if c["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in mounts


# -- environment variables ----------------------------------------------------------------------------

def k8s_env() -> dict[str, list[dict]]:
    objects = manifests()
    return {name: container(objects[key])["env"] for name, key in (("api", API), ("runner", RUNNER))}


def env_names() -> set[str]:
    names = {e["name"] for env in k8s_env().values() for e in env}
    for service in entrepot_services().values():
        names |= set(service.get("environment", {}))
    return names


def test_every_environment_variable_set_is_one_the_code_reads():
    ours = source_text([ROOT / d for d in SOURCE_DIRS])
    aws = source_text([Path(botocore.__file__).parent])   # boto3's standard AWS environment
    for name in env_names():
        text = aws if name.startswith("AWS_") else ours
        assert f'"{name}"' in text or f"'{name}'" in text, f"{name} is set by a deployment file but read nowhere"


def test_the_secret_and_credentials_variables_take_effect(tmp_path, monkeypatch):
    config = tmp_path / "entrepot.toml"
    config.write_text('[database]\nurl = "postgresql://entrepot@db:5432/entrepot"\n')
    monkeypatch.setenv("ENTREPOT_SECRET_KEY", "k")
    monkeypatch.setenv("ENTREPOT_ADMIN_TOKEN", "t")
    monkeypatch.setenv("PGPASSWORD", "p")
    settings = load_settings(str(config))
    assert (settings.secret_key, settings.admin_token) == ("k", "t")
    assert postgres_env(settings.database.url, settings.database.schema)["POSTGRES_PASSWORD"] == "p"
    api = {e["name"] for e in k8s_env()["api"]}
    runner = {e["name"] for e in k8s_env()["runner"]}
    assert {"ENTREPOT_SECRET_KEY", "ENTREPOT_ADMIN_TOKEN", "PGPASSWORD",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= api
    assert {"ENTREPOT_SECRET_KEY", "PGPASSWORD"} <= runner   # same key everywhere, never a generated one


def test_kubernetes_secrets_come_from_the_secret_and_the_template_has_exactly_those_keys():
    objects = manifests()
    template = objects[("Secret", "entrepot")]["stringData"]
    referenced = set()
    for env in k8s_env().values():
        for e in env:
            assert "value" not in e, f"{e['name']}: a literal value in a manifest; use the Secret"
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "entrepot" and ref["key"] == e["name"]
            referenced.add(ref["key"])
    assert referenced == set(template)


def test_compose_replicas_share_one_valid_secret_key_and_admin_token():
    services = entrepot_services()
    keys = {s["environment"]["ENTREPOT_SECRET_KEY"] for s in services.values()}
    tokens = {s["environment"]["ENTREPOT_ADMIN_TOKEN"] for s in services.values()}
    assert len(keys) == 1 and len(tokens) == 1
    AESCipher(Environment(env={"CIPHER_KEY": keys.pop()}))   # the key the Credentials app will use


# -- compose ------------------------------------------------------------------------------------------

def test_compose_runs_two_api_replicas_and_a_runner_from_the_dockerfile():
    services = compose()["services"]
    entrepot = entrepot_services()
    commands = {name: parser().parse_args(s["command"]) for name, s in entrepot.items() if "entrypoint" not in s}
    api = [name for name, args in commands.items() if args.func is serve]
    runners = [name for name, args in commands.items() if args.func is projections_run]
    assert len(api) == 2 and len(runners) == 1
    host_ports = {entrepot[name]["ports"][0].rsplit(":", 1)[0] for name in api}
    assert len(host_ports) == 2
    for name, service in entrepot.items():
        build = service["build"]
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        (volume,) = service["volumes"]
        source, target = volume.split(":")[:2]
        assert (COMPOSE_FILE.parent / source).is_file()
        if name in commands:
            assert config_path(service["command"]) == target
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["s3"]["image"].startswith("motoserver/moto:")


def test_compose_creates_the_configured_bucket_before_entrepot_starts():
    services = compose()["services"]
    job = services["create-bucket"]
    script = job["command"][0]
    compile(script, "create-bucket", "exec")
    assert "load_settings" in script and "create_bucket" in script
    for name in ("entrepot-1", "entrepot-2", "projections"):
        assert services[name]["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"


# -- the image ----------------------------------------------------------------------------------------

def test_the_dockerfile_installs_the_project_and_runs_entrepot_serve_as_non_root():
    assert instruction("FROM", stage=0)[0].startswith("python:3.11-slim")
    assert instruction("FROM")[0] == "python:3.11-slim"
    assert any("pip install ." in run for run in instruction("RUN", stage=0))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "entrepot" in pyproject["project"]["scripts"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["entrepot"]
    cmd = json.loads(instruction("CMD")[0])
    assert parser().parse_args(cmd).func is serve
    assert config_path(cmd) == "/etc/entrepot/entrepot.toml"
    assert int(instruction("USER")[0].split(":")[0]) != 0
    # Every package pyproject installs is copied into the build stage, and sent in the build context.
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {shlex.split(value)[0].rstrip("/") for value in instruction("COPY", stage=0)}
    assert packages <= copied and (ROOT / "README.md").is_file()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for package in packages | {"pyproject.toml", "README.md"}:
        assert f"!{package}/" in ignore or f"!{package}" in ignore


# -- the operations guide -----------------------------------------------------------------------------

def test_the_operations_guide_links_to_files_and_sections_that_exist():
    readme = (ROOT / "README.md").read_text()
    guide = readme.split("## Operations guide", 1)[1].split("\n## ", 1)[0]
    files = re.findall(r"\]\((infra/deploy[^)#]*)\)", guide)
    assert {"infra/deploy/Dockerfile", "infra/deploy/compose.yaml", "infra/deploy/kubernetes"} <= set(files)
    for link in files:
        assert (ROOT / link).exists(), link
    slugs = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
             for heading in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", guide):
        assert anchor in slugs, anchor
