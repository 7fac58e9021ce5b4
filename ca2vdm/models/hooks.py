"""Hooks: how inference-time caches wrap a module's computation without the module knowing them.

A module that offers hooks owns a :class:`HookRegistry` and routes its forward through it. Hooks are attached by
name and chained in the order they were attached (the first attached is the outermost): each hook's
:meth:`ModelHook.forward` gets the next callable in the chain and the call's arguments, and decides whether and how
to call it (the last callable is the module's own computation). A registry with no hooks costs one call. After the
hooks of diffusers (``ModelHook``, ``HookRegistry``); no forward is monkey-patched and no state lives on a class.

A model's block stack passes its hooks one :class:`~ca2vdm.models.base.StackCall` (the interface a step-caching policy
reads: the tokens, the frames being denoised, the first block's modulated input); each attention module passes its
own arguments through.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any


class ModelHook:
    """Wraps one call of a module. Subclasses override :meth:`forward` and, if they keep state, :meth:`reset`."""

    def forward(self, call: Callable[..., Any], *args: Any) -> Any:
        """The module's output for ``args``: by default the next in the chain, ``call(*args)``."""
        return call(*args)

    def reset(self) -> None:
        """Forget whatever the hook kept (a new video)."""


class HookRegistry:
    """The hooks of one module, by name, in the order they were attached."""

    def __init__(self) -> None:
        self._hooks: dict[str, ModelHook] = {}

    def __call__(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run ``call(*args)`` through every hook, the first attached outermost."""
        if not self._hooks:
            return call(*args)
        for hook in reversed(self._hooks.values()):
            call = partial(hook.forward, call)
        return call(*args)

    def attach(self, name: str, hook: ModelHook) -> None:
        """Add ``hook`` as the innermost; ValueError if ``name`` is taken."""
        if name in self._hooks:
            raise ValueError(f"a hook named {name!r} is already attached; detach it first")
        self._hooks[name] = hook

    def detach(self, name: str) -> ModelHook:
        """Remove and return the hook ``name``; KeyError if there is none."""
        return self._hooks.pop(name)

    @contextlib.contextmanager
    def attached(self, name: str, hook: ModelHook) -> Iterator[ModelHook]:
        """``hook`` attached for the scope of a ``with`` block, detached on exit whatever happens."""
        self.attach(name, hook)
        try:
            yield hook
        finally:
            self.detach(name)

    def get(self, name: str) -> ModelHook | None:
        return self._hooks.get(name)

    def reset(self) -> None:
        """Reset every attached hook."""
        for hook in self._hooks.values():
            hook.reset()

    def __contains__(self, name: str) -> bool:
        return name in self._hooks

    def __len__(self) -> int:
        return len(self._hooks)

    @property
    def names(self) -> list[str]:
        """The attached hooks' names, outermost first."""
        return list(self._hooks)
