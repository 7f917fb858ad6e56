"""Every train cell's target and its time to target (workloads/train.py), against hand-computed
cases: a scripted backend on a fake clock, so each step's time and each evaluation's loss is
known, and the evaluation's own time (which must not count) is large."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from backends.numpy_ref import NumpyBackend
from gptspec.data import Corpus, load_corpus
from gptspec.spec import PRESETS
from suite.cell import Cell
from suite.cli import main
from workloads import train

STEP_MS = [10.0 * (i + 1) for i in range(8)]  # step i takes (i + 1) x 10 ms
VAL = [3.0, 2.0, 1.4, 1.2]  # the evaluations at steps 2, 4, 6 and 8 (eval_interval 2, 8 steps)
EVAL_S = 5.0  # each validation batch costs 5 s of the clock: none of it may count


class Scripted:
    """A backend whose steps take STEP_MS on the clock and whose k-th evaluation scores VAL[k]."""

    def __init__(self, clock, nan_at=None):
        self.spec, self.clock, self.nan_at = PRESETS["tiny"], clock, nan_at
        self.step, self.evals, self.batches = 0, 0, 0

    def load_state(self, params):
        pass

    def train_step(self, x, y, lr):
        self.clock.now += STEP_MS[self.step] / 1e3
        self.step += 1
        return float("nan") if self.step - 1 == self.nan_at else 2.5

    def loss(self, x, y):
        self.clock.now += EVAL_S
        value = VAL[self.evals]
        self.batches += 1
        if self.batches % train.TrainConfig.eval_batches == 0:
            self.evals += 1
        return value


@pytest.fixture
def clock(monkeypatch):
    c = SimpleNamespace(now=100.0)
    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: c.now))
    return c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "abc.txt"
    path.write_text("the cat sat on the mat. " * 200)  # 12 characters: fits tiny's vocabulary
    return load_corpus(str(path))


def run_scripted(clock, corpus, target, nan_at=None) -> dict:
    cfg = train.TrainConfig(steps=8, eval_interval=2, batch_size=2, target_val_loss=target, warmup_steps=0)
    return train.train(Scripted(clock, nan_at), corpus, cfg)


@pytest.mark.parametrize("target, step, seconds", [
    (1.5, 6, 0.21),   # the third evaluation (1.4) is the first at or below: steps 1..6 = 10+...+60 ms
    (1.4, 6, 0.21),   # "at or below": equal counts
    (1.39, 8, 0.36),  # only the last evaluation (1.2): every step, 10+...+80 ms
    (3.0, 2, 0.03),   # the first evaluation already: 10+20 ms
])
def test_time_to_target_is_the_step_times_up_to_the_first_evaluation_at_or_below_it(clock, corpus, target, step,
                                                                                     seconds):
    m = run_scripted(clock, corpus, target)
    assert m["val_losses"] == [(2, 3.0), (4, 2.0), (6, 1.4), (8, 1.2)]
    assert m["target_reached"] is True
    assert m["steps_to_target"] == step
    assert m["time_to_target_s"] == pytest.approx(seconds)  # the 4 x 5 s evaluations are not in it
    assert m["steps_trained"] == 8 and m["best_val_loss"] == 1.2
    assert train.summary_lines({**m, "target_source": "option"}) == [
        f"target val loss {target:.4f} (option): reached at step {step} after {seconds:.2f} s of training"]


def test_a_missed_target_says_so_with_the_steps_and_the_best_loss(clock, corpus):
    m = run_scripted(clock, corpus, 1.0)
    assert m["target_reached"] is False  # explicit, not just a null time
    assert m["steps_to_target"] is None and m["time_to_target_s"] is None
    assert (m["steps_trained"], m["best_val_loss"]) == (8, 1.2)
    assert train.summary_lines({**m, "target_source": "option"}) == [
        "target val loss 1.0000 (option): not reached in 8 steps (best val loss 1.2000)"]


def test_no_target_is_neither_reached_nor_missed(clock, corpus):
    m = run_scripted(clock, corpus, None)
    assert m["target_reached"] is None and m["steps_to_target"] is None and m["best_val_loss"] == 1.2


def test_a_diverged_cell_missed_its_target_at_the_step_it_stopped(clock, corpus):
    m = run_scripted(clock, corpus, 1.5, nan_at=3)  # the 4th step's loss is NaN
    assert m["status"] == "diverged"
    assert m["target_reached"] is False and m["steps_trained"] == 4
    assert m["best_val_loss"] == 3.0  # the one evaluation before it stopped (step 2)


# --- the default target of each corpus ----------------------------------------------------------
def test_synthetic_corpus_targets_its_exact_floor_plus_the_margin():
    corpus = load_corpus("synthetic")
    floor = corpus.source.block_floor(16)
    target, source = train.default_target("tiny", corpus, 16)
    assert target == pytest.approx(floor + 0.1) and train.SYNTHETIC_TARGET_GAP == 0.1
    assert source == f"entropy floor {floor:.4f} + 0.1 nats"
    # the floor follows the block length: a longer block has more positions with a full context
    assert train.default_target("tiny", corpus, 64)[0] < target


def _named(name: str) -> Corpus:
    ids = np.arange(10)
    return Corpus(name, "x", None, ids, ids)


def test_tiny_shakespeare_targets_are_stated_per_preset_or_refused_with_a_reason():
    shakespeare = _named("shakespeare")
    assert train.default_target("shakespeare-char", shakespeare, 256) == (1.5, "stated for shakespeare-char on "
                                                                                "Tiny Shakespeare")
    assert train.default_target("lumgpt", shakespeare, 128)[0] == train.SHAKESPEARE_TARGETS["lumgpt"]
    target, source = train.default_target("tiny", shakespeare, 16)
    assert target is None and source.startswith("none for tiny on Tiny Shakespeare: ") and "65 characters" in source
    assert train.default_target("custom", shakespeare, 16) == (
        None, "none for custom on Tiny Shakespeare: it is no preset; set the option target_val_loss")
    # every preset has a decision: a new preset without one fails here
    stated, refused = set(train.SHAKESPEARE_TARGETS), set(train.NO_SHAKESPEARE_TARGET)
    assert stated | refused == set(PRESETS) and not stated & refused


def test_another_text_file_has_no_target_unless_the_option_sets_one():
    assert train.default_target("lumgpt", _named("notes.txt"), 128) == (
        None, "none: no stated target for the text file notes.txt; set the option target_val_loss")


def test_a_shakespeare_cell_records_its_stated_target_and_that_it_missed_it(shakespeare_path):
    cell = Cell.make("numpy", "train", "lumgpt", options={"steps": 1, "batch_size": 1, "eval_batches": 1,
                                                          "corpus": "shakespeare"})
    m = train.run(NumpyBackend(cell.spec_obj()), cell)
    assert m["target_val_loss"] == train.SHAKESPEARE_TARGETS["lumgpt"]
    assert m["target_source"] == "stated for lumgpt on Tiny Shakespeare"
    assert m["target_reached"] is False and m["steps_trained"] == 1  # one step from init: ~ln 65 nats
    given = Cell.make("numpy", "train", "tiny", options={"steps": 1, "target_val_loss": 9.0})
    m = train.run(NumpyBackend(given.spec_obj()), given)
    assert (m["target_val_loss"], m["target_source"], m["target_reached"]) == (9.0, "option", True)


def test_gptbench_train_says_where_it_stands_against_its_target(capsys):
    assert main(["train", "--spec", "tiny", "--steps", "3", "--eval-interval", "1", "--target-val-loss", "9"]) == 0
    out = capsys.readouterr().out
    # one step from the init already scores under 9 nats (ln 32 = 3.47 at the start)
    assert re.search(r"^target val loss 9\.0000 \(option\): reached at step 1 after \d+\.\d\d s of training$", out, re.M)
    assert main(["train", "--spec", "tiny", "--steps", "2", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    assert m["target_source"].startswith("entropy floor ") and m["target_reached"] is False
