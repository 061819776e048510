"""Decode backends by name, for the command line's ``--backend``.

``sw`` never imports ``cosim`` (docs/architecture.md), so the software cannot
name the co-simulation itself: each backend registers here instead. The fast
model registers ``"model"`` below; importing ``cosim`` registers ``"rtl"``.
The command line imports ``cosim`` and looks the name up with :func:`get`.
A new backend is a :class:`Backend` passed to :func:`register` by the
package that implements it.
"""

import asyncio
from dataclasses import dataclass
from typing import Callable

from sw.errors import OpenRDUError


class BackendError(OpenRDUError, ValueError):
    """No backend of that name is registered (its package was not imported)."""


@dataclass(frozen=True)
class Backend:
    """A way to run compiled models.

    Attributes
    ----------
    name : str
        What ``--backend`` calls it.
    run : callable
        ``run(models, paths, request, progress) -> list of dict``: generate
        with each compiled model (``paths``: where each is saved), in turn
        or several at once (the RTL's simulations);
        ``request`` holds the keyword arguments of
        :func:`sw.runtime.decode.generate` and ``prompt_ids`` (an
        ``orchestration`` list holds one per model: :func:`per_model`);
        ``progress(index, done, total)`` reports model ``index``'s steps,
        from any thread.
        Returns ``generate``'s result for each model.
    check_target : callable
        ``check_target(target)`` raises when the backend cannot run models
        compiled for ``target``; checked before any long build.
    notice : str
        Printed (with ``{modes}`` filled in) before a run with a progress bar,
        for backends slow to start; empty for none.
    """

    name: str
    run: Callable
    check_target: Callable = lambda target: None
    notice: str = ""


BACKENDS = {}


def register(backend):
    """Offer ``backend`` under its name; a second registration of the name replaces the first."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register takes a Backend, not {backend!r}")
    BACKENDS[backend.name] = backend
    return backend


def get(name):
    """The backend registered as ``name``; :class:`BackendError` when there is none."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendError(f"no backend {name!r} is registered (registered: {', '.join(sorted(BACKENDS))}; "
                           f"'rtl' comes with importing cosim)") from None


def _run_model(models, paths, request, progress):
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    kwargs = {k: v for k, v in request.items() if k != "prompt_ids"}
    return [asyncio.run(generate(ModelDevice(model.target), model, request["prompt_ids"],
                                 progress=lambda done, total, index=index: progress(index, done, total),
                                 **per_model(kwargs, index)))
            for index, model in enumerate(models)]


def per_model(kwargs, index):
    """``generate``'s keyword arguments for model ``index``: an ``orchestration`` given as a list holds
    one per model."""
    orchestration = kwargs.get("orchestration")
    if isinstance(orchestration, (list, tuple)):
        return dict(kwargs, orchestration=orchestration[index])
    return kwargs


register(Backend("model", run=_run_model))
