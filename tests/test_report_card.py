"""The pass rule of workloads/conformance/report_card.py: what may never pass, and what a row reports."""

import json

import numpy as np
import pytest

from workloads.conformance.report_card import Report, compare, describe
from workloads.conformance.tolerances import TOLERANCES, Tolerance

TOL = Tolerance(atol=1e-4, rtol=1e-4, norm_rtol=1e-5)
REF = np.random.default_rng(0).standard_normal((4, 5))


def test_exact_copy_passes_with_zero_errors():
    row = compare("step0", "t", REF.astype(np.float32).astype(np.float64), REF, TOL)
    assert row.ok and row.norm_rel < 1e-7 and row.first_bad is None


@pytest.mark.parametrize("bad", [np.zeros_like(REF), np.full_like(REF, REF.mean()), np.full_like(REF, np.nan)],
                         ids=["zeros", "constant", "nan"])
def test_zero_constant_or_nan_output_never_passes_even_with_huge_atol(bad):
    assert not compare("step0", "t", bad, REF, Tolerance(atol=1e9, rtol=1e9, norm_rtol=0.5)).ok


def test_one_wrong_element_is_found_by_the_elementwise_rule_and_located():
    x = REF.copy()
    x[2, 3] += 1e-2 * np.sqrt(np.mean(REF**2))  # norm_rel ~ 2e-3 / sqrt(20): the norm alone misses it
    row = compare("step0", "t", x, REF, Tolerance(atol=1e-4, rtol=1e-4, norm_rtol=1e-2))
    assert not row.ok and row.first_bad == (2, 3) and row.worst_index == (2, 3)
    assert row.worst_value == pytest.approx(x[2, 3]) and row.worst_ref == pytest.approx(REF[2, 3])
    assert row.max_abs == pytest.approx(abs(x[2, 3] - REF[2, 3]))


def test_a_small_error_everywhere_is_found_by_the_norm_rule():
    row = compare("step0", "t", REF * (1 + 5e-5), REF, TOL)
    assert not row.ok and row.first_bad is None and row.norm_rel == pytest.approx(5e-5)


def test_shape_mismatch_fails_with_a_note():
    row = compare("step0", "t", REF[:, :4], REF, TOL)
    assert not row.ok and "shape" in row.note


def test_report_json_is_strict_json_and_names_the_first_failure():
    report = Report("b", {"name": "tiny"}, "cpu", "float32", {"seed": 0})
    report.rows = [compare("ops", "a", REF, REF, TOL), compare("ops", "b", np.full_like(REF, np.nan), REF, TOL)]
    d = json.loads(report.to_json())  # allow_nan=False inside: inf is written as a string
    assert d["ok"] is False and d["first_failure"] == "b" and d["rows"][1]["max_abs"] == "nan"
    assert "first divergence: b" in report.to_text()


def test_every_dtype_has_every_kind_and_more_precision_has_tighter_bounds():
    kinds = {"ops", "step0", "loss", "params"}
    assert all(set(row) == kinds for row in TOLERANCES.values())
    for kind in kinds:
        f64, f32, f16, bf16 = (TOLERANCES[d][kind].norm_rtol for d in ("float64", "float32", "float16", "bfloat16"))
        assert f64 < f32 < min(f16, bf16) and max(f16, bf16) < 1


def test_a_step_level_failure_names_its_step():
    """The step level compares per-step grad norms, then every parameter after its last update:
    either failure says which step (a per-step row also says where it is worst)."""
    norms = np.array([1.0, 0.9, 0.8])
    row = compare("step", "step.grad_norm", norms * np.array([1, 1, 1.01]), norms, TOL)
    assert describe(row).startswith("step.grad_norm from step 2; worst at step 2: 0.808 vs reference 0.8")
    param = compare("step", "step.wte.weight", REF + np.eye(4, 5) * 1e-2, REF, TOL)
    assert describe(param).startswith("step.wte.weight after step 2 (the last of 3 AdamW steps), from index (0, 0)")
    assert "after step" not in describe(compare("step0", "grad.wte.weight", REF + 1e-2, REF, TOL))
