"""`fastllm.dedup`, the near-duplicate API under its first import path; the code lives in
`fastllm.data.dedup`.

>>> from fastllm.dedup import MinHashDeduper
>>> MinHashDeduper is __import__("fastllm.data.dedup").data.dedup.MinHashDeduper
True
"""

from fastllm.data.dedup import *  # noqa: F403
from fastllm.data.dedup import __all__  # noqa: F401
