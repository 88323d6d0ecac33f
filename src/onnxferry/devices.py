"""Device pools: ``--devices cuda:0,cuda:1``, one session per listed device.

    devices = parse_devices("cuda:0,cuda:1")          # [Device("cuda", 0), Device("cuda", 1)]
    str(devices[1]), devices[1].provider              # "cuda:1", "cuda"
    device_session_config(SessionConfig(threads=2), devices[1]).provider_options  # device_id 1
    pool = parse_devices("cpu,cpu")                   # cpu:0, cpu:1: two sessions, one CPU
    check_pool(pool)                 # ProviderError "cuda:0: provider 'cuda' is not in ..."
    session = device_session(model, SessionConfig(), pool[1])   # its errors name "cpu:1"

A device is ``cpu``, ``cuda:N`` or ``tensorrt:N`` (N the GPU ordinal, passed to the provider
as its ``device_id`` option). ``cpu`` takes no real index: each bare ``cpu`` is numbered in
order so that several cpu entries name several sessions sharing the cores. A pool runs on one
provider: mixing kinds (``cuda:0,cpu``) is refused, since one slow member would hold back the
batches sent to it and the precision options of one provider do not fit another; so is a
device listed twice (``instances`` gives a device several sessions). A device that cannot be
used is one ProviderError naming it, never a fallback to cpu: ``cuda:1: provider 'cuda' is
not in this onnxruntime build``, or on a GPU build ONNX Runtime's own error for a device
ordinal that does not exist.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import FerryError, ProviderError, UsageError
from .runtime import SessionConfig, create_session

if TYPE_CHECKING:
    import onnxruntime as ort

    from .model import Model

DEVICE_KINDS = ("cpu", "cuda", "tensorrt")
_HINT = "list devices as cpu, cuda:N or tensorrt:N, comma-separated, e.g. --devices cuda:0,cuda:1"


@dataclass(frozen=True, order=True)
class Device:
    """One member of a pool: a provider's short name and its device ordinal."""

    provider: str
    index: int

    def __str__(self) -> str:
        return f"{self.provider}:{self.index}"


def parse_devices(text: str | Sequence[str]) -> list[Device]:
    """Devices from ``"cuda:0,cuda:1"`` (or a list of such entries); UsageError (one line) for
    an unknown kind, a missing or bad index, a device listed twice, or kinds mixed."""
    entries = text.split(",") if isinstance(text, str) else list(text)
    devices: list[Device] = []
    for raw in entries:
        entry = str(raw).strip().lower()
        if not entry:
            raise UsageError(f"devices {_shown(text)!r} holds an empty entry", hint=_HINT)
        kind, sep, index = entry.partition(":")
        if kind not in DEVICE_KINDS:
            raise UsageError(f"unknown device kind {kind!r} in {entry!r}", hint=_HINT)
        if not sep and kind == "cpu":
            taken = {d.index for d in devices if d.provider == "cpu"}
            devices.append(Device("cpu", next(i for i in range(len(taken) + 1) if i not in taken)))
            continue
        if not sep:
            raise UsageError(f"device {entry!r} needs an index", hint=f"e.g. {kind}:0")
        if not index.isdigit():
            raise UsageError(
                f"device {entry!r}: the index must be a whole number >= 0, got {index!r}",
                hint=f"e.g. {kind}:0",
            )
        device = Device(kind, int(index))
        if device in devices:
            raise UsageError(
                f"device {device} is listed twice",
                hint="list each device once; instances gives a device several sessions",
            )
        devices.append(device)
    if not devices:
        raise UsageError("no device given", hint=_HINT)
    kinds = sorted({d.provider for d in devices})
    if len(kinds) > 1:
        raise UsageError(
            f"devices {_shown(text)!r} mix {' and '.join(kinds)}; a pool runs on one provider",
            hint="list devices of one kind, e.g. cuda:0,cuda:1",
        )
    return devices


def _shown(text: str | Sequence[str]) -> str:
    return text if isinstance(text, str) else ",".join(str(t) for t in text)


def pool_provider(devices: Sequence[Device], provider: str | None = None) -> str:
    """The one provider of a pool; UsageError when ``provider`` (given besides the devices,
    cpu counting as not given) names another."""
    kind = devices[0].provider
    if provider not in (None, "cpu", kind):
        raise UsageError(
            f"provider {provider!r} and devices on {kind} disagree",
            hint="the devices set the provider: drop --provider (or provider in ferry.toml)",
        )
    return kind


def check_pool(devices: Sequence[Device]) -> None:
    """ProviderError naming the first device whose provider this onnxruntime build lacks
    ("cuda:1: provider 'cuda' is not in this onnxruntime build"); the device ordinals are
    checked when the sessions are made (``device_session``)."""
    from .runtime import available_providers

    have = available_providers()
    for device in devices:
        if device.provider not in have:
            extra = " and tensorrt-cu12" if device.provider == "tensorrt" else ""
            raise ProviderError(
                f"{device}: provider {device.provider!r} is not in this onnxruntime build",
                hint=f"available: {', '.join(have)}; {device.provider} needs "
                f"onnxruntime-gpu{extra} and an NVIDIA GPU",
            )


def device_session_config(config: SessionConfig, device: Device) -> SessionConfig:
    """``config`` on ``device``: its provider, ``device_id`` in the provider options (gpu
    kinds), and no fallback (a device asked for runs or fails)."""
    options = dict(config.provider_options)
    if device.provider != "cpu":
        options["device_id"] = device.index
    return dataclasses.replace(
        config, provider=device.provider, provider_options=options, fallback=False
    )


@contextmanager
def naming(device: Device) -> Iterator[None]:
    """Errors raised inside name ``device``: ``cuda:1: ...``, as a ProviderError (exit 2)."""
    try:
        yield
    except FerryError as e:
        raise ProviderError(f"{device}: {e.message}", hint=e.hint) from e


def device_session(model: Model, config: SessionConfig, device: Device) -> ort.InferenceSession:
    """A session for ``model`` on ``device`` (``device_session_config``); errors name it."""
    with naming(device):
        return create_session(model, device_session_config(config, device))


def describe_pool(devices: Sequence[Device]) -> str | None:
    """A note for several cpu entries (they share the cores), else None."""
    cpus = sum(d.provider == "cpu" for d in devices)
    if cpus > 1:
        return f"{cpus} cpu devices are {cpus} sessions sharing this machine's cores"
    return None


class SessionPool:
    """Sessions used as one (``bench`` times a pool so): each ``run`` takes the session idle
    longest, so calls from several threads spread over the devices; ``runs`` counts each's.

        pool = SessionPool([device_session(model, SessionConfig(), d) for d in devices])
        pool.run(None, feeds); pool.runs                  # [1, 0]
    """

    def __init__(self, sessions: Sequence[Any]) -> None:
        self.sessions = list(sessions)
        self.runs = [0] * len(self.sessions)
        self._idle: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self.sessions)):
            self._idle.put(index)

    def run(self, names: Any, feeds: Mapping[str, Any], options: Any = None) -> Any:
        index = self._idle.get()
        try:
            return self.sessions[index].run(names, feeds, options)
        finally:
            self.runs[index] += 1
            self._idle.put(index)

    def run_with_ort_values(self, names: Any, feeds: Mapping[str, Any], options: Any = None) -> Any:
        index = self._idle.get()
        try:
            return self.sessions[index].run_with_ort_values(names, feeds, options)
        finally:
            self.runs[index] += 1
            self._idle.put(index)

    def get_providers(self) -> list[str]:
        return list(self.sessions[0].get_providers())
