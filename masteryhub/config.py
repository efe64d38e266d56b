"""Settings from ``MASTERYHUB_*`` environment variables.

Everything an operator can set lives here, in one frozen object validated at start, so a
typo in a deployment fails loudly with every problem listed instead of surfacing later as
a confusing runtime error. Nothing secret has a default: in development a secret key is
generated once and kept in ``DATA_DIR``; in production it must be given.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "MASTERYHUB_"
ENVIRONMENTS = ("development", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
MIN_SECRET_LENGTH = 32


class ConfigError(ValueError):
    """Raised with one line per bad setting so an operator can fix them all at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Setting:
    """Documentation of one variable; the README table and deploy files are checked against it."""

    name: str
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("ENV", "development", "`development` or `production` (production requires "
            "SECRET_KEY, MONGODB_URI and BASE_URL, and turns off demo pages)"),
    Setting("MONGODB_URI", None, "MongoDB connection string; unset = start the embedded "
            "SecantusDB server with its data in `DATA_DIR/db`"),
    Setting("DB_NAME", "masteryhub", "database name, unless the URI names one"),
    Setting("SECRET_KEY", None, "key for signing sessions (at least 32 characters); unset in "
            "development = generated once and kept in `DATA_DIR/secret_key`"),
    Setting("BASE_URL", None, "public URL of the app, as LMSs and providers reach it "
            "(default `http://HOST:PORT`)"),
    Setting("DATA_DIR", "instance", "local state: embedded database, generated secret, logs"),
    Setting("HOST", "127.0.0.1", "address `masteryhub serve` listens on"),
    Setting("PORT", "8000", "port `masteryhub serve` listens on"),
    Setting("LOG_LEVEL", "INFO", "one of DEBUG, INFO, WARNING, ERROR"),
    Setting("DB_TIMEOUT_MS", "5000", "how long a database operation may wait for the server"),
    Setting("WORKER", "thread", "`thread`: `masteryhub serve` runs the mapping worker; `off`: run "
            "`masteryhub worker` processes separately (scale-out)"),
    Setting("LOG_FORMAT", None, "`json` (one object per line, with the request id) or `text`; "
            "default `json` in production, `text` in development"),
    Setting("PROXY_HOPS", "0", "reverse proxies in front of the app (ingress, load balancer) "
            "whose X-Forwarded-For/-Proto/-Host headers are trusted; 0 = none"),
    Setting("METRICS_TOKEN", None, "bearer token that `GET /metrics` requires; unset = /metrics "
            "open in development and disabled in production"),
    Setting("REGISTRATION_PRIVATE_HOSTS", "false", "`true`: LTI dynamic registration may reach "
            "LMSs on private or loopback addresses (an LMS inside the school network); "
            "always allowed in development"),
)
SETTING_NAMES = frozenset(s.name for s in SETTINGS)
# ``MASTERYHUB_<NAME>_FILE=/path`` reads the value from a file (Docker and Kubernetes secrets).
FILE_SUFFIX = "_FILE"


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    mongodb_uri: str | None = None
    db_name: str = "masteryhub"
    secret_key: str = field(default="", repr=False)
    base_url: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("instance")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    db_timeout_ms: int = 5000
    worker: str = "thread"
    log_format: str = "text"
    proxy_hops: int = 0
    metrics_token: str | None = field(default=None, repr=False)
    registration_private_hosts: bool = False

    @property
    def embedded(self) -> bool:
        """True when no external MongoDB is configured and we run SecantusDB ourselves."""
        return self.mongodb_uri is None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate ``MASTERYHUB_*`` variables; raise :class:`ConfigError` listing all."""
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        raw = {s.name: _raw_value(environ, s, problems) for s in SETTINGS}
        raw = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in raw.items()}

        env = (raw["ENV"] or "development").lower()
        if env not in ENVIRONMENTS:
            problems.append(f"{PREFIX}ENV={raw['ENV']!r}: must be one of {', '.join(ENVIRONMENTS)}")

        port = _parse_int(raw["PORT"] or "8000", "PORT", 1, 65535, problems)
        timeout = _parse_int(raw["DB_TIMEOUT_MS"] or "5000", "DB_TIMEOUT_MS", 100, 600_000,
                             problems)
        proxy_hops = _parse_int(raw["PROXY_HOPS"] or "0", "PROXY_HOPS", 0, 5, problems)
        private_hosts = (raw["REGISTRATION_PRIVATE_HOSTS"] or "false").strip().lower()
        if private_hosts not in ("true", "false"):
            problems.append(f"{PREFIX}REGISTRATION_PRIVATE_HOSTS={private_hosts!r}: must be "
                            "true or false")
        host = raw["HOST"] or "127.0.0.1"
        if any(c.isspace() or c in "/?#" for c in host):
            problems.append(f"{PREFIX}HOST={host!r}: must be a host name or IP address")

        uri = raw["MONGODB_URI"]
        if uri is not None and not uri.startswith(("mongodb://", "mongodb+srv://")):
            problems.append(
                f"{PREFIX}MONGODB_URI: must start with mongodb:// or mongodb+srv://"
            )

        db_name = raw["DB_NAME"] or "masteryhub"
        if any(c in db_name for c in '/\\. "$') or len(db_name) > 63:
            problems.append(f"{PREFIX}DB_NAME={db_name!r}: not a valid MongoDB database name")

        level = (raw["LOG_LEVEL"] or "INFO").upper()
        if level not in LOG_LEVELS:
            problems.append(f"{PREFIX}LOG_LEVEL={raw['LOG_LEVEL']!r}: must be one of "
                            f"{', '.join(LOG_LEVELS)}")

        base_url = raw["BASE_URL"]
        if base_url is None:
            shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            base_url = f"http://{shown_host}:{port or 8000}"
        else:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                    or parts.fragment:
                problems.append(f"{PREFIX}BASE_URL={base_url!r}: must be an http(s) URL "
                                "without query or fragment, e.g. https://mastery.example.edu")
            base_url = base_url.rstrip("/")

        data_dir = Path(raw["DATA_DIR"] or "instance").expanduser()
        if data_dir.exists() and not data_dir.is_dir():
            problems.append(f"{PREFIX}DATA_DIR={str(data_dir)!r}: exists and is not a directory")

        secret = raw["SECRET_KEY"]
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            problems.append(f"{PREFIX}SECRET_KEY: must be at least {MIN_SECRET_LENGTH} characters")

        if env == "production":
            for name, value in (("SECRET_KEY", secret), ("MONGODB_URI", uri),
                                ("BASE_URL", raw["BASE_URL"])):
                if value is None:
                    problems.append(f"{PREFIX}{name}: required when {PREFIX}ENV=production")

        worker = (raw["WORKER"] or "thread").lower()
        if worker not in ("thread", "off"):
            problems.append(f"{PREFIX}WORKER={raw['WORKER']!r}: must be thread or off")

        log_format = (raw["LOG_FORMAT"] or ("json" if env == "production" else "text")).lower()
        if log_format not in LOG_FORMATS:
            problems.append(f"{PREFIX}LOG_FORMAT={raw['LOG_FORMAT']!r}: must be one of "
                            f"{', '.join(LOG_FORMATS)}")

        metrics_token = raw["METRICS_TOKEN"]
        if metrics_token is not None and len(metrics_token) < 16:
            problems.append(f"{PREFIX}METRICS_TOKEN: must be at least 16 characters")

        if problems:
            raise ConfigError(problems)

        if secret is None:
            secret = _development_secret(data_dir)

        return cls(env=env, mongodb_uri=uri, db_name=db_name, secret_key=secret,
                   base_url=base_url, data_dir=data_dir.resolve(), host=host, port=port,
                   log_level=level, db_timeout_ms=timeout, worker=worker,
                   log_format=log_format, proxy_hops=proxy_hops, metrics_token=metrics_token,
                   registration_private_hosts=private_hosts == "true")


def _raw_value(environ: Mapping[str, str], setting: Setting, problems: list[str]) -> str | None:
    """``MASTERYHUB_NAME``, or the content of the file ``MASTERYHUB_NAME_FILE`` names."""
    name = PREFIX + setting.name
    path = environ.get(name + FILE_SUFFIX)
    if not path:
        return environ.get(name, setting.default)
    if environ.get(name):
        problems.append(f"{name} and {name}{FILE_SUFFIX}: set one of them, not both")
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{name}{FILE_SUFFIX}={path!r}: cannot read it ({exc.strerror})")
        return None


def _parse_int(value: str, name: str, low: int, high: int, problems: list[str]) -> int:
    try:
        number = int(value)
    except ValueError:
        problems.append(f"{PREFIX}{name}={value!r}: must be a whole number")
        return 0
    if not low <= number <= high:
        problems.append(f"{PREFIX}{name}={number}: must be between {low} and {high}")
    return number


def _development_secret(data_dir: Path) -> str:
    """Generate the development key once and reuse it, so sessions survive restarts."""
    path = data_dir / "secret_key"
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) >= MIN_SECRET_LENGTH:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
