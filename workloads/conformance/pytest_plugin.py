"""pytest plugin (entry point `pytest11`): the conformance ladder as tests, for third parties.

    pytest --gptbench-backend=mypkg.module:MyBackend [--gptbench-dtype float32] ...

adds one test per ladder level (ops, step0, eval, step, trajectory, generate) to whatever else pytest collects.
The ladder runs once; each test fails with the report-card lines of its failing checks.
Without --gptbench-backend the plugin does nothing.
"""

from __future__ import annotations

import pytest



def pytest_addoption(parser):
    group = parser.getgroup("gptbench", "gptbench conformance ladder")
    group.addoption("--gptbench-backend", default=None,
                    help="backend to check: built-in name, entry-point name or package.module:Class")
    group.addoption("--gptbench-device", default="cpu")
    group.addoption("--gptbench-dtype", default="float32",
                    choices=["float32", "float64", "bfloat16", "float16"])
    group.addoption("--gptbench-spec", default="tiny")
    group.addoption("--gptbench-steps", type=int, default=50)


def pytest_collection_modifyitems(session, config, items):
    target = config.getoption("gptbench_backend")
    if target:
        from workloads.conformance.ladder import LEVELS

        ladder = _Ladder(config)
        items.extend(LadderLevel.from_parent(session, name=f"gptbench[{target}-{level}]", level=level,
                                             ladder=ladder) for level in LEVELS)


class _Ladder:
    """Runs the ladder on first use and keeps the report for every level's test."""

    def __init__(self, config):
        self.config, self._report, self._unavailable = config, None, None

    def report(self):
        if self._report is None and self._unavailable is None:
            import backends
            from gptspec.spec import preset
            from workloads.conformance.ladder import run_ladder

            opt = self.config.getoption
            cls = backends.load(opt("gptbench_backend"))
            self._unavailable = cls.unavailable(opt("gptbench_device"), opt("gptbench_dtype"))
            if self._unavailable is None:
                backend = cls(preset(opt("gptbench_spec")), device=opt("gptbench_device"),
                              dtype=opt("gptbench_dtype"))
                self._report = run_ladder(backend, name=opt("gptbench_backend"), steps=opt("gptbench_steps"))
        if self._unavailable:
            pytest.skip(f"unavailable here: {self._unavailable}")
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
