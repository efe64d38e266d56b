"""Configuration is validated at start, with one clear line per bad value."""

import stat

import pytest

from masteryhub.config import ConfigError, Settings


def env(tmp_path, **values):
    base = {"MASTERYHUB_DATA_DIR": str(tmp_path / "data")}
    base.update({f"MASTERYHUB_{k}": v for k, v in values.items()})
    return base


def test_defaults_are_usable_for_development(tmp_path):
    s = Settings.from_env(env(tmp_path))
    assert s.env == "development"
    assert s.embedded
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.base_url == "http://127.0.0.1:8000"
    assert s.data_dir == (tmp_path / "data").resolve()


def test_development_secret_is_generated_once_private_and_reused(tmp_path):
    first = Settings.from_env(env(tmp_path))
    key_file = tmp_path / "data" / "secret_key"
    assert len(first.secret_key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = Settings.from_env(env(tmp_path))
    assert second.secret_key == first.secret_key
    other = Settings.from_env({"MASTERYHUB_DATA_DIR": str(tmp_path / "other")})
    assert other.secret_key != first.secret_key


def test_secret_is_not_shown_in_repr(tmp_path):
    s = Settings.from_env(env(tmp_path, SECRET_KEY="x" * 40))
    assert "x" * 40 not in repr(s)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "eighty", "MASTERYHUB_PORT='eighty': must be a whole number"),
        ("PORT", "70000", "MASTERYHUB_PORT=70000: must be between 1 and 65535"),
        ("ENV", "staging", "MASTERYHUB_ENV='staging': must be one of development, production"),
        ("MONGODB_URI", "localhost:27017", "MASTERYHUB_MONGODB_URI: must start with mongodb://"),
        ("BASE_URL", "ftp://x", "MASTERYHUB_BASE_URL='ftp://x': must be an http(s) URL"),
        ("BASE_URL", "https://x/?a=1", "must be an http(s) URL without query"),
        ("SECRET_KEY", "short", "MASTERYHUB_SECRET_KEY: must be at least 32 characters"),
        ("LOG_LEVEL", "LOUD", "MASTERYHUB_LOG_LEVEL='LOUD': must be one of DEBUG"),
        ("DB_NAME", "a.b", "MASTERYHUB_DB_NAME='a.b': not a valid MongoDB database name"),
        ("DB_TIMEOUT_MS", "5", "MASTERYHUB_DB_TIMEOUT_MS=5: must be between 100 and 600000"),
        ("HOST", "http://x", "MASTERYHUB_HOST='http://x': must be a host name or IP address"),
    ],
)
def test_each_bad_value_gets_a_clear_message(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env(tmp_path, **{name: value}))
    assert message in str(info.value)


def test_all_problems_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env(tmp_path, PORT="x", ENV="nope", SECRET_KEY="short"))
    assert len(info.value.problems) == 3


def test_production_requires_explicit_secret_database_and_url(tmp_path):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env(tmp_path, ENV="production"))
    text = str(info.value)
    for name in ("SECRET_KEY", "MONGODB_URI", "BASE_URL"):
        assert f"MASTERYHUB_{name}: required when MASTERYHUB_ENV=production" in text
    assert not (tmp_path / "data" / "secret_key").exists()


def test_data_dir_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        Settings.from_env({"MASTERYHUB_DATA_DIR": str(tmp_path / "file")})
