"""maskdpo: Mask-DPO (Gu et al., ICLR 2025) for XTuner and LMDeploy.

Light on purpose: heavy libraries (torch, transformers, xtuner, lmdeploy) are
imported inside the functions that need them, so `maskdpo --help` is instant
and the core imports in both the training and the inference environment.
"""

__version__ = "0.1.0"
