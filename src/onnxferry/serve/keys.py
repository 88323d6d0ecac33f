"""API keys: read from a file or the environment, and refused unless long and printable.

    settings = ServeSettings(api_keys=read_keys("ferry-keys"))    # one a line; # comments
    check_settings(settings)          # InputError naming the setting (never the key) if bad

A key is at least ``MIN_KEY_LENGTH`` printable ASCII characters without spaces: an empty one
would match ``Authorization: Bearer`` alone. ``env_keys("FERRY_KEYS")`` takes them from an
environment variable instead, separated by whitespace; a variable that is unset or empty is
refused, so a key that went missing does not let requests through.

    check_bearer([b"Bearer s3cret-0123456789"], (b"s3cret-0123456789",))  # HttpError 401 if not

``check_bearer`` is the one check of a request's ``Authorization`` values (REST's headers,
gRPC's metadata, the registry's HTTP server): exactly one, ``Bearer`` and a key, compared in
constant time. Two of them are refused (400) rather than one picked: a proxy in front may
read the other.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .asgi import HttpError
from .settings import ServeSettings

MIN_KEY_LENGTH = 16


def check_bearer(given: Sequence[bytes], keys: Sequence[bytes]) -> None:
    """HttpError 401 unless ``given`` (every ``Authorization`` value of a request) is one
    ``Bearer KEY`` with a key of ``keys``; 400 when a request sends more than one."""
    if len(given) > 1:
        text = f"the request has {len(given)} Authorization headers; send one"
        raise HttpError(400, text, "auth")
    scheme, _, token = (given[0] if given else b"").partition(b" ")
    if scheme.lower() != b"bearer" or not any(hmac.compare_digest(token, k) for k in keys):
        raise HttpError(401, "missing or wrong API key; send Authorization: Bearer KEY", "auth")


def read_keys(path: str | Path) -> tuple[str, ...]:
    """API keys from a file, one a line; blank lines and lines starting with # are skipped:

        ServeSettings(api_keys=read_keys("/run/secrets/ferry-keys"))

    Refuses a file every user may read, one without a key, and bad keys (naming the line,
    never the key)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read the key file {path} ({reason})") from None
    if os.name == "posix" and mode & stat.S_IROTH:
        raise InputError(
            f"the key file {path} can be read by every user (mode {stat.S_IMODE(mode):o})",
            hint=f"chmod o-r {path} (a Kubernetes secret: defaultMode 0440)",
        )
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(check_key(key, f"{path} line {number}"))
    if not keys:
        raise InputError(
            f"the key file {path} holds no key", hint="one key a line; # starts a comment"
        )
    return tuple(keys)


def env_keys(name: str) -> tuple[str, ...]:
    """API keys from an environment variable, separated by whitespace:

        ServeSettings(api_keys=env_keys("FERRY_KEYS"))

    Refuses a variable that is not set or empty (a key that went missing must not let
    requests through), and bad keys."""
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"the environment variable {name} is not set")
    if not value.strip():
        raise InputError(f"the environment variable {name} is empty")
    return tuple(check_key(key, f"${name}") for key in value.split())


def check_settings(settings: ServeSettings) -> None:
    """Refuse keys that are empty (``Authorization: Bearer`` alone would match them), short
    or unprintable, in one line naming the setting."""
    check_keys(settings.api_keys, "api_keys")
    check_keys(settings.repository_keys, "repository_keys")


def check_keys(keys: tuple[str, ...], source: str) -> tuple[str, ...]:
    """``keys`` when each is a usable API key; else one line naming ``source``."""
    return tuple(check_key(key, source) for key in keys)


def check_key(key: str, source: str) -> str:
    """``key`` when it is at least MIN_KEY_LENGTH printable ASCII characters without spaces;
    else one line naming ``source`` (never the key)."""
    hint = "generate one with: openssl rand -hex 32"
    if not key.strip():
        raise InputError(
            f"{source}: the key is empty; a key needs at least {MIN_KEY_LENGTH} characters",
            hint=hint,
        )
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise InputError(
            f"{source}: the key has a space, a control or a non-ASCII character; "
            "keys are printable ASCII",
            hint=hint,
        )
    if len(key) < MIN_KEY_LENGTH:
        raise InputError(
            f"{source}: the key has {len(key)} characters; a key needs at least {MIN_KEY_LENGTH}",
            hint=hint,
        )
    return key
