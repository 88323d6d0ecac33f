"""`ferry federated`: federated averaging over an ONNX model's weights (Flower, in simulation).

    ferry federated digits.onnx --clients a,b,c --rounds 3 --eval val.npz -o fed/
    ferry federated digits.onnx --clients a,b,c --rounds 5 --strategy fedprox --mu 0.01 \\
        --local-epochs 2 --lr 1e-2 -o fed/ --registry reg/ --name digits-fed

Each client directory holds its shard (train.npz: the model's inputs and the labels). OUTDIR
gets round-1.onnx ... round-R.onnx (each verified), report.json and report.html (accuracy per
round, plotted); the report's tables go to stdout (``--json``: the JSON report), and one line
per round to stderr as it is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..parity import Tolerance
from .options import lineage_options, report_options, seed_option, tolerance_options
from .render import emit
from .types import NAME_LIST


@click.command("federated")
@click.argument("model")
@click.option(
    "--clients",
    required=True,
    type=NAME_LIST,
    metavar="DIR[,DIR...]",
    help="One directory per client, each with its train.npz (inputs and labels).",
)
@click.option("--rounds", default=3, show_default=True, help="Federated rounds.")
@click.option(
    "--strategy",
    type=click.Choice(["fedavg", "fedprox"]),
    default="fedavg",
    show_default=True,
    help="Flower's FedAvg (weighted by samples) or FedProx (a proximal term on the clients).",
)
@click.option("--mu", default=0.0, show_default=True, help="FedProx's proximal weight (> 0).")
@click.option("--local-epochs", default=1, show_default=True, help="Epochs per client per round.")
@click.option("--lr", default=1e-3, show_default=True, help="The clients' learning rate (AdamW).")
@click.option("--batch-size", default=32, show_default=True, help="Rows per step.")
@click.option("--labels", "labels_key", help="The labels' array name (default: labels, y, ...).")
@click.option(
    "--eval",
    "eval_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out rows (.npz) every round's model is scored on.",
)
@seed_option("the clients' shuffling")
@click.option("--cpus", default=2, show_default=True, help="CPUs for Ray: clients run at once.")
@lineage_options("every round (each the parent of the next)", "Round 1's parent")
@click.option(
    "-o",
    "--outdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory for round-N.onnx and the reports.",
)
@tolerance_options()
@report_options
@click.pass_context
def federated_command(
    ctx: click.Context,
    model: str,
    clients: list[str],
    rounds: int,
    strategy: str,
    mu: float,
    local_epochs: int,
    lr: float,
    batch_size: int,
    labels_key: str | None,
    eval_path: Path | None,
    seed: int,
    cpus: int,
    registry: Path | None,
    name: str | None,
    parent: str | None,
    outdir: Path,
    tolerance: Tolerance | None,
    as_json: bool,
    report_path: Path | None,
) -> int:
    """Federated learning on an ONNX model: Flower runs ROUNDS rounds in simulation, each
    client fine-tunes its shard, the server averages the weights, and every round's model is
    written verified (secure aggregation is out of scope)."""
    from ..learn.federated import FederatedRun, Round, federated

    def show(record: Round) -> None:
        score = f"accuracy {record.accuracy:.4f}" if record.accuracy is not None else "written"
        where = Path(record.path).name if record.path else "the given model"
        click.echo(f"round {record.round}/{rounds}: {score} ({where})", err=True)

    final = federated(
        model,
        clients,
        outdir,
        rounds=rounds,
        strategy=strategy,
        mu=mu,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        labels_key=labels_key,
        eval_data=eval_path,
        seed=seed,
        cpus=cpus,
        tolerance=tolerance,
        registry=registry,
        name=name,
        parent=parent,
        verbose=bool(getattr(ctx.obj, "verbose", False)),  # -v: Flower's and Ray's logs too
        progress=None if as_json else show,
    )
    code = emit(final.last_report(FederatedRun), as_json, report_path)
    if not as_json:
        click.echo(f"report: {outdir / 'report.html'}", err=True)
    return code
