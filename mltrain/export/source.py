"""What an export reads from a run: one checkpoint, the level to export, its tensors and path.

A run directory holds ``checkpoints/ckpt_<step>.pt`` (:mod:`mltrain.train.checkpoint`; ``step``
counts optimizer steps of all levels), ``metrics.jsonl`` (:mod:`mltrain.metrics`) and ``run.json``.
:func:`open_run` picks a checkpoint (the newest healthy one, or ``--step``), rebuilds the run's
plan from the config the checkpoint holds (:func:`mltrain.readback.plan_of_config`) and returns
an :class:`Exportable`: the tensors of an :class:`~mltrain.model.transformer.ODETransformer`
(the fine model's, or a width level's narrow model's) and the path of blocks and step sizes
the exported model integrates.

What may be exported (the rules, checked before anything is written):

- the fine level (all blocks, h = 1: a GPT-2 block each) when the run's validation measured
  the fine path at that checkpoint; a checkpoint taken inside a coarse stage of a staged run
  (growth, width growth) holds a model whose fine blocks are not trained yet: refused, naming
  the stage's level to export instead;
- a depth level (``--level coarse_a``: its blocks of the fine tensors, its step h), at any
  checkpoint (a V-cycle trains every level all along; a staged run's coarse level is best
  exported from a checkpoint of its own stage);
- a width level (its own narrow tensors, kept in the checkpoint by the ``width`` extension);
- refused: a patch level (K tokens per position is not a causal LM of one token per position)
  and a random sub-path level (no fixed path; its validation measures the fine path).

Errors are :class:`ExportError` (one line, exit status 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mltrain.config import MLTrainConfig
from mltrain.errors import CheckpointError, MLTrainError
from mltrain.levels import Level
from mltrain.levels.raptr import RandomPath
from mltrain.levels.width import WidthLevel
from mltrain.metrics import METRICS_FILE, read_metrics
from mltrain.readback import plan_of_config, typed_config
from mltrain.runrecord import UnreadableRecord, read_run_record
from mltrain.schemes.width import WidthState
from mltrain.train.checkpoint import (
    CKPT_DIR,
    checkpoint_path,
    extension_states,
    list_checkpoints,
    load_checkpoint,
    load_latest,
)
from mltrain.train.progress import Progress


class ExportError(MLTrainError):
    """A run, checkpoint, level or output directory that cannot be exported (one line)."""


@dataclass
class Exportable:
    """One model to export.

    Attributes:
        run_dir: the run directory.
        checkpoint: the checkpoint file read.
        step: its ``step`` (optimizer steps of all levels).
        cfg: the run's typed config (from the checkpoint).
        level: the exported level's name (``fine``, ``coarse_a``, ``narrow``, ...).
        weights: an :class:`ODETransformer` state dict (``wte.weight`` (V, d), ``wpe.weight``
            (block_size, d), ``blocks.<i>.…``, ``ln_f.…``; the head is tied to ``wte``).
        n_embd, n_head: width d and heads of ``weights`` (a width level: d/c and H/c).
        blocks: the blocks of ``weights`` the exported model evaluates, in order.
        steps: the Euler step h of each of them (1.0 everywhere: a GPT-2).
        stage: the level whose stage the checkpoint was taken in (the path the run's
            ``val/loss`` measured there).
    """

    run_dir: Path
    checkpoint: Path
    step: int
    cfg: MLTrainConfig
    level: str
    weights: dict[str, torch.Tensor]
    n_embd: int
    n_head: int
    blocks: tuple[int, ...]
    steps: tuple[float, ...]
    stage: str

    @property
    def vocab_size(self) -> int:
        return int(self.weights["wte.weight"].shape[0])

    @property
    def block_size(self) -> int:
        return int(self.weights["wpe.weight"].shape[0])

    @property
    def bias(self) -> bool:
        return "ln_f.bias" in self.weights

    @property
    def is_gpt2(self) -> bool:
        """Every step is h = 1: each block is exactly a GPT-2 block."""
        return all(h == 1.0 for h in self.steps)

    def describe(self) -> str:
        """E.g. ``coarse_a (blocks 1,3; h=2)``."""
        hs = sorted(set(self.steps))
        h = ",".join(f"{x:g}" for x in hs)
        return f"{self.level} (blocks {','.join(map(str, self.blocks))}; h={h})"

    def logged_val_loss(self) -> float | None:
        """The run's ``val/loss`` at this checkpoint's step when it measured this model (the
        checkpoint was taken in this level's stage, so validation ran this level's path), else
        None (e.g. a V-cycle's coarse level: the run validates the fine path only)."""
        if self.stage != self.level:
            return None
        for rec in read_metrics(self.run_dir / METRICS_FILE):
            if rec.get("step") == self.step and rec.get("val/loss") is not None:
                return float(rec["val/loss"])
        return None

    def last_train_loss(self) -> tuple[int, float] | None:
        """(step, ``train/loss``) of the last record of this level up to the checkpoint's
        step: its loss on a training batch, for context where no validation loss was logged."""
        last = None
        for rec in read_metrics(self.run_dir / METRICS_FILE):
            if rec.get("level") == self.level and rec.get("step", 1 << 62) <= self.step:
                if rec.get("train/loss") is not None:
                    last = (int(rec["step"]), float(rec["train/loss"]))
        return last

    def validation_fingerprint(self) -> str | None:
        """The fingerprint of the run's validation windows (``run.json``), or None."""
        try:
            info = read_run_record(self.run_dir)
        except UnreadableRecord:
            return None
        return (info.get("validation") or {}).get("fingerprint")


def find_checkpoint(run_dir: Path, step: int | None) -> tuple[dict, Path]:
    """The checkpoint of ``run_dir`` at ``step`` (None: the newest healthy one) and its path.

    Raises:
        ExportError: not a directory, no checkpoint, or no checkpoint at ``step`` (names the
            steps there are).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir} is not a directory")
    ckdir = run_dir / CKPT_DIR
    found = list_checkpoints(ckdir)
    if not found:
        raise ExportError(
            f"RUN_DIR {run_dir} holds no checkpoint ({ckdir}/ckpt_<step>.pt): a run writes one "
            "every train.checkpoint_every fine steps and at its end"
        )
    if step is None:
        latest = load_latest(ckdir)
        if latest is None:  # pragma: no cover (load_latest raises when files exist)
            raise ExportError(f"RUN_DIR {run_dir}: no usable checkpoint in {ckdir}")
        return latest
    path = checkpoint_path(ckdir, step)
    if not path.is_file():
        steps = ", ".join(str(int(p.stem[5:])) for p in found)
        raise ExportError(
            f"--step {step}: {run_dir} has no checkpoint of that step; it has steps {steps}"
        )
    try:
        return load_checkpoint(path), path
    except CheckpointError as e:
        raise ExportError(str(e)) from None


def stage_level(state: dict, plan) -> str:
    """The level whose stage the checkpoint ``state`` was taken in: the stage of the iteration
    that ran last (a checkpoint at the end of an iteration: that iteration; one taken inside an
    iteration by a signal: the current one), as the trainer's evaluation chooses it."""
    p = Progress.from_state(state["progress"])
    k = p.iteration - 1 if p.op == 0 and p.iteration > 0 else p.iteration
    return plan.stage_at(k).level


def open_run(run_dir: Path, step: int | None = None, level: str | None = None) -> Exportable:
    """Read the model to export from ``run_dir`` (module docstring: what is allowed).

    Args:
        run_dir: a run directory (``mltrain``'s ``hydra.run.dir``).
        step: the checkpoint's step; None: the newest healthy checkpoint.
        level: the level to export; None: the fine level.

    Raises:
        ExportError: no checkpoint (at that step), an unknown level (names the run's levels),
            a level that is not a causal LM of one token per position, or the fine level of a
            checkpoint taken inside a coarse stage.
    """
    run_dir = Path(run_dir)
    state, path = find_checkpoint(run_dir, step)
    model = state["model"]
    cfg = typed_config(state.get("config") or {})
    plan = plan_of_config(state.get("config") or {}, int(model["wte.weight"].shape[0]))
    levels = {lv.name: lv for lv in plan.levels}
    name = level or plan.fine.name
    if name not in levels:
        raise ExportError(
            f"--level {name}: the run has no such level; its levels are {', '.join(levels)}"
        )
    lv = levels[name]
    stage = stage_level(state, plan)
    step_no = int(path.stem[5:])
    if lv.is_fine:
        st = levels[stage]
        if isinstance(st, WidthLevel) or st.eval_path != lv.path:
            raise ExportError(
                f"{path.name} (step {step_no}) was taken in the stage of level {stage} "
                f"(blocks {','.join(map(str, st.blocks))}, h={st.h:g}{_width(st)}): the fine "
                f"model's blocks are not trained there yet; export --level {stage}, or a "
                "checkpoint of the fine stage (--step)"
            )
    _refuse_kind(lv)
    if isinstance(lv, WidthLevel):
        narrow = extension_states(state).get(WidthState.name, {}).get(lv.name)
        if narrow is None:
            raise ExportError(
                f"--level {name}: {path.name} holds no narrow tensors of this width level"
            )
        d, heads = _dims(model, cfg)
        c = lv.width_factor
        p = lv.eval_path  # over the narrow model's blocks
        return Exportable(
            run_dir, path, step_no, cfg, name, dict(narrow), d // c, heads // c, p.blocks,
            p.steps(), stage,
        )  # fmt: skip
    d, heads = _dims(model, cfg)
    return Exportable(
        run_dir, path, step_no, cfg, name, dict(model), d, heads, lv.blocks,
        lv.path.steps(), stage,
    )  # fmt: skip


def _dims(model: dict, cfg: MLTrainConfig) -> tuple[int, int]:
    return int(model["wte.weight"].shape[1]), int(cfg.model.n_head)


def _width(lv: Level) -> str:
    return f", width d/{lv.width_factor}" if isinstance(lv, WidthLevel) else ""


def _refuse_kind(lv: Level) -> None:
    """Raise :class:`ExportError` for a level that is not a causal LM of one token per position
    along a fixed path (a patch level, a random sub-path level)."""
    if isinstance(lv, RandomPath):
        raise ExportError(
            f"--level {lv.name} is a random sub-path level: it draws another path of blocks at "
            "every step (its validation measures the fine path); export the fine level"
        )
    if lv.patch != 1:
        raise ExportError(
            f"--level {lv.name} is a patch level ({lv.patch} tokens per position, each position "
            "predicting the next patch): not a causal LM of one token per position; export a "
            "token level"
        )
