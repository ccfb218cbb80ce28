"""Generation: sampling settings and the sampler, `generate` (a static batch with a contiguous KV
cache), the fused decode step (`decode`: torch and Rust), the paged-cache block manager
(`kvcache`, Rust) and the `Engine` (continuous batching with prefix caching).
"""

from fastllm.generation.engine import Engine, RequestOutput, TokenEvent
from fastllm.generation.kvcache import BlockManager
from fastllm.generation.loop import SamplingParams, generate

__all__ = ["BlockManager", "Engine", "RequestOutput", "SamplingParams", "TokenEvent", "generate"]
