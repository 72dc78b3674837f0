"""The XTuner plugin: ``MaskDPO`` (model), ``build_maskdpo_dataset`` and ``maskdpo_collate_fn`` (data).

Configs import them at the top and reference them by ``type=`` (see
``xtuner_configs/``). Names resolve on first use, so ``maskdpo.xtuner.loss``
stays importable without XTuner installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MaskDPO": "maskdpo.xtuner.model",
    "build_maskdpo_dataset": "maskdpo.xtuner.dataset",
    "maskdpo_collate_fn": "maskdpo.xtuner.dataset",
    "compute_ref_cache": "maskdpo.xtuner.ref_cache",
    "RefCache": "maskdpo.xtuner.ref_cache",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'maskdpo.xtuner' has no attribute {name!r}")
