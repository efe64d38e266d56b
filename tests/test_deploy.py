"""The deployment files cannot be run here (no Docker engine): check them against the code."""

from pathlib import Path

import yaml

from masteryhub.config import PREFIX, SETTING_NAMES

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_sets_only_variables_the_settings_module_knows():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    app = compose["services"]["app"]
    names = [n for n in app["environment"] if n.startswith(PREFIX)]
    assert names, "the app service sets no MASTERYHUB_ variables"
    unknown = [n for n in names if n.removeprefix(PREFIX) not in SETTING_NAMES]
    assert unknown == []
    assert "replicaSet=rs0" in app["environment"]["MASTERYHUB_MONGODB_URI"]
    assert {"mongo1", "mongo2", "mongo3", "mongo-init"} <= set(compose["services"])


def test_dockerfile_sets_only_known_variables_and_runs_gunicorn():
    text = (DEPLOY / "Dockerfile").read_text()
    names = {word.split("=")[0] for word in text.split() if word.startswith(PREFIX)}
    assert names and all(n.removeprefix(PREFIX) in SETTING_NAMES for n in names)
    assert '"--workers"' in text
