"""``mltrain-export`` and ``mltrain-sample``: a trained model leaves mltrain.

    mltrain-export outputs/runs/<run> exports/<name>                 # the fine model, newest checkpoint
    mltrain-export outputs/runs/<run> exports/<name>-a --level coarse_a --step 500
    mltrain-sample exports/<name> --prompt "The state of the Union" --temperature 0 --max-new-tokens 40
    mltrain-sample outputs/runs/<run> --prompt "..."                 # mltrain's own model

Two console scripts beside ``mltrain`` and ``mltrain-compare``, not ``mltrain export``:
``mltrain`` is a Hydra application whose every argument is a config override, so a
subcommand would have to be parsed around Hydra. Bad input is one line
``mltrain-export: error: ...`` (exit status 2) and nothing is written: the export is built
and cross-checked in a temporary directory beside OUT_DIR, renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from mltrain.errors import MLTrainError
from mltrain.export import check as C
from mltrain.export import hf
from mltrain.export.source import ExportError, open_run
from mltrain.export.tokenizer import hf_tokenizer

INFO = "mltrain_export.json"
# An export is refused when transformers and mltrain differ by more than fp32 rounding: the
# validation loss by more than LOSS_TOLERANCE (nats/token), or a logit of the first chunk by
# more than LOGIT_TOLERANCE x max(1, max |logit|). A correct mapping differs by a few hundred
# unit roundoffs at most (tests/export/test_export.py: 2.4e-6 on logits of size ~10, the losses
# equal to 1e-7); a wrong h, head or orientation moves the logits by 1e-3 or more even in a
# barely trained model, whose loss may move by as little as 2e-5.
LOSS_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-4


def _quiet() -> None:
    """transformers' progress bars and notices off: a command prints its own result."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _fail(prog: str, err: MLTrainError) -> None:
    print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(err.exit_code)


def check_out_dir(out: Path, run_dir: Path, force: bool) -> None:
    """Refuse an OUT_DIR that is a file, exists and is not empty (unless ``force``), or would
    remove the run itself.

    Raises:
        ExportError: naming OUT_DIR and what to do.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT_DIR {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(
                f"OUT_DIR {out} exists and is not empty; give --force to replace it, or a new directory"
            )
        r, o = run_dir.resolve(), out.resolve()
        if o == r or o in r.parents or (o / "checkpoints").is_dir():
            raise ExportError(f"OUT_DIR {out} holds a run; --force replaces only an export")


def export(
    run_dir: Path,
    out: Path,
    step: int | None = None,
    level: str | None = None,
    force: bool = False,
    check: bool = True,
) -> dict:
    """Export ``level`` (default fine) of ``run_dir``'s checkpoint at ``step`` (default newest)
    to ``out``; returns what ``mltrain_export.json`` records (with the cross-check's losses
    unless ``check`` is False).

    Raises:
        ExportError: bad input (:func:`mltrain.export.source.open_run`, :func:`check_out_dir`),
            or an export whose loss or logits by transformers differ from mltrain's by more than
            :data:`LOSS_TOLERANCE`, :data:`LOGIT_TOLERANCE` (nothing is written then either).
    """
    import torch

    run_dir, out = Path(run_dir), Path(out)
    ex = open_run(run_dir, step, level)
    check_out_dir(out, run_dir, force)
    data = C.run_data(ex)
    windows = C.validation_windows(ex, data) if check else None
    tok = data.tokenizer
    model = hf.build_model(ex, tok.eot_id)
    info = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(ex.checkpoint.resolve()),
        "step": ex.step,
        "level": ex.level,
        "blocks": list(ex.blocks),
        "step_sizes": list(ex.steps),
        "architecture": type(model).__name__,
        "trust_remote_code": not ex.is_gpt2,
        "tokenizer": tok.name,
        "last_train_loss": dict(zip(("step", "train/loss"), ex.last_train_loss() or ())) or None,
    }
    made = [d for d in reversed(out.parents) if not d.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf.write_model(model, tmp)
        hf_tokenizer(tok, ex.block_size).save_pretrained(tmp)
        if check:
            with torch.no_grad():
                loaded = load_export(tmp)[0]
                result = C.cross_check(ex, loaded, windows)
            info["val_loss"] = result.as_dict()
            problem = result.problem(LOSS_TOLERANCE, LOGIT_TOLERANCE)
            if problem:
                raise ExportError(
                    f"the exported {ex.describe()} does not compute the run's model: {problem}; "
                    "the export is wrong; nothing written"
                )
        (tmp / INFO).write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(made if not out.exists() else []):
            d.rmdir()
    return info


def load_export(path: Path):
    """(model, tokenizer) of an export directory, offline; remote code is trusted only when it
    is the file this mltrain ships (byte for byte).

    Raises:
        ExportError: not an export directory, or remote code that is not mltrain's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ExportError(f"{path} is neither a run directory nor an export (no config.json)")
    remote = "auto_map" in json.loads(cfg_file.read_text())
    if remote:
        shipped = path / hf.REMOTE_CODE.name
        if not shipped.is_file() or shipped.read_bytes() != hf.REMOTE_CODE.read_bytes():
            raise ExportError(
                f"{path} asks for remote code that is not this mltrain's {hf.REMOTE_CODE.name}; "
                "load it with transformers yourself if you trust it"
            )
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, trust_remote_code=remote
    )
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=remote)
    return model.eval(), tok


def _summary(info: dict, out: Path) -> str:
    blocks = ",".join(map(str, info["blocks"]))
    hs = ",".join(f"{h:g}" for h in sorted(set(info["step_sizes"])))
    lines = [
        f"exported {info['level']} (blocks {blocks}; h={hs}) of step {info['step']} as "
        f"{info['architecture']} to {out}"
        + (" (load with trust_remote_code=True)" if info["trust_remote_code"] else "")
    ]
    v = info.get("val_loss")
    if v:
        logged = f"{v['logged']:.6f}" if v["logged"] is not None else ""
        if v["logged"] is None:
            last = info.get("last_train_loss")
            logged = "not logged for this level" + (
                f" (its last train/loss, on a training batch at step {last['step']}: "
                f"{last['train/loss']:.6f})"
                if last
                else ""
            )
        lines.append(
            f"validation loss ({v['validation']['tokens']} tokens): transformers "
            f"{v['transformers']:.6f}, mltrain {v['mltrain']:.6f}, the run's val/loss {logged}; "
            f"max |Δ logits| {v['max_abs_logit_diff']:.2e}"
        )
    return "\n".join(lines)


def export_main(argv: Sequence[str] | None = None) -> None:
    """The ``mltrain-export`` command."""
    prog = "mltrain-export"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Write a run's model as a Hugging Face transformers directory "
        "(AutoModelForCausalLM + AutoTokenizer, offline): the fine model as GPT2LMHeadModel, "
        "a coarse level (--level) as GPT-2 when its steps are h = 1, else with shipped "
        "remote code (trust_remote_code=True). Cross-checks the loss on the run's validation "
        "windows (docs/operations.md#export-and-sample).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--step", type=int, help="the checkpoint's step (default: the newest)")
    p.add_argument("--level", help="a level of the run's hierarchy (default: fine)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-check", action="store_true", help="skip the validation-loss cross-check")
    args = p.parse_args(argv)
    _quiet()
    try:
        info = export(
            args.run_dir, args.out_dir, args.step, args.level, args.force, not args.no_check
        )
    except MLTrainError as e:
        _fail(prog, e)
    print(_summary(info, args.out_dir))


def sample_main(argv: Sequence[str] | None = None) -> None:
    """The ``mltrain-sample`` command."""
    from mltrain.export import sample as S

    prog = "mltrain-sample"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Continue a prompt with an export (transformers' generate) or a run "
        "(mltrain's own model); the same text by both at --temperature 0.",
    )
    p.add_argument("source", type=Path, metavar="RUN_DIR_OR_EXPORT")
    p.add_argument("--prompt", default="", help="text to continue (default: empty)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 100, or what fits")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=200, help="0: no cut (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, help="a run directory's checkpoint step")
    p.add_argument("--level", help="a run directory's level (default: fine)")
    args = p.parse_args(argv)
    _quiet()
    try:
        if args.temperature < 0 or args.top_k < 0:
            raise ExportError("--temperature and --top-k must be >= 0")
        text = sample_text(args, S)
    except MLTrainError as e:
        _fail(prog, e)
    print(text)


def sample_text(args, S) -> str:
    """The prompt and its continuation (module :mod:`mltrain.export.sample`)."""
    src = Path(args.source)
    opts = (args.temperature, args.top_k, args.seed)
    if (src / "checkpoints").is_dir():
        ex = open_run(src, args.step, args.level)
        tok = C.run_data(ex).tokenizer
        ids = [tok.eot_id, *tok.encode(args.prompt)]
        model, path = C.own_model(ex)
        n = _max_new(args.max_new_tokens, len(ids), model.block_size)
        out = S.generate_own(model, path, ids, n, tok.eot_id, *opts)
        return tok.decode(out[1:])
    if args.step is not None or args.level is not None:
        raise ExportError(f"--step and --level choose from a run directory; {src} is an export")
    model, tok = load_export(src)
    ids = [tok.eos_token_id, *tok(args.prompt, add_special_tokens=False)["input_ids"]]
    n = _max_new(args.max_new_tokens, len(ids), int(model.config.n_positions))
    out = S.generate_hf(model, ids, n, *opts)
    return tok.decode(out[1:])


def _max_new(given: int | None, prompt: int, context: int) -> int:
    return given if given is not None else max(1, min(100, context - prompt))
