"""torch.compile of the UNet, with a fallback to eager when compiling fails.

Compiling happens at the first call of each new input shape, deep inside a run, and fails for
reasons a user cannot see from there (no C++ compiler or Triton, an unsupported GPU, a graph
break torch cannot handle). So the compiled forward is tried first and, when it raises but the
eager forward succeeds on the same inputs, the UNet stays eager for good and says why once
(``compile_problem``, and the model's warnings). A real error (bad shapes) raises from eager too.
"""

from __future__ import annotations

import logging

import torch

BACKENDS = ("inductor", "eager", "aot_eager", "cudagraphs")
log = logging.getLogger("longvid")


def compile_unet(unet: torch.nn.Module, backend: str = "inductor", mode: str | None = None,
                 on_problem=None) -> torch.nn.Module:
    """Compile ``unet``'s forward in place (state_dict names are unchanged, unlike
    ``torch.compile(module)``). ``on_problem(message)`` hears of a fallback. Returns ``unet``."""
    if not callable(backend) and backend not in BACKENDS:
        raise ValueError(f"compile backend must be one of {BACKENDS}; found {backend!r}")
    if getattr(unet, "compiled_with", None) is not None:
        return unet  # already compiled: compiling the wrapper again would stack them
    eager = unet.forward
    compiled = torch.compile(eager, backend=backend, mode=mode)

    def forward(*args, **kwargs):
        if unet.compile_problem is None:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - decided below: eager tells a compile failure from a bug
                failure = exc
            out = eager(*args, **kwargs)  # raises the real error if the inputs are bad
            unet.compile_problem = (f"torch.compile ({backend if isinstance(backend, str) else 'custom'}) failed, "
                                    f"running the UNet uncompiled: {_root_cause(failure)}")
            log.warning("LongVid: %s", unet.compile_problem)
            if on_problem is not None:
                on_problem(unet.compile_problem)
            return out
        return eager(*args, **kwargs)

    unet.forward = forward
    unet.compiled_with = backend
    unet.compile_problem = None
    return unet


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (torch wraps backend errors in its own)."""
    while True:
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None or inner is exc:
            break
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


__all__ = ["BACKENDS", "compile_unet"]
