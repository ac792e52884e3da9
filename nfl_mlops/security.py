"""Secrets kept out of sight, and what the API lets in.

- **Redaction by value.** `protect(settings)` learns the value of every configured secret (the `SecretStr`
  settings, and the passwords inside the database and Redis URLs) and installs a log-record factory that
  replaces them with `***` in every log message and traceback of the process. `redact(text)` does the same
  for any text (error bodies, artifacts, model cards), and also masks the password of any URL
  (`scheme://user:password@host`), configured or not.
- **Redaction by key.** `scrub(config)` drops keys that name a secret (`hf_token`, `authToken`,
  `access_key`, `db_password`, ...) and `SecretStr` values, redacts the other strings by value, and turns
  absolute paths into portable ones (`MLOPS_HOME/...`), so a run's config, a tracker run or a model card
  never holds a secret or a machine path.
- **Who may call.** `loopback_only(settings)`: without `MLOPS_API_KEY` the API answers loopback clients only,
  unless `MLOPS_ALLOW_NO_AUTH=true`. `import_folder(path, roots)`: the only folders `POST /models/register`
  may read are real folders (no symlink anywhere) below an import root, and every refusal reads the same.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = "***"

_SECRETS: tuple[str, ...] = ()
"""Values of the configured secrets, longest first (so a secret that contains another is masked whole)."""

_HOME: str | None = None
"""The resolved MLOPS_HOME, for portable paths."""

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORDS = frozenset(
    {"token", "secret", "password", "passwd", "pwd", "credential", "credentials", "apikey", "authorization"}
)
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("auth", "token"),
        ("session", "key"),
    }
)
MIN_SECRET_CHARS = 4
"""Shorter values are not redacted by value (masking every "k" in a log would hide everything and
protect nothing); they are still dropped by key and never printed by `SecretStr`."""


def secret_key(key: object) -> bool:
    """Whether a config key names a secret: by its words, in snake, kebab, dotted or camel case."""
    words = [w.lower() for w in _WORD.findall(str(key))]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def url_password(url: str | None) -> str | None:
    """The password inside a URL (`postgresql://user:pw@host/db` -> `pw`), if any."""
    if not url:
        return None
    m = _URL_PASSWORD.search(url)
    return m.group("pw") if m else None


def mask_url(url: str | None) -> str | None:
    """The URL with its password replaced by `***` (for status answers, logs and errors)."""
    return None if url is None else _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", url)


def redact(text: str) -> str:
    """`text` with every configured secret's value and every URL password replaced by `***`."""
    for value in _SECRETS:
        if value in text:
            text = text.replace(value, MASK)
    if "://" in text:
        text = mask_url(text) or text
    return text


def portable_path(value: str) -> str:
    """An absolute path as `MLOPS_HOME/<relative>` when it lies below MLOPS_HOME, else its last two parts
    after `.../`; any other string unchanged."""
    if not value.startswith(("/", "\\")) and not re.match(r"^[A-Za-z]:[\\/]", value):
        return value
    if _HOME and (value == _HOME or value.startswith(_HOME.rstrip("/") + "/")):
        rel = value[len(_HOME) :].lstrip("/")
        return f"MLOPS_HOME/{rel}" if rel else "MLOPS_HOME"
    parts = [p for p in re.split(r"[\\/]", value) if p]
    return ".../" + "/".join(parts[-2:]) if parts else value


def scrub(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` safe to log anywhere: secret keys and `SecretStr` values dropped, other strings
    redacted by value, absolute paths made portable (recursively through mappings and lists)."""
    from pydantic import SecretStr

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return scrub(value)
        if isinstance(value, list | tuple):
            return [clean(v) for v in value if not isinstance(v, SecretStr)]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return portable_path(redact(value))
        return value

    return {
        key: clean(value)
        for key, value in config.items()
        if not (secret_key(key) or isinstance(value, SecretStr))
    }


def secret_values(settings: Any) -> list[str]:
    """Every secret value these settings carry: each `SecretStr` field, or for a URL, its password."""
    from pydantic import SecretStr

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            if "://" in raw:  # a URL: its password is the secret (the host and database help debugging)
                pw = url_password(raw)
                if pw:
                    found.append(pw)
            else:
                found.append(raw)
    return [v for v in found if v and len(v) >= MIN_SECRET_CHARS]


_factory_installed = False


def protect(settings: Any) -> None:
    """Learn `settings`' secrets and MLOPS_HOME, and (once per process) install the redacting log-record
    factory. Called by `get_settings()` and by the API's `create_app`, so every process that reads its
    settings has it."""
    global _SECRETS, _HOME, _factory_installed
    learned = set(_SECRETS) | set(secret_values(settings))
    _SECRETS = tuple(sorted(learned, key=len, reverse=True))
    try:
        _HOME = str(Path(settings.mlops_home).resolve())
    except (OSError, AttributeError):
        pass
    if not _factory_installed:
        _install_log_redaction()
        _factory_installed = True


def _install_log_redaction() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _SECRETS and "://" not in str(record.msg):
            return record
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and _SECRETS:
            text = logging.Formatter().formatException(record.exc_info)
            if redact(text) != text:
                record.exc_text = redact(text)
        return record

    logging.setLogRecordFactory(factory)


# ------------------------------------------------------------------------------------------------
# who may call the API
# ------------------------------------------------------------------------------------------------

NO_KEY_REFUSAL = (
    "this service has no MLOPS_API_KEY, so it answers loopback clients only; set MLOPS_API_KEY "
    "(clients send it as X-API-Key), or MLOPS_ALLOW_NO_AUTH=true to open it without a key"
)


def loopback_only(settings: Any) -> bool:
    """Whether the API must refuse clients that are not on this host (no key, and not explicitly opened)."""
    return settings.api_key is None and not settings.allow_no_auth


def is_loopback_client(host: str | None) -> bool:
    """A client address on this host: a loopback IP, a Unix socket (no address), or an in-process test
    client (a name, not an IP)."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def is_loopback_bind(host: str) -> bool:
    """Whether binding to `host` keeps the service on this machine."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# folders the API may import
# ------------------------------------------------------------------------------------------------


class ImportRefused(ValueError):
    """A model folder the API may not read; the message is the same whatever the cause."""


IMPORT_REFUSAL = (
    "model_path must be an existing model folder below an import root (MLOPS_IMPORT_ROOTS), with no "
    "symbolic link in it"
)


def import_folder(path: str | Path, roots: Iterable[Path]) -> Path:
    """The real folder `path` names, when it is a folder below one of `roots` and neither it, a folder on the
    way to it, nor anything inside it is a symbolic link. Raises `ImportRefused` with one message for
    missing, forbidden and linked paths alike, so answers reveal nothing about the host's files."""
    given = Path(path)
    try:
        if not given.is_absolute() or ".." in given.parts:
            raise ImportRefused(IMPORT_REFUSAL)
        real = given.resolve(strict=True)
        if real != given or not real.is_dir():  # a link on the way resolves elsewhere
            raise ImportRefused(IMPORT_REFUSAL)
        allowed = [Path(r).resolve() for r in roots]
        if not any(real == r or real.is_relative_to(r) for r in allowed):
            raise ImportRefused(IMPORT_REFUSAL)
        for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
            for name in (*dirnames, *filenames):
                if os.path.islink(os.path.join(dirpath, name)):
                    raise ImportRefused(IMPORT_REFUSAL)
    except OSError as exc:  # missing, unreadable, name too long: the same answer
        raise ImportRefused(IMPORT_REFUSAL) from exc
    return real
