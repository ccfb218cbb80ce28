"""Root pytest hooks: benchmarks in benches/ run only under `pytest --benchmark-only` (or
`--benchmark-enable`), so the plain `pytest` that the README and CI use runs the tests and no
benchmark. (benches/ is in testpaths so that `pytest --benchmark-only` finds it.)
"""


def pytest_ignore_collect(collection_path, config):
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False):
        return None
    try:
        rel = collection_path.relative_to(config.rootpath)
    except ValueError:
        return None
    if rel.parts[:1] == ("benches",) and collection_path.is_file():
        return True
    return None
