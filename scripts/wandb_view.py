"""Build a saved W&B workspace view that compares single-level and multilevel runs.

    python scripts/wandb_view.py --entity ENTITY [--project mltrain] [--group GROUP]
                                 [--by coarsening.vcycle.delta ...] [--name NAME] [--print]

The view has one section per FLOPs total (``perf/flops``: with head, ``perf/flops_nonembed``:
non-embedding), each with ``val/loss`` and ``train/loss`` against that total (log x). The
runs are grouped by W&B group (the experiment or sweep), then job type (the run's role:
``single_level/same_steps``, ``single_level/same_flops``, ``multilevel``, ``frontier``), so
the two single-level baselines are separate lines, then any config keys given with ``--by`` (nested keys as dotted names,
e.g. ``coarsening.vcycle.delta``); grouped lines show the mean with a min-max band. ``--group``
keeps only the runs of one experiment or sweep.

Saving needs the optional package ``wandb-workspaces`` (``pip install wandb-workspaces``)
and a W&B login; ``--print`` only prints the definition (JSON) and needs neither. Note that
in W&B ``train/loss`` holds every optimizer step, coarse levels included (a coarse step's
loss is that of the coarse network); ``mltrain-compare`` plots the fine-level loss only.
"""

from __future__ import annotations

import argparse
import json
import sys

LOSSES = ("val/loss", "train/loss")
X_AXES = {"perf/flops": "FLOPs (with head)", "perf/flops_nonembed": "FLOPs (non-embedding)"}
INSTALL_HINT = "wandb_view.py: needs the package wandb-workspaces: pip install wandb-workspaces"


def view_definition(
    name: str = "mltrain: loss vs FLOPs",
    group: str | None = None,
    by: tuple[str, ...] | list[str] = (),
) -> dict:
    """The view as plain data (no W&B package needed): sections of line panels, the runset
    grouping (``run`` attributes Group and JobType, then ``config`` keys) and filters."""
    sections = [
        {
            "name": f"loss vs {label}",
            "panels": [
                {
                    "title": f"{y} vs {label}",
                    "x": x,
                    "y": [y],
                    "log_x": True,
                    "groupby_aggfunc": "mean",
                    "groupby_rangefunc": "minmax",
                }
                for y in LOSSES
            ],
        }
        for x, label in X_AXES.items()
    ]
    groupby = [{"section": "run", "name": "Group"}, {"section": "run", "name": "JobType"}]
    groupby += [{"section": "config", "name": key} for key in by]
    filters = [{"section": "run", "name": "Group", "op": "==", "value": group}] if group else []
    return {"name": name, "sections": sections, "groupby": groupby, "filters": filters}


def build_workspace(definition: dict, entity: str, project: str):
    """A ``wandb_workspaces`` Workspace for ``definition`` (not saved yet).

    Raises:
        ImportError: wandb-workspaces is not installed.
    """
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def key(item):
        return ws.Metric(item["name"]) if item["section"] == "run" else ws.Config(item["name"])

    sections = [
        ws.Section(
            name=s["name"],
            is_open=True,
            panels=[
                wr.LinePlot(
                    title=p["title"],
                    x=p["x"],
                    y=list(p["y"]),
                    log_x=p["log_x"],
                    groupby_aggfunc=p["groupby_aggfunc"],
                    groupby_rangefunc=p["groupby_rangefunc"],
                )
                for p in s["panels"]
            ],
        )
        for s in definition["sections"]
    ]
    filters = [key(f) == f["value"] for f in definition["filters"]]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=definition["name"],
        sections=sections,
        runset_settings=ws.RunsetSettings(
            groupby=[key(g) for g in definition["groupby"]], filters=filters
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", help="W&B entity (user or team); needed to save")
    parser.add_argument("--project", default="mltrain", help="W&B project (logger.project)")
    parser.add_argument("--group", help="only the runs of this W&B group (experiment or sweep)")
    parser.add_argument(
        "--by",
        nargs="*",
        default=[],
        metavar="CONFIG_KEY",
        help="further group by these config keys, e.g. coarsening.vcycle.delta",
    )
    parser.add_argument("--name", default="mltrain: loss vs FLOPs", help="name of the saved view")
    parser.add_argument(
        "--print", action="store_true", help="print the definition as JSON, save nothing"
    )
    args = parser.parse_args(argv)
    definition = view_definition(args.name, args.group, args.by)
    if args.print:
        print(json.dumps(definition, indent=2))
        return 0
    if not args.entity:
        parser.error("--entity is required to save a view (or use --print)")
    try:
        workspace = build_workspace(definition, args.entity, args.project)
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    workspace.save()
    print(f"saved view {args.name!r}: {workspace.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
