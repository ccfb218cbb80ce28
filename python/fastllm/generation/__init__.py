"""Generation, one file per part:

- `sampling`: `SamplingParams` and the `Sampler` both `generate` and the Engine pick tokens with;
- `loop`: `generate`, a static batch with a contiguous KV cache (`contiguous`);
- `decode`: the fused one-token step (`DecodePlan`: torch, and Rust at batch 1 on a CPU);
- `kvcache`: the Rust block manager of the paged cache (`BlockManager`);
- `engine`: the `Engine` (continuous batching with prefix caching) over `sequence` (a request's
  state), `scheduler` (admission, chunked prefill, preemption) and `paged` (the paged K/V).

>>> import torch
>>> from fastllm.model import MiniGPT, MiniGPTConfig
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=2, temperature=0))[0].shape
torch.Size([5])
"""

from fastllm.generation.contiguous import KVCache
from fastllm.generation.engine import Engine, RequestOutput, TokenEvent
from fastllm.generation.kvcache import BlockManager
from fastllm.generation.loop import generate
from fastllm.generation.sampling import Sampler, SamplingParams

__all__ = [
    "BlockManager",
    "Engine",
    "KVCache",
    "RequestOutput",
    "Sampler",
    "SamplingParams",
    "TokenEvent",
    "generate",
]
