"""torch's Adam step without its bookkeeping: the same kernel, driven from tensors.

``torch.optim.Adam.step()`` sets up its state lazily, reads ``found_inf`` only from attributes
a GradScaler sets, and wraps every call in profiler ops. The network methods call its kernel
directly instead: the state is made once (:func:`init_adam_state`), a backtracked step is
skipped on the device through the fused kernel's ``found_inf`` (no host read), and the grouped
network steps each run through views of its tensors (:func:`adam_kernel`). The optimiser
object stays the keeper of the state and the learning rate, so checkpoints keep torch's format.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adam import adam as functional_adam


def init_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter of ``optimizer`` (a torch Adam) its state now — step 0 and zero
    moments, as Adam's first step would make them — so that steps need no lazy set-up and its
    tensors keep their storage (a captured graph replays on them)."""
    for group in optimizer.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state[param]
            if state:
                continue
            step_device = param.device if on_device else torch.device("cpu")
            state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def adam_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
              grads: list[torch.Tensor], skip: torch.Tensor | None = None) -> None:
    """One Adam step of ``params`` (those of ``optimizer``'s one parameter group, or views in
    their order) with ``grads``, from ``optimizer``'s state (:func:`adam_kernel`)."""
    group = optimizer.param_groups[0]
    states = [optimizer.state[param] for param in group["params"]]
    adam_kernel(group, params, grads, [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states], [state["step"] for state in states],
                skip)


def adam_kernel(group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
                moments: list[torch.Tensor], squares: list[torch.Tensor],
                steps: list[torch.Tensor], skip: torch.Tensor | None = None) -> None:
    """torch's Adam update of ``params`` with ``grads``, ``moments``, ``squares`` (the first
    and second moments) and ``steps`` (one count per parameter, or one for all), with the
    hyper-parameters of ``group`` (a torch Adam's parameter group).

    Fused groups: the fused kernel, with ``skip`` (a bool tensor: True leaves everything, the
    step count included, as it was) as its ``found_inf`` — nothing read back. Otherwise torch's
    single-tensor Adam, ``skip`` then read on the host. The arithmetic is ``optimizer.step()``'s
    (tests/test_engine.py compares the two bit for bit). A gradient laid out unlike its
    parameter is copied into the parameter's layout first (the fused kernel walks memory)."""
    beta1, beta2 = group["betas"]
    grads = [grad if grad.stride() == param.stride() else torch.empty_like(param).copy_(grad)
             for param, grad in zip(params, grads, strict=True)]
    found = None if skip is None else skip.to(torch.float32)
    with torch.no_grad():
        if not group.get("fused"):
            if found is not None and bool(found):
                return
            counts = steps if len(steps) == len(params) else [s.clone() for s in
                                                              steps * len(params)]
            functional_adam(params, grads, moments, squares, [], counts, foreach=False,
                            capturable=bool(group.get("capturable")), lr=group["lr"],
                            beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                            eps=group["eps"], amsgrad=False, maximize=False)
            if counts is not steps:
                steps[0].copy_(counts[0])
            return
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, moments, squares, [],
                           steps if len(steps) == len(params) else steps * len(params),
                           lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                           maximize=False, grad_scale=None, found_inf=found)
        if found is not None:  # as torch.optim.Adam under a GradScaler: a tensor op, no read
            torch._foreach_sub_(steps, [found.to(steps[0].device)] * len(steps))
