"""Root pytest hooks: benchmarks in benches/ run only under `pytest --benchmark-only` (or
`--benchmark-enable`), so the plain `pytest` the README and CI use runs the tests and no benchmark.
"""


def pytest_ignore_collect(collection_path, config):
    if collection_path.name != "benches":
        return None
    wants_benchmarks = config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False)
    return None if wants_benchmarks else True
