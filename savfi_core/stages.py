"""The stage functions now live in :mod:`savfi_core.study.stages` (their parameters in
:mod:`savfi_core.study.schema`); this module keeps the old import path working."""
from savfi_core.study.explore import explore_datasets
from savfi_core.study.stages import meta_config_for, run_evaluate, run_meta_train, run_pretrain, run_report

__all__ = ["explore_datasets", "meta_config_for", "run_evaluate", "run_meta_train", "run_pretrain", "run_report"]
