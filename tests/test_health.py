"""/healthz reports the app and the database, 200 when the database answers, 503 when not."""

import pytest

from masteryhub.app import create_app
from masteryhub.config import Settings
from masteryhub.embedded import free_port


def test_healthz_ok_when_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["database"]["latency_ms"] >= 0


@pytest.mark.timeout(30)
def test_healthz_503_with_reason_when_database_is_down(tmp_path):
    dead = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    settings = Settings.from_env({"MASTERYHUB_DATA_DIR": str(tmp_path),
                                  "MASTERYHUB_MONGODB_URI": dead,
                                  "MASTERYHUB_DB_TIMEOUT_MS": "500"})
    client = create_app(settings).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["database"]["status"] == "unavailable"
    assert "refused" in body["database"]["reason"].lower()
