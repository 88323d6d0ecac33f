"""Energy from the CPU's RAPL counters (Linux powercap): joules used over a block of code.

    rapl = Rapl.find()                   # the package domains, or why there are none
    with EnergyMeter(rapl) as meter:
        sum(i * i for i in range(100_000))
    meter.joules                         # None when rapl.unavailable says why
    rapl.describe()                      # "RAPL package-0 (...)" or "unavailable (...)"

The counters are ``/sys/class/powercap/intel-rapl:N/energy_uj`` (Intel and AMD both expose
them there): microjoules since some point, wrapping at ``max_energy_range_uj``. Only package
domains are read (``intel-rapl:N`` named ``package-N``); their cores, uncore and dram
subdomains are inside them, and ``psys`` would count the package twice. The figure is
package-wide: it includes everything else running on those packages in that window, not just
the code in the block. A counter that went backwards wrapped once; a window long enough to
wrap twice (hours at full power) cannot be told apart. Machines without the counters (VMs,
containers, macOS) and kernels that keep them root-only (Linux 5.10 on, CVE-2020-8694) give
``unavailable`` with the reason instead of a figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

POWERCAP = Path("/sys/class/powercap")
"""Where Linux exposes power capping zones, RAPL among them."""

_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplDomain:
    """One package's energy counter: ``path`` is its powercap zone directory."""

    name: str
    path: Path
    max_range_uj: int

    def read_uj(self) -> int:
        """The counter now (microjoules); OSError or ValueError when it cannot be read."""
        return int((self.path / "energy_uj").read_text().strip())


@dataclass(frozen=True)
class Rapl:
    """The package domains under ``root``, or (``unavailable``) why energy cannot be read."""

    domains: tuple[RaplDomain, ...] = ()
    unavailable: str | None = None
    root: Path = field(default=POWERCAP)

    @classmethod
    def find(cls, root: str | Path = POWERCAP) -> Rapl:
        """The readable package domains under ``root`` (a sysfs powercap directory)."""
        root = Path(root)
        if not root.is_dir():
            return cls(unavailable=f"no RAPL counters: {root} does not exist", root=root)
        zones = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name))
        domains = []
        for zone in zones:
            try:
                name = (zone / "name").read_text().strip()
                if not name.startswith("package"):
                    continue
                domain = RaplDomain(name, zone, int((zone / "max_energy_range_uj").read_text()))
                domain.read_uj()
            except PermissionError:
                return cls(
                    unavailable=f"permission denied reading {zone / 'energy_uj'} "
                    "(RAPL counters are root-only on this kernel)",
                    root=root,
                )
            except (OSError, ValueError) as e:
                return cls(unavailable=f"cannot read {zone}: {e}", root=root)
            domains.append(domain)
        if not domains:
            return cls(unavailable=f"no RAPL package domain under {root}", root=root)
        return cls(tuple(domains), root=root)

    def read(self) -> list[int]:
        """Every domain's counter now (microjoules)."""
        return [d.read_uj() for d in self.domains]

    def joules_between(self, start: list[int], end: list[int]) -> float:
        """Joules used between two ``read()``s, each counter unwrapped once if it went back."""
        total = 0
        for domain, a, b in zip(self.domains, start, end, strict=True):
            delta = b - a
            if delta < 0:  # wrapped at max_energy_range_uj, as turbostat counts it
                delta += domain.max_range_uj
            total += delta
        return total / 1e6

    def describe(self) -> str:
        """What an energy figure means here, or why there is none (for a report)."""
        if self.unavailable is not None:
            return f"unavailable ({self.unavailable})"
        names = ", ".join(d.name for d in self.domains)
        return (
            f"RAPL {names} (package-wide: includes everything else running on the package "
            "during each timed window)"
        )


class EnergyMeter:
    """Joules used over a ``with`` block, from ``rapl``'s counters: None when they are
    unavailable, or when a counter could not be read at either end of the block."""

    def __init__(self, rapl: Rapl) -> None:
        self.rapl = rapl
        self.joules: float | None = None
        self._start: list[int] | None = None

    def __enter__(self) -> EnergyMeter:
        self.joules = None
        self._start = self._read()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end = self._read()
        if self._start is not None and end is not None:
            self.joules = self.rapl.joules_between(self._start, end)

    def _read(self) -> list[int] | None:
        if self.rapl.unavailable is not None:
            return None
        try:
            return self.rapl.read()
        except (OSError, ValueError):
            return None
