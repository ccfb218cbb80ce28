"""Root pytest hooks: what a run collects.

- Plain `pytest` (the README's and CI's test command) runs tests/ and no benchmark: benches/ is
  left out unless `--benchmark-only` or `--benchmark-enable` is given. (benches/ is in testpaths so
  that `pytest --benchmark-only` finds it.)
- `pytest --benchmark-only` runs benches/ and not tests/: pytest-benchmark would only skip every
  test there ("Skipping non-benchmark"), burying the benchmarks' own lines under ~900 skips. A
  tests/ path named on the command line is still collected.
"""

from __future__ import annotations

from pathlib import Path


def _named_on_command_line(config, folder: str) -> bool:
    """Whether an argument of this run is a path inside `<rootdir>/<folder>`."""
    root = (config.rootpath / folder).resolve()
    for arg in config.invocation_params.args:
        arg = str(arg).split("::", 1)[0]
        if arg.startswith("-"):
            continue
        path = (config.invocation_params.dir / arg).resolve()
        if path == root or root in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config):
    try:
        rel = collection_path.relative_to(config.rootpath)
    except ValueError:
        return None
    if not collection_path.is_file() or not rel.parts:
        return None
    if config.getoption("benchmark_only", False):
        if rel.parts[0] == "tests" and not _named_on_command_line(config, "tests"):
            return True
        return None
    if config.getoption("benchmark_enable", False):
        return None
    if rel.parts[0] == "benches":
        return True
    return None
