"""Promotion gates: a version takes an alias only after it passes them, and the report is kept.

    from onnxferry.registry.trust import trust
    trust(reg, "keys/public_key.pem")                   # the signature gate's keys
    report = promote(reg, "resnet:2", "staging", max_slowdown=0.2)
    report.ok, [(g.name, g.ok, g.detail) for g in report.result.gates]
    reg.history("resnet", "staging")[-1].gates["passed"]     # the gate report, kept

The gates, all run every time so the report shows each one:

- ``signature``: the version's signature verifies with ``public_key``, or else with one of the
  registry's trusted keys (``trust.trust``); an unsigned version, or no key at all, fails.
- ``golden``: ``ferry test`` on the version's golden data passes (at ``tolerance``; with a
  budget, the accuracy an optimized version was admitted at, sets outside the tolerance pass
  when together they meet it).
- ``parity``: the candidate's outputs match the alias's current holder's within ``tolerance``
  on the candidate's golden inputs (else the holder's; else generated ones); with a budget,
  outputs outside the tolerance pass when they meet it against the holder's.

The budget is ``budget`` when given (``--max-drop``, ``--budget``), else the one ``optimize``
recorded in the version (``optimize.budget.MODEL_KEY``, kept in its lineage as "budget"),
unless ``lineage_budget`` is False (``--tolerance-only``). A version that ``ferry ci``
optimized within ``--max-drop`` is judged at it, and so is the next lossy release that
replaces it. A budget that needs labelled data (golden sets have none) is not used (a note
says so).
- ``latency``: batch 1 (the first input set, cut to one row along its batch axes) is measured
  for holder and candidate interleaved, ``rounds`` rounds in alternating order
  (``sidebyside.measure_pair``); it fails when the median of the per-round ratios
  candidate / holder exceeds ``1 + max_slowdown``. The noise (half the interquartile spread
  of those ratios) is reported beside it.

Parity and latency pass, with a note, when the alias has no holder (or the candidate holds
it already). When every gate passes, or with ``force``, the alias moves in one catalog
transaction (``Registry.set_alias``) with the gate report in its history row: action
"promote", or "force" whenever ``force`` was given (the report says whether gates failed).
The transaction expects the holder seen when the gates started, so of two promotions racing
for one alias the second is refused (InputError) instead of silently replacing the first.
A refused promotion changes nothing and writes no history row (the history records what
aliases pointed at); its report is the record (``--report FILE``) and exits 1.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FerryError, UsageError
from ..parity import Tolerance
from ..report import Report, Table, jsonable
from .access import Opened, opened, verify_version
from .core import Registry
from .records import ALIAS, AliasChange, Ref, VersionRecord
from .sidebyside import (
    ROUNDS,
    Feeds,
    LatencyComparison,
    compare_run,
    comparison_inputs,
    measure_pair,
    run_versions,
)
from .trust import key_fingerprint, trusted_keys

if TYPE_CHECKING:
    from ..optimize.budget import Budget

DEFAULT_MAX_SLOWDOWN = 0.2
"""The latency gate's default: the candidate may be up to 20% slower at batch 1."""
_NO_KEY_HINT = "trust a key with `ferry registry trust PUB`, or pass --public-key"


# --- gate results --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """One gate: passed or not, one line saying why, and the figures behind it."""

    name: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "figures": self.figures}


@dataclass
class PromotionResult:
    """The gates of promoting ``name:version`` to ``name@alias``, which ``previous`` held
    when they started, and the alias change when it was made (ReportBody).

    ``ok``: every gate passed, or ``force`` promoted it anyway."""

    name: str
    alias: str
    version: int
    previous: int | None
    gates: list[GateResult]
    tolerance: Tolerance
    max_slowdown: float
    budget: str | None = None
    """The accuracy budget golden data and parity were judged at, beside the tolerance."""
    budget_from: str = ""
    """Where it came from: "given" or "lineage"."""
    latency: LatencyComparison | None = None
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    reason: str = ""
    change: AliasChange | None = None

    @property
    def passed(self) -> bool:
        return all(g.ok for g in self.gates)

    @property
    def ok(self) -> bool:
        return self.passed or (self.forced and self.change is not None)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def gate_report(self) -> dict[str, Any]:
        """What the history row keeps: the verdict, every gate and its figures."""
        report: dict[str, Any] = jsonable(
            {
                "candidate": self.ref,
                "alias": self.alias,
                "replaces": self.previous,
                "passed": self.passed,
                "forced": self.forced,
                "tolerance": self.tolerance.to_dict(),
                "budget": self.budget,
                "budget_from": self.budget_from or None,
                "max_slowdown": self.max_slowdown,
                "gates": [g.to_dict() for g in self.gates],
                "notes": list(self.notes),
            }
        )
        return report

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.gate_report(),
            "promoted": self.change is not None,
            "reason": self.reason,
            "change": self.change.to_dict() if self.change else None,
        }

    def tables(self) -> list[Table]:
        replaces = "no holder" if self.previous is None else f"replaces {self.name}:{self.previous}"
        title = f"promote {self.ref} to {self.name}@{self.alias} ({replaces})"
        rows = [(g.name, "PASS" if g.ok else "FAIL", g.detail) for g in self.gates]
        tables = [Table(title, ("gate", "result", "detail"), rows)]
        if self.latency is not None:
            tables.append(self.latency.table("latency at batch 1 (median of rounds)"))
        tables.append(Table("outcome", ("what", "detail"), [("outcome", self.outcome())]))
        return tables

    def outcome(self) -> str:
        failed = [g.name for g in self.gates if not g.ok]
        if self.change is not None:
            c = self.change
            was = "none" if c.previous is None else c.previous
            why = f" ({', '.join(failed)} failed)" if failed else ""
            return (
                f"{self.name}@{self.alias} -> {c.version} (was {was}): {c.action}{why} by {c.actor}"
            )
        if failed:
            return (
                f"refused: {', '.join(failed)} failed; {self.name}@{self.alias} unchanged "
                "(--force promotes anyway, recorded as forced)"
            )
        return "gates passed; not applied"


# --- the gates -----------------------------------------------------------------------------


def run_gates(
    registry: Registry,
    ref: str | Ref,
    to: str,
    *,
    public_key: str | Path | None = None,
    key: bytes | None = None,
    tolerance: Tolerance | None = None,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    rounds: int = ROUNDS,
    budget: Budget | None = None,
    lineage_budget: bool = True,
) -> PromotionResult:
    """Every gate of promoting ``ref`` to alias ``to``; changes nothing (``apply_promotion``
    does). ``key``: the encryption key of encrypted versions; ``budget``, ``lineage_budget``:
    the accuracy budget beside the tolerance (module docstring)."""
    if ALIAS.fullmatch(to) is None:
        raise UsageError(f"{to!r} is not an alias name", hint="letters, digits, . _ -")
    if not (max_slowdown >= 0 and math.isfinite(max_slowdown)):
        raise UsageError(
            f"max slowdown must be a finite fraction of 0 or more, got {max_slowdown}",
            hint="pass --max-slowdown 0.2 for up to 20% slower",
        )
    if rounds < 1:
        raise UsageError(f"rounds must be at least 1, got {rounds}")
    if public_key is not None:
        key_fingerprint(public_key)  # a key the user gave that cannot be used: exit 2 now
    tolerance = tolerance or Tolerance()
    record = registry.get(ref)
    previous = registry.aliases(record.name).get(to)
    result = PromotionResult(record.name, to, record.version, previous, [], tolerance, max_slowdown)
    budget = _judging_budget(record, budget, lineage_budget, result)
    result.gates.append(signature_gate(registry, record, public_key, key=key))
    with ExitStack() as stack:
        candidate = stack.enter_context(opened(registry, record, key=key))
        holder = None
        if previous is not None and previous != record.version:
            held = registry.get(Ref(record.name, previous))
            holder = stack.enter_context(opened(registry, held, key=key))
        result.gates.append(_guarded("golden", lambda: golden_gate(candidate, tolerance, budget)))
        if holder is None:
            why = (
                f"no version holds {record.name}@{to} yet"
                if previous is None
                else f"{record.ref} holds {record.name}@{to} already"
            )
            result.gates.append(GateResult("parity", True, f"{why}; nothing to compare with"))
            result.gates.append(GateResult("latency", True, f"{why}; nothing to compare with"))
            return result
        inputs = _guarded_inputs(candidate, holder)
        if isinstance(inputs, GateResult):
            result.gates += [dataclasses.replace(inputs, name=n) for n in ("parity", "latency")]
            return result
        feeds, source = inputs
        result.gates.append(
            _guarded(
                "parity", lambda: parity_gate(holder, candidate, feeds, source, tolerance, budget)
            )
        )
        try:
            latency = measure_pair(holder, candidate, feeds[0], rounds=rounds)
        except FerryError as e:
            result.gates.append(GateResult("latency", False, _error_text(e)))
        else:
            result.latency = latency
            result.gates.append(latency_gate(latency, max_slowdown, source))
            if latency.noise > max_slowdown:
                result.notes.append(
                    f"the latency measurement's noise (+-{latency.noise:.0%}) exceeds the "
                    f"allowed slowdown ({max_slowdown:.0%}): the latency verdict is uncertain"
                )
    return result


def apply_promotion(
    registry: Registry,
    result: PromotionResult,
    *,
    force: bool = False,
    reason: str = "",
    actor: str | None = None,
) -> PromotionResult:
    """Move the alias when the gates passed (or ``force``), recording the gate report;
    InputError when the alias changed since the gates started. A failed, unforced result
    comes back unchanged (nothing written)."""
    if not result.passed and not force:
        return result
    done = dataclasses.replace(result, forced=force, reason=reason)
    done.change = registry.set_alias(
        result.name,
        result.alias,
        result.version,
        action="force" if force else "promote",
        reason=reason,
        gates=done.gate_report(),
        actor=actor,
        expect=result.previous,
    )
    return done


def promote(
    registry: Registry,
    ref: str | Ref,
    to: str,
    *,
    public_key: str | Path | None = None,
    key: bytes | None = None,
    force: bool = False,
    reason: str = "",
    tolerance: Tolerance | None = None,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    actor: str | None = None,
    rounds: int = ROUNDS,
    budget: Budget | None = None,
    lineage_budget: bool = True,
) -> Report[PromotionResult]:
    """``run_gates``, then ``apply_promotion``: the report is not ok (exit 1) when a gate
    failed and ``force`` was not given; then nothing changed."""
    result = run_gates(
        registry,
        ref,
        to,
        public_key=public_key,
        key=key,
        tolerance=tolerance,
        max_slowdown=max_slowdown,
        rounds=rounds,
        budget=budget,
        lineage_budget=lineage_budget,
    )
    result = apply_promotion(registry, result, force=force, reason=reason, actor=actor)
    return Report("registry promote", result, notes=list(result.notes))


def signature_gate(
    registry: Registry,
    record: VersionRecord,
    public_key: str | Path | None,
    *,
    key: bytes | None = None,
) -> GateResult:
    """Whether the version's signature verifies with ``public_key``, or else with one of the
    registry's trusted keys."""
    if record.signature is None:
        return GateResult(
            "signature", False, f"{record.ref} is unsigned (add it with --sign-key to sign it)"
        )
    if public_key is not None:
        try:
            found = verify_version(registry, record, public_key, key=key)
        except FerryError as e:
            return GateResult("signature", False, _error_text(e))
        if found.ok:
            return GateResult(
                "signature", True, f"verifies with {public_key}", {"files": list(found.files)}
            )
        return GateResult("signature", False, found.reason or "does not verify")
    keys = trusted_keys(registry)
    if not keys:
        return GateResult("signature", False, f"no key to verify {record.ref} with; {_NO_KEY_HINT}")
    reasons = []
    with tempfile.TemporaryDirectory(prefix="ferry-trusted-") as tmp:
        for trusted in keys:
            pem = Path(tmp) / f"{trusted.fingerprint}.pem"
            pem.write_text(trusted.pem, encoding="ascii")
            try:
                found = verify_version(registry, record, pem, key=key)
            except FerryError as e:
                return GateResult("signature", False, _error_text(e))
            if found.ok:
                detail = f"verifies with trusted key {trusted.fingerprint[:16]}"
                figures = {"fingerprint": trusted.fingerprint, "files": list(found.files)}
                return GateResult("signature", True, detail, figures)
            reason = found.reason or "does not verify"
            reasons.append(reason.replace(str(pem), f"trusted key {trusted.fingerprint[:16]}"))
    tried = f"{len(keys)} trusted key{'s' if len(keys) > 1 else ''}"
    first = reasons[0]
    return GateResult(
        "signature", False, f"verifies with none of the {tried} ({first})", {"tried": len(keys)}
    )


def golden_gate(version: Opened, tolerance: Tolerance, budget: Budget | None = None) -> GateResult:
    """``ferry test`` on the version's golden data; with a ``budget`` (the accuracy the
    version was optimized within, ``--max-drop``), sets outside the tolerance pass when the
    outputs of all of them together meet it."""
    from ..golden import test

    if version.golden is None:
        return GateResult(
            "golden",
            False,
            f"{version.record.ref} has no golden data (register it with --golden DIR)",
        )
    found = test(version.model, version.golden, tolerance=tolerance).result
    passed = sum(c.passed for c in found.cases)
    figures = {"sets": len(found.cases), "passed": passed, "max_abs": _max_abs(found.cases)}
    if found.ok:
        unchecked = sum(c.parity is None for c in found.cases)
        extra = f" ({unchecked} without expected outputs)" if unchecked else ""
        return GateResult(
            "golden", True, f"{passed}/{len(found.cases)} golden sets pass{extra}", figures
        )
    worst = next(c for c in found.cases if not c.passed)
    summary = worst.parity.summary() if worst.parity else "failed"
    detail = f"{passed}/{len(found.cases)} golden sets pass; {worst.name}: {summary}"
    if budget is None:
        return GateResult("golden", False, detail, figures)
    judged = [c for c in found.cases if c.expected and c.produced is not None]
    expected = [c.expected or {} for c in judged]
    produced = [c.produced or {} for c in judged]
    return _at_budget(
        "golden", budget, expected, produced, f"{detail}; all {len(judged)} sets", figures
    )


def parity_gate(
    holder: Opened,
    candidate: Opened,
    feeds: Sequence[Feeds],
    source: str,
    tolerance: Tolerance,
    budget: Budget | None = None,
) -> GateResult:
    """The candidate's outputs against the holder's on the same inputs; with a ``budget``,
    outside the tolerance they pass when they meet it against the holder's."""
    outputs = run_versions(holder, candidate, feeds)
    found = compare_run(holder, candidate, outputs, tolerance)
    figures = {"inputs": source, "max_abs": found.max_abs, "max_rel": found.max_rel}
    figures |= found.to_dict()
    if found.ok:
        detail = (
            f"matches {holder.record.ref} on {source} ({found.samples} sets, "
            f"max abs {found.max_abs:.3g}, max rel {found.max_rel:.3g})"
        )
        return GateResult("parity", True, detail, figures)
    detail = f"on {source}: {found.summary()}"
    if budget is None:
        return GateResult("parity", False, detail, figures)
    against = f"{detail}; against {holder.record.ref}"
    return _at_budget("parity", budget, outputs[0], outputs[1], against, figures)


def latency_gate(found: LatencyComparison, max_slowdown: float, source: str) -> GateResult:
    """Pass when the median per-round ratio is at most ``1 + max_slowdown``."""
    limit = 1 + max_slowdown
    ok = found.ratio <= limit
    detail = (
        f"{found.candidate} {found.candidate_p50_ms:.3g} ms vs {found.reference} "
        f"{found.reference_p50_ms:.3g} ms at batch 1: {found.ratio:.2f}x "
        f"({'within' if ok else 'over'} the {limit:.2f}x limit; noise +-{found.noise:.0%})"
    )
    figures = {"inputs": source, "max_slowdown": max_slowdown, "limit": limit, **found.to_dict()}
    return GateResult("latency", ok, detail, figures)


# --- helpers -------------------------------------------------------------------------------


def _judging_budget(
    record: VersionRecord, given: Budget | None, lineage: bool, result: PromotionResult
) -> Budget | None:
    """The budget the gates judge at (module docstring), written into ``result``."""
    from ..optimize.budget import Budget

    budget, whence = given, "given"
    recorded = record.lineage.get("budget") if given is None and lineage else None
    if isinstance(recorded, str):
        try:
            budget, whence = Budget.parse(recorded), "lineage"
        except UsageError:
            result.notes.append(
                f"{record.ref}'s lineage names a budget ferry cannot read: {recorded!r}"
            )
    if budget is not None and budget.needs_labels:
        result.notes.append(
            f"the budget {budget.text()} needs labelled data, which golden sets lack: golden "
            "data and parity are judged at the tolerance only"
        )
        return None
    if budget is not None:
        result.budget, result.budget_from = budget.text(), whence
        if whence == "lineage":
            result.notes.append(
                f"judged at the accuracy budget {budget.text()} {record.ref} was optimized "
                "within (its lineage; --tolerance-only judges at the tolerance alone)"
            )
    return budget


def _at_budget(
    name: str,
    budget: Budget,
    expected: Sequence[Feeds],
    produced: Sequence[Feeds],
    detail: str,
    figures: dict[str, Any],
) -> GateResult:
    """A gate whose outputs missed the tolerance, judged at ``budget`` instead."""
    value = budget.measure(expected, produced)
    figures[budget.metric] = value
    within = budget.holds(value)
    return GateResult(
        name,
        within,
        f"{detail} {'within' if within else 'outside'} the accuracy budget {budget.text()} "
        f"({budget.metric} {value:.6g})",
        figures,
    )


def _guarded(name: str, gate: Callable[[], GateResult]) -> GateResult:
    """A gate whose model or data cannot run fails with the error's line, so every gate is
    still reported."""
    try:
        return gate()
    except FerryError as e:
        return GateResult(name, False, _error_text(e))


def _guarded_inputs(candidate: Opened, holder: Opened) -> tuple[list[Feeds], str] | GateResult:
    try:
        return comparison_inputs(candidate, holder)
    except FerryError as e:
        return GateResult("inputs", False, f"no inputs to compare on: {_error_text(e)}")


def _error_text(error: FerryError) -> str:
    return str(error)


def _max_abs(cases: Sequence[Any]) -> float | None:
    found = [c.parity.max_abs for c in cases if c.parity is not None]
    return max(found) if found else None
