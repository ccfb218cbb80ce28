"""The model: MiniGPT (`gpt`), attention dispatch between SDPA and the Triton kernels (`attention`),
the K/V cache protocol generation implements (`cache`), rotary position angles (`rope`), and the
chunked cross-entropy that never builds the full logits (`losses`).

>>> from fastllm.model import MiniGPT, MiniGPTConfig
>>> MiniGPT(MiniGPTConfig.preset("tiny")).config.n_layer
2
"""

from fastllm.config import MiniGPTConfig
from fastllm.model.gpt import MiniGPT

__all__ = ["MiniGPT", "MiniGPTConfig"]
