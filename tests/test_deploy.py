"""The deployment files cannot be run here (no Docker engine, no cluster): check them
against the code instead. Every configuration variable they set exists in the settings
module (and the set as a whole passes its validation), every command they run exists in the
CLI with the options given, every probe path is a route of the app, and
docs/operations.md lists every index the code creates and every metric /metrics exposes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from masteryhub.cli import main as cli
from masteryhub.config import FILE_SUFFIX, PREFIX, SETTING_NAMES, ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"
APP_PACKAGES = ("masteryhub", "lrs", "mappings", "lti_tool")


# -- helpers ----------------------------------------------------------------------------------
def setting_of(variable: str) -> str | None:
    """The setting a MASTERYHUB_ variable names (``_FILE`` variants included), or None."""
    name = variable.removeprefix(PREFIX)
    if name in SETTING_NAMES:
        return name
    if name.endswith(FILE_SUFFIX) and name.removesuffix(FILE_SUFFIX) in SETTING_NAMES:
        return name.removesuffix(FILE_SUFFIX)
    return None


def assert_known(variables) -> None:
    unknown = sorted(v for v in variables if v.startswith(PREFIX) and setting_of(v) is None)
    assert unknown == [], f"not in masteryhub.config.SETTINGS: {unknown}"


def assert_cli_command(argv: list[str]) -> click.Command:
    """``argv`` (e.g. ["masteryhub", "serve", "--workers", "4"]) names a real command of the
    CLI and passes only options it has."""
    assert argv[0] == "masteryhub", argv
    command: click.Command = cli
    rest = list(argv[1:])
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"`{' '.join(argv)}`: no command {name!r}"
        command = command.commands[name]
    assert not isinstance(command, click.Group), f"`{' '.join(argv)}` is a group"
    options = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"`{' '.join(argv)}`: no option {word}"
    return command


_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def compose_value(text: str, env: dict[str, str]) -> str:
    """Docker Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation."""
    def replace(match: re.Match) -> str:
        name, spec = match.group(1), match.group(0)
        if name in env:
            return env[name]
        default = re.match(r"\$\{\w+:?-(.*)\}$", spec)
        return default.group(1) if default else ""
    return _INTERPOLATION.sub(replace, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def routes_of(app) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


def validate(env: dict[str, str], tmp_path: Path) -> Settings:
    """Settings.from_env over a deployment's variables: ``*_FILE`` secrets get a file with a
    valid value, production's checks run as they would in the container."""
    env = dict(env)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, value in list(env.items()):
        if name.endswith(FILE_SUFFIX):
            secret = tmp_path / Path(value).name
            secret.write_text("s" * 48 + "\n")
            env[name] = str(secret)
    env[PREFIX + "DATA_DIR"] = str(tmp_path / "data")
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        pytest.fail(f"the deployment's settings do not validate: {exc}")


# -- Docker Compose ---------------------------------------------------------------------------
def test_compose_services(compose):
    services = compose["services"]
    assert {"mongo1", "mongo2", "mongo3", "mongo-init", "web", "worker"} <= set(services)
    for name in ("mongo1", "mongo2", "mongo3"):
        assert services[name]["image"].startswith("mongo:")
        assert services[name]["command"][:3] == ["mongod", "--replSet", "rs0"]
        assert "healthcheck" in services[name]
    init = services["mongo-init"]
    assert all(init["depends_on"][m]["condition"] == "service_healthy"
               for m in ("mongo1", "mongo2", "mongo3"))
    script = init["command"][-1]
    assert "rs.initiate" in script and all(f"mongo{n}:27017" in script for n in (1, 2, 3))
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["mongo-init"]["condition"] == \
            "service_completed_successfully"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[name]["build"]["context"]).resolve() == ROOT


def test_compose_sets_only_known_variables_and_they_validate(compose, tmp_path):
    dotenv = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text()
                  .splitlines() if line and not line.startswith("#"))
    assert_known(dotenv)
    for name in ("web", "worker"):
        environment = compose["services"][name]["environment"]
        assert_known(environment)
        env = {k: compose_value(str(v), dotenv) for k, v in environment.items()}
        settings = validate(env, tmp_path / name)
        assert settings.production and settings.worker == "off"
        assert settings.log_format == "json"
        assert settings.metrics_token, "scrapes need a token in production"
        uri = settings.mongodb_uri or ""
        assert "replicaSet=rs0" in uri and all(f"mongo{n}:27017" in uri for n in (1, 2, 3))
        assert "w=majority" in uri
    assert compose_value(compose["services"]["web"]["environment"]["MASTERYHUB_BASE_URL"],
                         {}) == "", "BASE_URL must come from deploy/.env"


def test_compose_secrets_are_files_not_values(compose):
    declared = compose["secrets"]
    for name in ("web", "worker"):
        service = compose["services"][name]
        environment = service["environment"]
        assert "MASTERYHUB_SECRET_KEY" not in environment
        for variable, path in environment.items():
            if variable.endswith(FILE_SUFFIX):
                secret = Path(path).name
                assert path == f"/run/secrets/{secret}" and secret in service["secrets"]
        assert set(service["secrets"]) <= set(declared)
    for secret in declared.values():
        assert (DEPLOY / secret["file"]).parent == DEPLOY / "secrets"
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored  # the secret files are never committed


def test_compose_commands_exist_in_the_cli(compose):
    web = compose["services"]["web"]
    worker = compose["services"]["worker"]
    argv = [compose_value(w, {}) for w in web["command"]]
    assert argv[:3] == ["masteryhub", "serve", "--workers"] and int(argv[3]) >= 1
    assert_cli_command(argv)
    assert_cli_command(worker["command"])
    assert worker["command"] == ["masteryhub", "worker"]
    assert int(compose_value(str(worker["deploy"]["replicas"]), {})) >= 2
    assert_cli_command(worker["healthcheck"]["test"][1:])


def test_compose_health_checks_use_real_routes(compose, app):
    test = compose["services"]["web"]["healthcheck"]["test"]
    paths = re.findall(r"http://127\.0\.0\.1:8000(/[\w/]*)", " ".join(test))
    assert paths and set(paths) <= routes_of(app)


# -- Dockerfile -------------------------------------------------------------------------------
def dockerfile() -> dict:
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    instructions: dict[str, list[str]] = {}
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_dockerfile_environment_and_packages():
    instructions = dockerfile()
    env = {}
    for line in instructions["ENV"]:
        env.update(dict(pair.split("=", 1) for pair in shlex.split(line)))
    assert_known(env)
    assert env["MASTERYHUB_HOST"] == "0.0.0.0"
    assert instructions["EXPOSE"] == [env["MASTERYHUB_PORT"]]
    copied = {shlex.split(line)[0] for line in instructions["COPY"]}
    assert set(APP_PACKAGES) <= copied
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert all(f'"{p}*"' in pyproject for p in APP_PACKAGES)
    assert instructions["USER"][0].isdigit(), "numeric user, for runAsNonRoot"
    assert "secantusdb" not in " ".join(instructions["RUN"])


def test_dockerfile_command_and_health_check(app):
    instructions = dockerfile()
    cmd = json.loads(instructions["CMD"][-1])
    assert "ENTRYPOINT" not in instructions  # compose and k8s override the command whole
    command = assert_cli_command(cmd)
    assert command.name == "serve" and "--workers" in cmd
    health = instructions["HEALTHCHECK"][0]
    paths = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", health)
    assert paths and all(port == "8000" and path in routes_of(app) for port, path in paths)


# -- Kubernetes -------------------------------------------------------------------------------
def test_k8s_documents_are_well_formed(k8s):
    kinds = {d["kind"] for d in k8s}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Ingress",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet", "Job",
            "Kustomization"} <= kinds
    for doc in k8s:
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], doc["__file__"]
    kustomization = next(d for d in k8s if d["kind"] == "Kustomization")
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert files - listed == {"secret.example.yaml"}, "the secret template is not applied"
    assert listed <= files
    images = {i["name"] for i in kustomization["images"]}
    for workload in [*by_kind(k8s, "Deployment").values()]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"].split(":")[0] in images


def _workloads(k8s):
    for kind in ("Deployment", "StatefulSet", "Job"):
        yield from by_kind(k8s, kind).values()


def test_k8s_selectors_match_their_pods(k8s):
    pods = {}
    for workload in _workloads(k8s):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        pods[workload["metadata"]["name"]] = labels
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if workload["kind"] != "Job":
            assert selector and selector.items() <= labels.items(), workload["metadata"]["name"]

    def selects(selector: dict) -> list[str]:
        return [name for name, labels in pods.items() if selector.items() <= labels.items()]

    for service in by_kind(k8s, "Service").values():
        assert selects(service["spec"]["selector"]), service["metadata"]["name"]
    for pdb in by_kind(k8s, "PodDisruptionBudget").values():
        assert selects(pdb["spec"]["selector"]["matchLabels"]), pdb["metadata"]["name"]
    deployments = by_kind(k8s, "Deployment")
    for hpa in by_kind(k8s, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    services = by_kind(k8s, "Service")
    for ingress in by_kind(k8s, "Ingress").values():
        assert ingress["spec"]["tls"], "TLS at the ingress"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
                assert backend["port"]["name"] in ports
    statefulset = by_kind(k8s, "StatefulSet")["mongo"]
    assert statefulset["spec"]["replicas"] == 3
    assert services[statefulset["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_k8s_variables_are_known_and_validate(k8s, tmp_path):
    config = by_kind(k8s, "ConfigMap")["masteryhub-config"]["data"]
    secret = by_kind(k8s, "Secret")["masteryhub-secrets"]["stringData"]
    assert_known(config)
    assert_known(secret)
    for key in ("SECRET_KEY", "MONGODB_URI", "METRICS_TOKEN"):
        assert PREFIX + key in secret and PREFIX + key not in config
    names: set[str] = set()
    for workload in by_kind(k8s, "Deployment").values():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", ())}
            for source in container.get("envFrom", ()):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                assert ref["name"] in by_kind(k8s, kind)
    assert_known(names)
    env = {**config, **secret, PREFIX + "SECRET_KEY": "k" * 48}
    settings = validate(env, tmp_path)
    assert settings.production and settings.worker == "off" and settings.proxy_hops == 1
    assert "replicaSet=rs0" in (settings.mongodb_uri or "")


def test_k8s_commands_probes_and_resources(k8s, app):
    routes = routes_of(app)
    deployments = by_kind(k8s, "Deployment")
    assert set(deployments) == {"masteryhub-web", "masteryhub-worker"}
    assert deployments["masteryhub-worker"]["spec"]["replicas"] >= 2
    for workload in _workloads(k8s):
        spec = workload["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert container["resources"]["requests"], container["name"]
            ports = {p["name"] for p in container.get("ports", ())}
            if container["image"].startswith("masteryhub"):
                env = {e["name"]: "2" for e in container.get("env", ())}
                argv = [re.sub(r"\$\((\w+)\)", lambda m, env=env: env[m.group(1)], w)
                        for w in container["command"] + container.get("args", [])]
                assert_cli_command(argv)
                assert container["securityContext"]["readOnlyRootFilesystem"]
                assert {"/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}
            probes = [container[p] for p in ("startupProbe", "readinessProbe",
                                             "livenessProbe") if p in container]
            if workload["kind"] != "Job":
                assert {"readinessProbe", "livenessProbe"} <= set(container), container["name"]
            for probe in probes:
                if "httpGet" in probe:
                    assert probe["httpGet"]["path"] in routes
                    assert probe["httpGet"]["port"] in ports
                if "exec" in probe and probe["exec"]["command"][0] == "masteryhub":
                    assert_cli_command(probe["exec"]["command"])
    web = deployments["masteryhub-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["command"][:2] == ["masteryhub", "serve"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"
    worker = deployments["masteryhub-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["masteryhub", "worker"]


# -- masteryhub health (the worker's health check) ---------------------------------------------
def test_health_command_reports_the_database_and_the_worker(settings, mongo_server_uri, db_name,
                                                            tmp_path):
    env = {"MASTERYHUB_MONGODB_URI": mongo_server_uri, "MASTERYHUB_DB_NAME": db_name,
           "MASTERYHUB_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(cli, ["health", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "ok" and report["database"]["status"] == "ok"
    assert report["worker"]["lag"] == 0 and report["worker"]["lease_active"] is False
    text = CliRunner().invoke(cli, ["health"], env=env)
    assert text.exit_code == 0 and text.output.startswith("ok: database ok")


def test_health_command_fails_without_a_database(tmp_path):
    env = {"MASTERYHUB_MONGODB_URI": "mongodb://127.0.0.1:9/?directConnection=true",
           "MASTERYHUB_DB_TIMEOUT_MS": "300", "MASTERYHUB_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["health"], env=env)
    assert result.exit_code == 1 and result.output.startswith("unavailable")
    embedded = CliRunner().invoke(cli, ["health", "--json"],
                                  env={"MASTERYHUB_MONGODB_URI": "",
                                       "MASTERYHUB_DATA_DIR": str(tmp_path / "none")})
    assert embedded.exit_code == 1  # starts no embedded database to answer itself
    assert json.loads(embedded.output)["status"] == "unavailable"
    assert not (tmp_path / "none" / "db.json").exists()


def test_secret_files_are_read(tmp_path):
    key = tmp_path / "secret_key"
    key.write_text("f" * 40 + "\n")
    settings = Settings.from_env({"MASTERYHUB_SECRET_KEY_FILE": str(key),
                                  "MASTERYHUB_DATA_DIR": str(tmp_path)})
    assert settings.secret_key == "f" * 40
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"MASTERYHUB_SECRET_KEY_FILE": str(key),
                           "MASTERYHUB_SECRET_KEY": "g" * 40,
                           "MASTERYHUB_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"MASTERYHUB_METRICS_TOKEN_FILE": str(tmp_path / "missing"),
                           "MASTERYHUB_DATA_DIR": str(tmp_path)})


# -- docs/operations.md -----------------------------------------------------------------------
def declared_indexes(app) -> dict[str, list[str]]:
    """Every secondary index the code creates, as ``collection -> ["a, -b", ...]`` (mongoengine
    notation: ``-`` for descending), after running every index-creating function."""
    from mongoengine.base import _document_registry

    from lrs import documents
    from lrs.store import StatementStore
    from lti_tool import admin_auth, platform_keys, services, sync  # noqa: F401 (models)

    db = app.extensions["masteryhub.db"]
    with app.app_context():
        StatementStore(db).ensure_indexes()
        documents.ensure_indexes(db)
        sync.ensure_indexes(db)
        services.ensure_indexes(db)
        platform_keys._collection()
        for model in _document_registry.values():
            if not model._meta.get("abstract") and "collection" in model._meta:
                model.ensure_indexes()
    found: dict[str, list[str]] = {}
    for name in db.list_collection_names():
        for index in db[name].list_indexes():
            if index["name"] == "_id_":
                continue
            keys = ", ".join(("-" if d == -1 else "") + f for f, d in index["key"].items())
            found.setdefault(name, []).append(keys)
    return found


def test_operations_doc_lists_every_index(app):
    text = OPERATIONS.read_text()
    section = text.split("\n## Collections and indexes\n", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", section, re.M)}
    missing = []
    for collection, indexes in sorted(declared_indexes(app).items()):
        row = rows.get(collection, "")
        missing += [f"{collection}: {keys}" for keys in indexes if f"`{keys}`" not in row]
    assert missing == [], ("docs/operations.md, table 'Collections and indexes': add "
                           f"{missing}")


def test_operations_doc_lists_every_metric(app):
    text = OPERATIONS.read_text()
    client = app.test_client()
    client.get("/healthz")
    body = client.get("/metrics").get_data(as_text=True)
    names = set(re.findall(r"^# TYPE (masteryhub_\w+)", body, re.M))
    assert len(names) >= 10
    assert sorted(n for n in names if n not in text) == []


def test_operations_doc_mentions_the_deploy_files_and_commands():
    text = OPERATIONS.read_text()
    for needle in ("deploy/docker-compose.yml", "deploy/k8s", "masteryhub worker",
                   "masteryhub health", "masteryhub backup", "masteryhub keys rotate",
                   "mongodump", "/metrics", "METRICS_TOKEN", "shard"):
        assert needle in text, needle
