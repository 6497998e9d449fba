"""Per-sample evaluation of the paper's protocols, as one pandas DataFrame.

The protocols (baseline, retrained, finetune, cycle, meta) are objects of
:mod:`savfi_core.study.protocols`; ``evaluate_protocols`` measures any list of them,
``evaluate`` builds them from a network or a MetaLearner.

Each row holds the PSNR/SSIM of the final prediction, the PSNR before and after adaptation for the
same weights (equal for the non-adapting protocols), and the wall time of adaptation.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import pandas as pd
from torch import nn

from savfi_core.meta.config import MetaConfig
from savfi_core.meta.learner import MetaLearner
from savfi_core.meta.tasks import can_adapt
from savfi_core.vocabulary import ADAPTING, PROTOCOLS

__all__ = ["ADAPTING", "PROTOCOLS", "evaluate", "evaluate_frame_average", "evaluate_protocols", "protocols_for"]


def protocols_for(model_or_learner: nn.Module | MetaLearner, protocols: Iterable[str], config: MetaConfig | None = None) -> list:
    """Protocol objects of a network or a MetaLearner (see ``evaluate`` for the rules)."""
    from savfi_core.study.protocols import EvaluationProtocol, cycle, finetune, meta, unadapted

    learner = model_or_learner if isinstance(model_or_learner, MetaLearner) else None
    model = learner.model if learner is not None else model_or_learner
    unknown = [name for name in protocols if name not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; choose from {PROTOCOLS}")
    if "meta" in protocols and learner is None:
        raise ValueError("protocol 'meta' needs a MetaLearner, got a plain network")
    finetune_config = config if config is not None else (learner.config if learner is not None else MetaConfig())
    built = []
    for name in protocols:
        if name == "meta":
            built.append(meta(learner))
        elif name == "finetune":
            built.append(finetune(model, finetune_config))
        elif name == "cycle":
            built.append(cycle(model, finetune_config))
        elif learner is not None:  # unadapted predictions of a learner go through it (MAML++ BatchNorm copy 0)
            built.append(EvaluationProtocol(name, learner))
        else:
            built.append(unadapted(name, model))
    return built


def evaluate(
    model_or_learner: nn.Module | MetaLearner,
    dataset: Iterable,
    protocols: Iterable[str] | None = None,
    *,
    config: MetaConfig | None = None,
    steps: int | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One row per (sample, protocol).

    model_or_learner: a network (protocols baseline/retrained/finetune) or a MetaLearner (all four;
        the non-meta protocols then use its network's current weights).
    dataset: any iterable of single ``Sample`` objects (e.g. ``open_dataset(...)``).
    protocols: default ``('meta',)`` for a MetaLearner and ``('baseline', 'finetune')`` for a network.
    config: settings of the ``finetune`` and ``cycle`` inner loops (default: the learner's config, or
        MetaConfig()); ``cycle`` replaces its support loss with the cycle loss.
    steps: inner steps at test time (default: the config's ``inner_steps``).
    limit: evaluate only the first ``limit`` samples.

    Columns: sequence, protocol, algorithm ('none' for baseline/retrained/finetune/cycle), inner_rule,
    inner_steps, inner_lr, psnr, ssim, psnr_before, psnr_after, adapt_seconds.
    The network is put in eval mode during evaluation and restored afterwards.
    """
    if protocols is None:
        protocols = ("meta",) if isinstance(model_or_learner, MetaLearner) else ("baseline", "finetune")
    return evaluate_protocols(protocols_for(model_or_learner, tuple(protocols), config), dataset, steps=steps, limit=limit)


def evaluate_protocols(protocols: Sequence, dataset: Iterable, *, steps: int | Sequence[int] | None = None,
                       limit: int | None = None, on_prediction: Callable | None = None) -> pd.DataFrame:
    """One row per (sample, protocol) for protocol objects (``savfi_core.study.protocols``).

    steps: test-time inner steps of the adapting protocols: one count (None: each config's
        ``inner_steps``), or a sweep of counts, which gives one row per count and costs one inner
        loop of the largest count per sample (``MetaLearner.adapt_steps``). Rows are ordered by
        count as given, then by sample.
    on_prediction: called as ``on_prediction(index, protocol, inner_steps, prediction)`` with every
        measured prediction (clamped to [0, 1]; inner_steps 0 without adaptation), e.g. to save
        some of them as images without computing them twice.
    """
    from savfi_core.metrics import psnr as compute_psnr, ssim as compute_ssim

    models = {id(protocol.learner.model): protocol.learner.model for protocol in protocols}
    was_training = {key: model.training for key, model in models.items()}
    for model in models.values():
        model.eval()
    sweep = None if steps is None or isinstance(steps, int) else [int(count) for count in steps]
    rows = []
    try:
        for count, sample in enumerate(dataset):
            if limit is not None and count >= limit:
                break
            if not bool(sample.valid[sample.target_index]):
                raise ValueError(f"sample {sample.name!r} has no ground truth at target_index {sample.target_index}")
            target = sample.frames[sample.target_index]
            adaptable = can_adapt(sample)
            for protocol in protocols:
                if protocol.adapts and not adaptable:
                    raise ValueError(
                        f"protocol {protocol.name!r} needs frames at t-3, t-1, t+1, t+3; sample {sample.name!r} "
                        f"(valid {sample.valid.tolist()}, target_index {sample.target_index}) has not: "
                        f"evaluate it with protocols=('baseline',)"
                    )
                before = protocol.predict(sample).clamp(0, 1)
                psnr_before = compute_psnr(before, target)
                config = protocol.learner.config
                if not protocol.adapts:
                    outcomes = [(0, before, 0.0)]
                else:
                    counts = sweep if sweep is not None else [config.inner_steps if steps is None else steps]
                    outcomes = protocol.adapt_and_predict_steps(sample, counts)
                for order, (inner_steps, prediction, seconds) in enumerate(outcomes):
                    prediction = prediction.clamp(0, 1)
                    if on_prediction is not None:
                        on_prediction(count, protocol, inner_steps, prediction)
                    value = compute_psnr(prediction, target)
                    rows.append(
                        {
                            "sequence": sample.name,
                            "protocol": protocol.name,
                            "algorithm": protocol.algorithm,
                            "inner_rule": protocol.inner_rule,
                            "inner_steps": inner_steps,
                            # the starting value of the learned rates (maml++, metasgd); none without adaptation
                            "inner_lr": config.inner_lr if protocol.adapts else float("nan"),
                            "psnr": value,
                            "ssim": compute_ssim(prediction, target),
                            "psnr_before": psnr_before,
                            "psnr_after": value,
                            "adapt_seconds": seconds,
                            "_order": order,
                        }
                    )
    finally:
        for key, model in models.items():
            model.train(was_training[key])
    if not rows:
        return pd.DataFrame(rows)
    # count-major, as separate evaluations at each count would be concatenated
    return pd.DataFrame(rows).sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def evaluate_frame_average(dataset: Iterable, *, limit: int | None = None) -> pd.DataFrame:
    """The reference every network must beat: (frame(t-1) + frame(t+1)) / 2 against frame(t).

    Same columns as :func:`evaluate`, protocol ``'frame_average'``; it has no weights, so it is
    the same for every backbone and seed and tells whether a network learned motion at all.
    """
    from savfi_core.metrics import psnr as compute_psnr, ssim as compute_ssim

    rows = []
    for count, sample in enumerate(dataset):
        if limit is not None and count >= limit:
            break
        t = sample.target_index
        if not bool(sample.valid[t]):
            raise ValueError(f"sample {sample.name!r} has no ground truth at target_index {t}")
        prediction = (sample.frames[t - 1] + sample.frames[t + 1]) / 2
        value = compute_psnr(prediction, sample.frames[t])
        rows.append(
            {"sequence": sample.name, "protocol": "frame_average", "algorithm": "none", "inner_rule": "none", "inner_steps": 0,
             "inner_lr": float("nan"), "psnr": value, "ssim": compute_ssim(prediction, sample.frames[t]), "psnr_before": value, "psnr_after": value,
             "adapt_seconds": 0.0}
        )
    return pd.DataFrame(rows)
