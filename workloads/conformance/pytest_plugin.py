"""pytest plugin (entry point `pytest11`): the conformance ladder as tests, for a backend
author's CI.

    pytest --gptbench-backend=mypkg.module:MyBackend --gptbench-dtype float32,float64 ...

adds one test per (dtype, ladder level) -- ops, step0, eval, step, trajectory, generate -- to
whatever else pytest collects. The ladder runs once per dtype; each test fails with the
report-card lines of its failing checks. A backend that cannot run here (or cannot be
loaded) **fails** every one of its tests, so a CI that lost its GPU or a dependency does
not pass by skipping; `--gptbench-allow-unavailable` turns that into skips, on purpose.
Without --gptbench-backend the plugin does nothing (and imports nothing heavy).
"""

from __future__ import annotations

import pytest

DTYPES = ("float32", "float64", "bfloat16", "float16")


def pytest_addoption(parser):
    group = parser.getgroup("gptbench", "gptbench conformance ladder")
    group.addoption("--gptbench-backend", default=None,
                    help="backend to check: built-in name, entry-point name or package.module:Class")
    group.addoption("--gptbench-device", default="cpu")
    group.addoption("--gptbench-dtype", action="append", default=None,
                    help=f"dtype(s) to check, comma-separated or repeated, from {', '.join(DTYPES)} "
                         "(default: float32)")
    group.addoption("--gptbench-spec", default="tiny")
    group.addoption("--gptbench-steps", type=int, default=50)
    group.addoption("--gptbench-allow-unavailable", action="store_true",
                    help="skip, instead of fail, when the backend cannot run here")


def dtypes(config) -> list[str]:
    given = config.getoption("gptbench_dtype") or ["float32"]
    out = [d.strip() for item in given for d in item.split(",") if d.strip()]
    bad = sorted(set(out) - set(DTYPES))
    if bad:
        raise pytest.UsageError(f"--gptbench-dtype {', '.join(bad)}: allowed are {', '.join(DTYPES)}")
    return list(dict.fromkeys(out))


def pytest_collection_modifyitems(session, config, items):
    target = config.getoption("gptbench_backend")
    if target:
        from workloads.conformance.ladder import LEVELS

        for dtype in dtypes(config):
            ladder = _Ladder(config, dtype)
            items.extend(LadderLevel.from_parent(session, name=f"gptbench[{target}-{dtype}-{level}]", level=level,
                                                 ladder=ladder) for level in LEVELS)


class _Ladder:
    """Runs the ladder for one dtype on first use and keeps the report for every level's test."""

    def __init__(self, config, dtype):
        self.config, self.dtype, self._report, self._unavailable = config, dtype, None, None

    def report(self):
        if self._report is None and self._unavailable is None:
            import backends
            from backends.contract import label
            from gptspec.errors import GptbenchError
            from gptspec.spec import resolve_spec
            from workloads.conformance.ladder import run_ladder

            opt = self.config.getoption
            device = opt("gptbench_device")
            try:
                cls = backends.load(opt("gptbench_backend"))
                self._unavailable = cls.unavailable(device, self.dtype)
            except GptbenchError as e:
                self._unavailable = str(e)
            if self._unavailable is None:
                backend = cls(resolve_spec(opt("gptbench_spec")), device=device, dtype=self.dtype)
                self._report = run_ladder(backend, name=label(cls), steps=opt("gptbench_steps"))
        if self._unavailable:
            message = f"unavailable here ({self.config.getoption('gptbench_device')} {self.dtype}): {self._unavailable}"
            if self.config.getoption("gptbench_allow_unavailable"):
                pytest.skip(message)
            raise LadderFailure(message + " (pass --gptbench-allow-unavailable to skip instead)")
        return self._report


class LadderLevel(pytest.Item):
    def __init__(self, *, level, ladder, **kw):
        super().__init__(**kw)
        self.level, self.ladder = level, ladder

    def runtest(self):
        from workloads.conformance.report_card import describe

        report = self.ladder.report()
        rows = [r for r in report.rows if r.level == self.level]
        if not rows:
            pytest.skip("; ".join(report.notes) or f"level {self.level} ran no checks")
        bad = [r for r in rows if not r.ok]
        if bad:
            raise LadderFailure("\n".join(describe(r) for r in bad))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, LadderFailure):
            return f"{self.name}: {len(str(excinfo.value).splitlines())} check(s) fail\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


class LadderFailure(Exception):
    pass
