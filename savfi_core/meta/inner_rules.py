"""Inner-loop update rules written functionally: ``(params, grads, state, rates) -> (params, state)``.

Nothing is updated in place, so every new parameter is a differentiable function of the old one,
of the gradient (second order when the gradient was built with ``create_graph=True``) and of the
learning rate (so learned rates receive outer gradients). The state is a fresh dict per task
(``initial_state``), as the SAVFI code resets its inner optimizer for every task.

For a parameter ``p`` with gradient ``g`` at inner step ``s`` (1-based) and rate ``lr`` (a float,
a scalar tensor, or a tensor of ``p``'s shape for Meta-SGD):

* sgd:    ``p <- p - lr * g``
* adam:   ``m <- b1 m + (1-b1) g``; ``v <- b2 v + (1-b2) g^2``;
          ``p <- p - lr / (1-b1^s) * m / (sqrt(v) / sqrt(1-b2^s) + eps)``
* adamax: ``m <- b1 m + (1-b1) g``; ``u <- max(b2 u, |g| + eps)``; ``p <- p - lr / (1-b1^s) * m / u``

These are the formulas of the SAVFI code's ``LSLRGradientDescentLearningRule`` (b1 = 0.9,
b2 = 0.99, eps = 1e-8 there). One deliberate difference: that code's Adamax never stores the new
``u`` (it rebinds a local name), so from its second step on it uses ``|g| + eps`` alone; here
``u`` is carried as Adamax defines it. With one inner step (the paper's setting) both agree.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

Params = dict[str, Tensor]


def initial_state(rule: str, params: Params) -> dict:
    """Fresh per-task state: step counter and zero moments shaped like each parameter."""
    if rule == "sgd":
        return {"step": 0}
    if rule in ("adam", "adamax"):
        second = "exp_avg_sq" if rule == "adam" else "exp_inf"
        return {
            "step": 0,
            "exp_avg": {name: torch.zeros_like(value) for name, value in params.items()},
            second: {name: torch.zeros_like(value) for name, value in params.items()},
        }
    raise ValueError(f"unknown inner rule {rule!r}; choose sgd, adam or adamax")


def _safe_sqrt(value: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) derivative at 0.

    d sqrt(v)/dv is infinite at v = 0, and in second-order MAML it meets dv/dg = 0 for parameters
    whose gradient is exactly zero (dead ReLUs, unused branches): inf * 0 = NaN. The double
    ``where`` keeps the value exact and the derivative finite.
    """
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, torch.ones_like(value))), torch.zeros_like(value))


def _adam_first_order(params: Params, grads: Params, state: dict, rates: dict[str, Tensor | float],
                      beta1: float, beta2: float, eps: float, step: int, correction1: float) -> tuple[Params, dict]:
    """Adam where no gradient carries a graph (first order, test-time adaptation).

    Nothing needs a derivative through the moments then, so they are computed without autograd,
    in place on fresh tensors, and a step from zero moments skips the terms that are exactly
    zero; the moments of the first step (``(1-b1) g`` and ``(1-b2) g g``) need no zero state.
    Each value is computed by the same sequence of float operations as the differentiable
    formula in :func:`update` (sqrt of a non-negative value needs no guard without a
    derivative), so the result is bitwise the same; about half the passes over the parameters.
    Only the last subtraction (and the rate, when it is learned) is recorded by autograd: the
    new parameter is still a function of the old one and of the rate.
    """
    correction2 = math.sqrt(1.0 - beta2**step)
    names = list(params)
    gradients = [grads[name] for name in names]
    with torch.no_grad():
        exp_avg = torch._foreach_mul(gradients, 1.0 - beta1)
        scaled = torch._foreach_mul(gradients, 1.0 - beta2)
        exp_avg_sq = torch._foreach_mul(scaled, gradients)
        del scaled
        if step > 1:  # b * 0 + x is x exactly: the zero moments of a first step add nothing
            torch._foreach_add_(exp_avg, torch._foreach_mul([state["exp_avg"][name] for name in names], beta1))
            exp_avg_sq = torch._foreach_add(torch._foreach_mul([state["exp_avg_sq"][name] for name in names], beta2), exp_avg_sq)
        denominator = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denominator, correction2)
        torch._foreach_add_(denominator, eps)
    new_params = {}
    for index, name in enumerate(names):
        rate = rates[name]
        if isinstance(rate, Tensor) and rate.requires_grad:  # a learned rate receives its outer gradient
            change = (rate / correction1) * exp_avg[index] / denominator[index]
        else:
            with torch.no_grad():
                change = (rate / correction1) * exp_avg[index]
                change.div_(denominator[index])
        new_params[name] = params[name] - change
    return new_params, {"step": step, "exp_avg": dict(zip(names, exp_avg)), "exp_avg_sq": dict(zip(names, exp_avg_sq))}


def update(
    rule: str,
    params: Params,
    grads: Params,
    state: dict,
    rates: dict[str, Tensor | float],
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-8,
) -> tuple[Params, dict]:
    """One inner step of ``rule``; returns new parameter and state dicts (inputs untouched)."""
    step = state["step"] + 1
    if rule == "sgd":
        new_params = {name: value - rates[name] * grads[name] for name, value in params.items()}
        return new_params, {"step": step}
    beta1, beta2 = betas
    correction1 = 1.0 - beta1**step
    new_params, new_avg, new_second = {}, {}, {}
    if rule == "adam" and not any(grad.requires_grad for grad in grads.values()):
        return _adam_first_order(params, grads, state, rates, beta1, beta2, eps, step, correction1)
    if rule == "adam":
        correction2 = math.sqrt(1.0 - beta2**step)
        for name, value in params.items():
            grad = grads[name]
            exp_avg = beta1 * state["exp_avg"][name] + (1.0 - beta1) * grad
            exp_avg_sq = beta2 * state["exp_avg_sq"][name] + (1.0 - beta2) * grad * grad
            denominator = _safe_sqrt(exp_avg_sq) / correction2 + eps
            new_params[name] = value - (rates[name] / correction1) * exp_avg / denominator
            new_avg[name], new_second[name] = exp_avg, exp_avg_sq
        return new_params, {"step": step, "exp_avg": new_avg, "exp_avg_sq": new_second}
    if rule == "adamax":
        for name, value in params.items():
            grad = grads[name]
            exp_avg = beta1 * state["exp_avg"][name] + (1.0 - beta1) * grad
            exp_inf = torch.maximum(beta2 * state["exp_inf"][name], grad.abs() + eps)
            new_params[name] = value - (rates[name] / correction1) * exp_avg / exp_inf
            new_avg[name], new_second[name] = exp_avg, exp_inf
        return new_params, {"step": step, "exp_avg": new_avg, "exp_inf": new_second}
    raise ValueError(f"unknown inner rule {rule!r}; choose sgd, adam or adamax")
