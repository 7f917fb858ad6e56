import math

import numpy as np
import pytest

from gptspec.data import (
    split_windows,
    BatchSampler,
    ByteTokenizer,
    CharTokenizer,
    MarkovSource,
    find_shakespeare,
    load_corpus,
    load_tokenizer,
    save_tokenizer,
)
from gptspec.errors import DataError


def test_char_tokenizer_round_trip_and_saved_vocab(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.max() == tok.vocab_size - 1
    assert tok.decode(ids) == text
    again = load_tokenizer(save_tokenizer(tok, tmp_path / "vocab.json"))
    np.testing.assert_array_equal(again.encode(text), ids)


def test_text_outside_the_vocab_is_a_clear_error():
    tok = CharTokenizer("abc ")
    with pytest.raises(DataError) as e:
        tok.encode("a cab!? z")
    msg = str(e.value)
    assert "3 character(s) outside" in msg and "'!?z'" in msg and "position 5" in msg


def test_an_id_outside_the_vocab_is_a_clear_error_not_another_character():
    # a spec's vocab_size padded beyond its tokenizer's (tiny's 32 for the synthetic corpus's
    # 8 letters) holds ids no text has: once an IndexError, a byte modulo 256, or a wrapped -1
    with pytest.raises(DataError, match=r"token id 9 is outside the character vocabulary of 3 \('abc'\)"):
        CharTokenizer("abc").decode([0, 2, 9, 1])
    with pytest.raises(DataError, match="token id -1 is outside"):
        CharTokenizer("abc").decode(np.array([[0, -1]]))
    with pytest.raises(DataError, match="token id 300 is not a byte"):
        ByteTokenizer().decode([104, 300])
    assert CharTokenizer("abc").decode(np.array([[2, 0]])) == "ca"
    assert ByteTokenizer().decode([0xE2, 0x82]) == "\ufffd"  # a cut UTF-8 sequence: the replacement character


def test_byte_tokenizer_handles_any_text():
    tok = ByteTokenizer()
    text = "naïve café — ok"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and tok.decode(ids) == text


def test_tiny_shakespeare_from_the_data_dir(shakespeare_path):
    corpus = load_corpus("shakespeare")
    assert len(corpus.text) == 1_115_394 and corpus.tokenizer.vocab_size == 65
    assert corpus.train.size + corpus.val.size == 1_115_394
    # nanoGPT's prepare.py split: train data[:int(n * 0.9)], val the rest
    assert corpus.train.size == 1_003_854 and corpus.val.size == 111_540
    assert corpus.tokenizer.decode(corpus.train[:14]) == "First Citizen:"
    assert load_corpus(str(shakespeare_path), tokenizer="byte").tokenizer.vocab_size == 256


def test_missing_corpus_names_every_place_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        find_shakespeare()
    msg = str(e.value)
    assert str(tmp_path / "data" / "tinyshakespeare.txt") in msg
    assert str(tmp_path / "cache" / "gptbench" / "data" / "tinyshakespeare.txt") in msg
    assert "curl" in msg and "--corpus synthetic" in msg
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(str(tmp_path / "nope.txt"))


def test_sampler_is_seeded_and_targets_are_shifted_inputs():
    data = np.arange(1000)
    a, b = BatchSampler(data, 4, 16, seed=3), BatchSampler(data, 4, 16, seed=3)
    for _ in range(3):
        (xa, ya), (xb, yb) = a.next(), b.next()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(ya, xa + 1)
        assert xa.shape == (4, 16) and xa.dtype == np.int64
    assert not np.array_equal(BatchSampler(data, 4, 16, seed=4).next()[0], xa)


def test_entropy_rate_of_a_two_state_chain_matches_the_closed_form():
    src = MarkovSource(alphabet_size=2, order=1, alpha=1.0, seed=0)
    (p, q) = src.P[0, 1], src.P[1, 0]  # switch probabilities
    pi0 = q / (p + q)

    def h(x):
        return -x * math.log(x) - (1 - x) * math.log(1 - x)

    assert src.entropy_rate == pytest.approx(pi0 * h(p) + (1 - pi0) * h(q), rel=1e-12)
    # the first target (one letter of context) already sees the whole state
    assert src.block_floor(8) == pytest.approx(src.entropy_rate, rel=1e-12)


def test_order_two_floor_counts_the_short_first_context():
    src = MarkovSource()  # the embedded default: 8 letters, order 2
    ents = src.position_entropies(16)
    h = src.entropy_rate
    assert ents[0] > h and np.allclose(ents[1:], h)  # only target 0 lacks a full context
    assert src.block_floor(16) == pytest.approx((ents[0] + 15 * h) / 16)
    assert 0.3 < h < math.log(8)


def test_true_source_scores_its_entropy_on_a_long_sample():
    # law of large numbers: the source's own mean log-loss on its samples -> block floor
    src = MarkovSource()
    tok = CharTokenizer(src.alphabet)
    ids = tok.encode(src.sample(400_000, seed=11))
    x, y = BatchSampler(ids, 2000, 16, seed=0).next()
    losses = [src.oracle_loss(x[i:i + 1], y[i:i + 1]) for i in range(0, 2000, 1)]
    se = np.std(losses) / math.sqrt(len(losses))
    assert abs(np.mean(losses) - src.block_floor(16)) < 4 * se


def test_synthetic_corpus_needs_no_file_and_is_reproducible():
    a, b = load_corpus("synthetic"), load_corpus("synthetic")
    assert a.text == b.text and len(a.text) == 200_000 and a.tokenizer.vocab_size == 8
    assert a.describe()["entropy_rate"] == pytest.approx(MarkovSource().entropy_rate)


def test_split_windows_cover_the_split_once_from_its_start():
    data = np.arange(23)
    x, y = split_windows(data, 5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    np.testing.assert_array_equal(y, x + 1)  # the 4 windows' targets end at 20: 21, 22 are left over
    assert split_windows(np.arange(21), 5)[0].shape == (4, 5) and split_windows(np.arange(20), 5)[0].shape == (3, 5)
    with pytest.raises(DataError, match="too short"):
        split_windows(np.arange(5), 5)


def test_validation_windows_depend_on_the_data_only():
    from workloads.train import TrainConfig, validation_batches

    corpus = load_corpus("synthetic", synthetic_chars=20_000)
    a, b = (validation_batches(corpus, TrainConfig(seed=s, batch_size=4, eval_batches=3), 16) for s in (0, 7))
    assert len(a) == 3 and all(np.array_equal(p, q) for (xa, ya), (xb, yb) in zip(a, b) for p, q in ((xa, xb), (ya, yb)))
    x = np.concatenate([x for x, _ in a])
    starts = [int(np.flatnonzero((np.lib.stride_tricks.sliding_window_view(corpus.val, 16) == w).all(1))[0])
              for w in x[[0, -1]]]
    assert starts == [0, corpus.val.size - 17]  # spread from the split's first window to its last
