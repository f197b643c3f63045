"""Hydra glue: the schemas in Hydra's ConfigStore, the ``conf/`` directory, sweep job names,
composing a config outside a run, and user paths made absolute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mltrain.config.keys import job_name_excluded_keys
from mltrain.config.schema import AdamWConfig, MLTrainConfig, SGDConfig


# --------------------------------------------------------------------------- registration
def _sweep_subdir(num: Any, override_dirname: str) -> str:
    """A sweep job's directory name: ``<num>_<overrides>``, one level (``/`` and ``\\`` become
    ``_``) and at most 120 characters (longer names end with a hash of the full overrides,
    which stay in the job's ``.hydra/overrides.yaml``)."""
    import hashlib

    name = f"{num}_{override_dirname}" if override_dirname else str(num)
    name = name.replace("/", "_").replace("\\", "_").replace("\0", "_")
    if len(name) > 120:
        digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:10]
        name = f"{name[:100]}..{digest}"
    return name


def register_configs() -> None:
    """Register the schemas that the YAML files of ``conf/`` extend, and the resolvers the
    Hydra settings use (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="mltrain_schema", node=MLTrainConfig)  # types every group but the optimizer
    # the optimizers differ in their fields: each option extends its own schema, stored at the
    # top level (as mltrain_schema) so that `mltrain --help` lists no internal group
    cs.store(name="sgd_schema", node=SGDConfig)
    cs.store(name="adamw_schema", node=AdamWConfig)
    if not OmegaConf.has_resolver("mltrain_excluded_keys"):
        OmegaConf.register_new_resolver("mltrain_excluded_keys", job_name_excluded_keys)
        OmegaConf.register_new_resolver("mltrain_job_subdir", _sweep_subdir)


def config_dir() -> Path:
    """The directory holding ``config.yaml``: ``mltrain/conf`` in a wheel install, else the
    repository's top-level ``conf/`` (editable install or source checkout).

    Raises:
        FileNotFoundError: when neither exists (a broken installation).
    """
    pkg = Path(__file__).resolve().parent.parent
    for candidate in (pkg / "conf", pkg.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"mltrain: no conf/config.yaml next to {pkg}; reinstall mltrain")


# --------------------------------------------------------------------------- validation


def absolute_paths(cfg: DictConfig, base: Path) -> None:
    """Make every user-given path of ``cfg`` absolute against ``base`` (the directory the
    command was launched from), in place: ``data.paths``, ``data.cache_dir``, a
    ``train.resume`` checkpoint path, and ``data.tokenizer=hf:<dir>`` when ``<dir>`` exists
    there. ``~`` is expanded. Hub names and other settings are left as they are."""

    def fix(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q))

    d, t = cfg.data, cfg.train
    if d.paths:
        d.paths = [fix(p) for p in d.paths]
    if d.cache_dir:
        d.cache_dir = fix(d.cache_dir)
    if t.resume and t.resume != "auto" and t.resume.strip():
        t.resume = fix(t.resume)
    if isinstance(d.tokenizer, str) and d.tokenizer.startswith("hf:"):
        name = d.tokenizer[3:]
        if name and (name.startswith(("~", ".", "/")) or (base / name).exists()):
            d.tokenizer = "hf:" + fix(name)


def compose(overrides: list[str] | tuple[str, ...] = (), hydra: bool = False) -> DictConfig:
    """The config ``mltrain <overrides>`` would run, composed with Hydra's compose API (for
    scripts, notebooks and tests; no run directory is created); with ``hydra``, Hydra's own
    section too (``hydra.runtime.choices``: the option chosen in each group).

    Raises:
        hydra.errors.HydraException / omegaconf errors: an unknown key, option or wrong type.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(
        version_base="1.3", config_dir=str(config_dir()), job_name="mltrain"
    ):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)
