"""Benchmarks: collect ``bench_*.py`` and print each suite's summary table at the end of the run.

A benchmark appends ``(suite, line)`` pairs to ``config.cape_bench_lines``; they are printed in
the terminal summary (so ``make bench`` shows ratios computed in the same run).
"""
import pytest


def pytest_collect_file(parent, file_path):
    # pytest.ini only collects test_*.py; benchmark files are bench_*.py.  A file named on the
    # command line is already collected by pytest itself.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    config.cape_bench_lines = []
    config.addinivalue_line("markers", "slow: long benchmark, run with --runslow")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = getattr(config, "cape_bench_lines", [])
    if not lines:
        return
    suites = []
    for suite, _ in lines:
        if suite not in suites:
            suites.append(suite)
    for suite in suites:
        terminalreporter.section(suite)
        for s, line in lines:
            if s == suite:
                terminalreporter.write_line(line)
