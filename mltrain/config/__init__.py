"""Configuration: the typed schema (:mod:`.schema`), inert and renamed keys (:mod:`.keys`),
validation (:mod:`.validate`), the Hydra glue (:mod:`.compose`), the command line's checks
(:mod:`.arguments`) and Hydra's errors as one line (:mod:`.hydra_errors`).

The package's names are re-exported here: ``from mltrain.config import ModelConfig, validate``.
"""

from mltrain.config.compose import absolute_paths, compose, config_dir, register_configs
from mltrain.config.keys import (
    RENAMED,
    REPLACED,
    flatten,
    inert_keys,
    is_inert,
    job_name_excluded_keys,
    unread,
    upgrade,
)
from mltrain.config.schema import *  # noqa: F403
from mltrain.config.schema import OPTIMIZERS, SECTIONS
from mltrain.config.validate import typed, validate

__all__ = [
    "OPTIMIZERS",
    "RENAMED",
    "REPLACED",
    "SECTIONS",
    "absolute_paths",
    "compose",
    "config_dir",
    "flatten",
    "inert_keys",
    "is_inert",
    "job_name_excluded_keys",
    "register_configs",
    "typed",
    "unread",
    "upgrade",
    "validate",
]
