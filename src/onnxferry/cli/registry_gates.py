"""`ferry registry promote | diff | trust`: promotion gates, version diffs, trusted keys.

    ferry registry trust keys/public_key.pem
    ferry registry promote resnet:2 --to staging --reason "first release"
    ferry registry diff resnet:1 resnet:2 --no-latency

``promote`` exits 1 when a gate fails (nothing changes then) unless ``--force``, which is
recorded as such in the history; ``diff`` exits 1 when B's outputs differ from A's. The
verbs live in ``onnxferry.registry.gates``, ``onnxferry.registry.diff`` and
``onnxferry.registry.trust``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..parity import Tolerance
from ..report import Report
from .options import encrypt_key_option, public_key_option, report_options, tolerance_options
from .registry import registry_option
from .render import emit

encrypted_versions = encrypt_key_option("of encrypted versions")


def _key(registry_path: Path, refs: list[str], key_file: Path | None) -> bytes | None:
    """The encryption key when a version named needs one (or a key file was given)."""
    from ..registry import Registry
    from ..registry.crypto import load_key

    if key_file is not None:
        return load_key(key_file)
    reg = Registry.open(registry_path)
    if any(reg.get(ref).encrypted for ref in refs):
        return load_key(None)
    return None


@click.command("promote")
@click.argument("ref")
@click.option("--to", "alias", required=True, help="The alias to move (staging, production...).")
@click.option("--force", is_flag=True, help="Promote even when a gate fails (recorded as forced).")
@click.option("--reason", default="", help="Recorded in the history.")
@public_key_option("the signature gate checks with (default: the registry's trusted keys)")
@click.option(
    "--max-slowdown",
    type=float,
    default=0.2,
    show_default=True,
    help="How much slower at batch 1 than the version it replaces (0.2: 20%).",
)
@tolerance_options()
@click.option(
    "--max-drop",
    type=float,
    help="Judge at cosine >= 1 - drop beside the tolerance (default: the budget optimize "
    "recorded in the version, if any): golden sets and parity outside the tolerance pass "
    "when they meet it.",
)
@click.option("--budget", "budget_text", help="An explicit budget instead, e.g. cosine>=0.999.")
@click.option(
    "--tolerance-only",
    is_flag=True,
    help="Judge golden data and parity at the tolerance alone, whatever the version recorded.",
)
@encrypted_versions
@registry_option
@report_options
def promote(
    ref: str,
    alias: str,
    force: bool,
    reason: str,
    public_key: Path | None,
    max_slowdown: float,
    tolerance: Tolerance | None,
    max_drop: float | None,
    budget_text: str | None,
    tolerance_only: bool,
    encrypt_key_file: Path | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Run the gates on REF (NAME:VERSION or NAME@ALIAS) and point --to at it if they pass."""
    from ..optimize.budget import Budget
    from ..registry import Registry
    from ..registry.gates import promote as run

    if sum(x is not None for x in (max_drop, budget_text)) + tolerance_only > 1:
        raise UsageError(
            "--max-drop, --budget and --tolerance-only each set the budget",
            hint="give one of them",
        )
    budget = None if max_drop is None else Budget.from_max_drop(max_drop)
    if budget_text is not None:
        budget = Budget.parse(budget_text)
        if budget.needs_labels:
            raise UsageError(
                f"the budget {budget.text()} needs labelled data, which golden sets lack",
                hint="judge at cosine, top1 or max_abs",
            )
    key = _key(registry_path, [ref], encrypt_key_file)
    report = run(
        Registry.open(registry_path),
        ref,
        alias,
        public_key=public_key,
        key=key,
        force=force,
        reason=reason,
        tolerance=tolerance,
        max_slowdown=max_slowdown,
        budget=budget,
        lineage_budget=not tolerance_only,
    )
    return emit(report, as_json, report_path)


@click.command("diff")
@click.argument("ref_a")
@click.argument("ref_b")
@public_key_option("signatures are checked with (default: the registry's trusted keys)")
@click.option("--no-latency", is_flag=True, help="Skip the batch-1 latency measurement.")
@tolerance_options()
@encrypted_versions
@registry_option
@report_options
def diff_command(
    ref_a: str,
    ref_b: str,
    public_key: Path | None,
    no_latency: bool,
    tolerance: Tolerance | None,
    encrypt_key_file: Path | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Two versions side by side: signature, opsets, operators, size, parity, latency."""
    from ..registry import Registry
    from ..registry.diff import diff

    key = _key(registry_path, [ref_a, ref_b], encrypt_key_file)
    report = diff(
        Registry.open(registry_path),
        ref_a,
        ref_b,
        key=key,
        public_key=public_key,
        tolerance=tolerance,
        latency=not no_latency,
    )
    return emit(report, as_json, report_path)


@click.command("trust")
@click.argument("public_key", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--remove", metavar="FINGERPRINT", help="Stop trusting this key.")
@registry_option
@report_options
def trust(
    public_key: Path | None,
    remove: str | None,
    registry_path: Path,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Trust PUBLIC_KEY for the signature gate; list the trusted keys."""
    from ..registry import Registry
    from ..registry.trust import TrustList, distrust, trusted_keys
    from ..registry.trust import trust as add_key

    reg = Registry.open(registry_path, create=public_key is not None)
    if public_key is not None:
        add_key(reg, public_key)
    if remove is not None:
        distrust(reg, remove)
    return emit(Report("registry trust", TrustList(trusted_keys(reg))), as_json, report_path)


GATE_VERBS: list[click.Command] = [promote, diff_command, trust]
