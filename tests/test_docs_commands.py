"""Every ``mltrain`` command printed in README.md and docs/*.md composes, or is refused as printed.

A command is found in a code block (a fenced block, or a line indented by four or more spaces;
a line ending in ``\\`` continues on the next) or inline in backticks. It is composed the way
``mltrain`` composes it: the same ``conf/``, Hydra's own override parser (a ``-m`` sweep's
overrides, and the sweep parameters of its preset, are taken at their first value), the
``sort(range(...))`` check of the CLI, :func:`mltrain.config.validate`, and the run's plan
(:func:`mltrain.plan.plan.build_plan`, which builds the hierarchy and sizes the stages). Nothing
is trained and no file is written.

Placeholders such as ``<budget>`` are replaced by the values in :data:`PLACEHOLDERS`; an unknown
placeholder fails the test, so a new one is added there on purpose.

A command meant to be refused is printed with its error on the next line of its code block::

    $ mltrain coarsening.vcycle.delta=1.5
    mltrain: error: coarsening.vcycle.delta=1.5 is not allowed: must be in [0, 1]

and is asserted refused with that message (a message ending in ``...`` is a prefix), or carries
the comment ``# refused`` (refused, any message). A failure names the file and line.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

import mltrain.job  # noqa: F401  (registers every scheme, as a run does)
from tests.helpers import PLUGIN_PRESETS, has_module

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Placeholders of printed commands and the value each is composed with.
PLACEHOLDERS = {
    "budget": "19971597926400",
    "FLOPs": "19971597926400",
    "b": "0.5",
    "best": "2e-3",
    "lr": "2e-3",
    "same overrides": "",
    "overrides": "",
    "run": "run0",
    "sweep": "sweep0",
    "p": "partition0",
    "path": "outputs/runs/run0/checkpoints/ckpt_000000500.pt",
    "dir": "outputs/runs/run0",
}
# Shell variables that printed commands use, as set in the text before them.
SHELL_VARS = {"B": "19971597926400"}  # scripts/flops_budget.py --total experiment=paper_small

# Group options that need an optional Hydra plugin (`make install-extras`) and its module.
PLUGINS = {
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
    **{f"experiment={k}": v for k, v in PLUGIN_PRESETS.items()},
}

# Flags of Hydra's app that take no override, and those that take one word after them.
FLAGS = {"--help", "-h", "--hydra-help", "--version", "--resolve"}
FLAGS_WITH_VALUE = {"--cfg", "-c", "--info", "--package", "-p"}

# The coarsening keys of the sectioned config (hierarchy, V-cycle, corrections, stages, patch,
# random sub-paths): a command using them composes once the schema has these sections.


@dataclasses.dataclass
class Command:
    file: str
    line: int
    text: str
    error: str | None = None  # the printed error of a command meant to be refused
    refused: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _is_command(text: str) -> bool:
    text = re.sub(r"^\$\s+", "", text.strip())
    words = text.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
        words.pop(0)
    if not words:
        return False
    if words[0] in ("mltrain", ".venv/bin/mltrain") or words[0].endswith("/bin/mltrain"):
        return True
    return words[0] == "torchrun" and ("mltrain.cli" in text or "$(which mltrain)" in text)


def extract(path: Path) -> list[Command]:
    """The ``mltrain`` commands printed in the Markdown file ``path``."""
    name = str(path.relative_to(ROOT))
    lines = path.read_text().splitlines()
    found: list[Command] = []
    fenced, i = False, 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        if fenced or line.startswith("    "):
            start, text = i, line.strip()
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            if _is_command(text):
                cmd = Command(name, start + 1, text, refused=bool(re.search(r"#\s*refused", text)))
                nxt = next((ln.strip() for ln in lines[i + 1 :] if ln.strip()), "")
                if nxt.startswith("mltrain: error:"):
                    cmd.error, cmd.refused = nxt[len("mltrain: error:") :].strip(), True
                found.append(cmd)
            i += 1
            continue
        for m in re.finditer(r"`([^`]+)`", line):
            span = m.group(1)
            if _is_command(span) and len(span.split()) > 1:
                refused = bool(re.search(r"#\s*refused", span))
                found.append(Command(name, i + 1, span, refused=refused))
        i += 1
    return found


def arguments(cmd: Command) -> list[str]:
    """The arguments the command passes to mltrain's Hydra app (placeholders filled)."""

    def fill(m: re.Match) -> str:
        key = m.group(1)
        if key not in PLACEHOLDERS:
            pytest.fail(f"{cmd}: unknown placeholder <{key}>; add it to PLACEHOLDERS")
        return PLACEHOLDERS[key]

    text = re.sub(r"^\$\s+", "", cmd.text)
    text = text.replace("$(which mltrain)", "mltrain")
    text = re.sub(r"<([^<>]+)>", fill, text)

    def var(m: re.Match) -> str:
        if m.group(1) not in SHELL_VARS:
            pytest.fail(f"{cmd}: unknown shell variable ${m.group(1)}; add it to SHELL_VARS")
        return SHELL_VARS[m.group(1)]

    text = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", var, text)
    words = shlex.split(text, comments=True)
    for j, w in enumerate(words):
        if w == "mltrain" or w.endswith("/bin/mltrain") or w == "mltrain.cli":
            return words[j + 1 :]
    pytest.fail(f"{cmd}: no mltrain program found")


def overrides_of(args: list[str]) -> tuple[list[str], bool]:
    """The overrides of a command line and whether it is a multirun (``-m``)."""
    out, multirun, k = [], False, 0
    while k < len(args):
        a = args[k]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in FLAGS_WITH_VALUE:
            k += 1
        elif a not in FLAGS:
            assert not a.startswith("-"), f"unknown flag {a}"
            out.append(a)
        k += 1
    return out, multirun


def first_values(overrides: list[str], multirun: bool) -> list[str]:
    """Each sweep override at its first value, with Hydra's parser (as the basic sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for text, o in zip(overrides, parser.parse_overrides(overrides)):
        if multirun and o.is_sweep_override():
            out.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def hydra_compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mltrain.config import config_dir, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        return compose("config", overrides=overrides, return_hydra_config=True)


def vocab_of(cfg) -> int | None:
    """The model's embedding rows without building the tokenizer (GPT-2: 50257 entries)."""
    if cfg.model.vocab_size is not None:
        return int(cfg.model.vocab_size)
    tok = str(cfg.data.tokenizer)
    return {"bpe": int(cfg.data.bpe_vocab_size), "gpt2": 50257}.get(tok)


def compose_command(cmd: Command) -> None:
    """Compose, validate and plan ``cmd`` as mltrain would; raises what mltrain would report."""
    from omegaconf import OmegaConf, open_dict

    from mltrain.config import typed, validate
    from mltrain.config.arguments import check_range_sweeps
    from mltrain.plan.plan import build_plan

    args = arguments(cmd)
    check_range_sweeps(args)
    overrides, multirun = overrides_of(args)
    composed = first_values(overrides, multirun)
    cfg = hydra_compose(composed)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") if multirun else None
    if params:  # the preset's own sweep, at its first values (the command line wins)
        given = {o.split("=", 1)[0].lstrip("+~") for o in composed}
        extra = [f"{k}={v}" for k, v in params.items() if k not in given]
        cfg = hydra_compose(composed + first_values(extra, True))
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    build_plan(typed(cfg), vocab_of(cfg))


COMMANDS = [c for path in DOCS for c in extract(path)]


def test_the_docs_print_commands():
    """The extraction finds the README's tour (known commands, counted by hand)."""
    readme = [c for c in COMMANDS if c.file == "README.md"]
    assert len(readme) >= 8
    assert any(c.text.split("#")[0].strip() == "mltrain coarsening=none" for c in readme)
    assert any(c.refused for c in COMMANDS)


def test_extraction_reads_blocks_continuations_inline_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    doc = tmp_path / "x.md"
    doc.write_text(
        "Run `mltrain coarsening=none` or `mltrain-compare DIR`, not `mltrain`.\n"
        "\n"
        "    mltrain -m a=1,2 \\\n"
        "        b=3      # a sweep\n"
        "    $ mltrain c=4\n"
        "    mltrain: error: c=4 is not allowed\n"
        "\n"
        "```\n"
        "OMP_NUM_THREADS=1 mltrain d=5\n"
        "```\n"
        "    torchrun --standalone -m mltrain.cli e=6  # refused\n"
    )
    got = [(c.line, c.text, c.error, c.refused) for c in extract(doc)]
    assert got == [
        (1, "mltrain coarsening=none", None, False),
        (3, "mltrain -m a=1,2 b=3      # a sweep", None, False),
        (5, "$ mltrain c=4", "c=4 is not allowed", True),
        (9, "OMP_NUM_THREADS=1 mltrain d=5", None, False),
        (11, "torchrun --standalone -m mltrain.cli e=6  # refused", None, True),
    ]
    assert arguments(Command("x.md", 3, got[1][1])) == ["-m", "a=1,2", "b=3"]
    assert first_values(["a=1,2", "b=[0.5,0.5],[0.9,0.1]", "c=3"], True) == [
        "a=1",
        "b=[0.5,0.5]",
        "c=3",
    ]


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{c.file}:{c.line}" for c in COMMANDS])
def test_printed_command_composes_or_is_refused_as_printed(cmd):
    from mltrain.config.hydra_errors import one_line
    from mltrain.errors import MLTrainError

    for option, module in PLUGINS.items():
        if option in cmd.text and not has_module(module):
            pytest.skip(f"{cmd}: needs the optional plugin {module} (make install-extras)")
    try:
        compose_command(cmd)
    except (MLTrainError, Exception) as e:  # what mltrain reports as `mltrain: error: ...`
        if not cmd.refused:
            raise AssertionError(f"{cmd}\n  is refused: {one_line(e)}") from e
        said = str(e) if isinstance(e, MLTrainError) else one_line(e)
        if cmd.error is not None:
            want = " ".join(cmd.error.split())
            said = " ".join(said.split())
            if want.endswith(("...", "…")):
                assert said.startswith(want.rstrip(".…").rstrip()), f"{cmd}\n  says: {said}"
            else:
                assert said == want, f"{cmd}\n  says: {said}"
        return
    assert not cmd.refused, f"{cmd}\n  is printed as refused but composes"
