"""Registries: a name -> implementation table whose names are also the allowed config values.

Tokenizers, corpora, hierarchies, LR schedules and optimizer-state policies each keep one
:class:`Registry` (declared in :mod:`mltrain.config.registries`, filled by the owner); the
config schema names it (``choices=REGISTRY``), so the values a
user may type, the error message that lists them, and the code that runs them cannot disagree.
Adding an option is one decorated function or class in the module that owns the concept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mltrain.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named implementations of one concept.

    Args:
        setting: the config key whose value selects an entry (used in error messages).
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self._entries: dict[str, T] = {}
        self._spellings: dict[str, str] = {}

    def register(self, name: str, spelling: str | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (``spelling`` is how the
        error message shows it, e.g. ``hf:<name or path>``)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.setting}: {name!r} registered twice")
            self._entries[name] = obj
            self._spellings[name] = spelling or name
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry ``name``.

        Raises:
            ConfigError: no such entry (the message lists the allowed names).
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.setting}={name!r} is not allowed: choose one of {', '.join(self.spellings())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def spellings(self) -> list[str]:
        return [self._spellings[n] for n in self._entries]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
