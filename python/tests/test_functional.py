# SPDX-License-Identifier: MIT
"""scaled_dot_product_attention, scaled_dot_product_attention_lse and attention_weights against
the formula written out in long double (reference.py), hand calculations and properties."""
import threading
import time
import tracemalloc

import numpy as np
import pytest

import attention
from reference import assert_close, random, reference_attention

DTYPES = [np.float32, np.float64]


# q = [1 0]; k = [[1 0], [0 1]]; v = [[1 2], [3 4]]; d_k = 2
# s = q k^T / sqrt(2) = [0.70711, 0]    p = softmax(s) = [0.66976, 0.33024]
# out = 0.66976 * [1 2] + 0.33024 * [3 4] = [1.66048, 2.66048]
def test_worked_example_one_query_two_keys():
    out = attention.scaled_dot_product_attention([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]],
                                                 [[1.0, 2.0], [3.0, 4.0]])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [[1.6604769013, 2.6604769013]], rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_formula_with_batch_dimensions(dtype, is_causal):
    q, k, v = random((2, 3, 37, 16), 1, dtype), random((2, 3, 70, 16), 2, dtype), random(
        (2, 3, 70, 12), 3, dtype)
    out = attention.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert out.dtype == dtype and out.shape == (2, 3, 37, 12)
    assert_close(out, reference_attention(q, k, v, is_causal=is_causal)[0], dtype)


def test_size_one_leading_dimensions_broadcast():
    q, k, v = random((2, 1, 5, 8), 1), random((1, 3, 6, 8), 2), random((3, 6, 4), 3)
    out = attention.scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5, 4)
    for b in range(2):
        for h in range(3):
            # Each matrix of the batch is one 2-D call: bitwise the same result.
            single = attention.scaled_dot_product_attention(q[b, 0], k[0, h], v[h])
            assert np.array_equal(out[b, h], single)


def test_batch_dimensions_that_do_not_broadcast_raise_value_error():
    with pytest.raises(ValueError, match=r"do not broadcast: q \(2, 3\), k \(2, 4\)"):
        attention.scaled_dot_product_attention(random((2, 3, 5, 8), 1), random((2, 4, 5, 8), 2),
                                               random((2, 4, 5, 8), 3))


def test_empty_batch_gives_empty_result():
    out = attention.scaled_dot_product_attention(random((0, 5, 8), 1), random((0, 6, 8), 2),
                                                 random((0, 6, 4), 3))
    assert out.shape == (0, 5, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bool_mask_true_attends(dtype):
    q, k, v = random((2, 9, 8), 1, dtype), random((2, 11, 8), 2, dtype), random((2, 11, 5), 3, dtype)
    mask = np.random.default_rng(4).random((9, 11)) < 0.6
    mask[:, 0] = True  # every query sees at least one key
    out = attention.scaled_dot_product_attention(q, k, v, mask)
    assert_close(out, reference_attention(q, k, v, mask)[0], dtype)
    weights = attention.attention_weights(q, k, attn_mask=mask)
    assert np.all(weights[:, ~mask] == 0.0)  # exactly 0, not tiny
    assert np.all(weights[:, mask] > 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_mask_is_added_to_the_scaled_scores(dtype):
    q, k, v = random((3, 7, 8), 1, dtype), random((3, 7, 8), 2, dtype), random((3, 7, 8), 3, dtype)
    bias = random((3, 7, 7), 5, dtype)
    bias[:, 2, 4] = -np.inf
    out = attention.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert_close(out, reference_attention(q, k, v, bias)[0], dtype)
    assert np.all(attention.attention_weights(q, k, bias)[:, 2, 4] == 0.0)


def test_mask_broadcasts_over_batch_and_rows():
    q, k, v = random((2, 3, 4, 8), 1), random((2, 3, 6, 8), 2), random((2, 3, 6, 8), 3)
    key_padding = np.array([True, True, True, True, False, False])
    for mask in (key_padding, key_padding[None, :], np.broadcast_to(key_padding, (2, 1, 4, 6))):
        out = attention.scaled_dot_product_attention(q, k, v, mask)
        assert_close(out, reference_attention(q, k, v, key_padding)[0], np.float64)


def test_mask_of_the_wrong_shape_raises_value_error():
    with pytest.raises(ValueError, match=r"attn_mask has shape \(4, 5\).*\(L, S\) = \(4, 6\)"):
        attention.scaled_dot_product_attention(random((4, 8), 1), random((6, 8), 2),
                                               random((6, 8), 3), np.ones((4, 5), bool))


def test_is_causal_is_top_left_aligned_when_queries_and_keys_differ():
    # L = 2, S = 5: query i sees keys j <= i (PyTorch's is_causal), not the last keys.
    weights = attention.attention_weights(random((2, 3), 1), random((5, 3), 2), is_causal=True)
    assert ((weights != 0) == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]).all()


def test_is_causal_and_mask_together_need_both():
    q, k, v = random((6, 8), 1), random((6, 8), 2), random((6, 4), 3)
    mask = np.ones((6, 6), bool)
    mask[5, 1] = False
    out = attention.scaled_dot_product_attention(q, k, v, mask, is_causal=True)
    assert_close(out, reference_attention(q, k, v, mask, is_causal=True)[0], np.float64)
    bias = np.zeros((6, 6))
    bias[4, 0] = 1.5
    out = attention.scaled_dot_product_attention(q, k, v, bias, is_causal=True)
    assert_close(out, reference_attention(q, k, v, bias, is_causal=True)[0], np.float64)


def test_fully_masked_row_gives_zeros_and_lse_minus_inf():
    q, k, v = random((3, 4), 1), random((5, 4), 2), random((5, 2), 3)
    mask = np.ones((3, 5), bool)
    mask[1] = False
    out, lse = attention.scaled_dot_product_attention_lse(q, k, v, mask)
    assert np.all(out[1] == 0.0) and lse[1] == -np.inf
    assert np.all(np.isfinite(out[[0, 2]])) and np.all(np.isfinite(lse[[0, 2]]))
    weights = attention.attention_weights(q, k, mask)
    assert np.all(weights[1] == 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_rows_sum_to_one(dtype):
    q, k = random((2, 20, 8), 1, dtype), random((2, 30, 8), 2, dtype)
    weights = attention.attention_weights(q, k, is_causal=True)
    assert weights.dtype == dtype and weights.shape == (2, 20, 30)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=10 * np.finfo(dtype).eps)
    assert_close(weights, reference_attention(q, k, None, is_causal=True)[2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_keyword(dtype):
    q, k, v = random((5, 8), 1, dtype), random((7, 8), 2, dtype), random((7, 3), 3, dtype)
    out = attention.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert_close(out, reference_attention(q, k, v, scale=0.3)[0], dtype)
    # scale = 0: uniform weights, so every output row is the mean of v's rows.
    out = attention.scaled_dot_product_attention(q, k, v, scale=0.0)
    assert_close(out, np.broadcast_to(v.astype(np.float64).mean(axis=0), (5, 3)), dtype)


def test_scale_and_is_causal_are_keyword_only():
    # As in PyTorch, where the fifth positional argument is dropout_p.
    q = random((2, 4), 1)
    with pytest.raises(TypeError):
        attention.scaled_dot_product_attention(q, q, q, None, True)


def test_non_finite_scale_raises_value_error_with_the_library_message():
    q = random((2, 4), 1)
    with pytest.raises(ValueError, match=r"options\.scale \(= nan\) must be finite"):
        attention.scaled_dot_product_attention(q, q, q, scale=float("nan"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lse_matches_log_sum_exp(dtype):
    q, k, v = random((2, 6, 8), 1, dtype), random((2, 9, 8), 2, dtype), random((2, 9, 4), 3, dtype)
    out, lse = attention.scaled_dot_product_attention_lse(q, k, v, is_causal=True)
    expected_out, expected_lse, _ = reference_attention(q, k, v, is_causal=True)
    assert lse.shape == (2, 6) and lse.dtype == dtype
    assert_close(out, expected_out, dtype)
    assert_close(lse, expected_lse, dtype)
    # Two halves of the keys merge into attention over all of them (the docstring's formula).
    out_a, lse_a = attention.scaled_dot_product_attention_lse(q, k[:, :4], v[:, :4])
    out_b, lse_b = attention.scaled_dot_product_attention_lse(q, k[:, 4:], v[:, 4:])
    total = np.logaddexp(lse_a, lse_b)
    merged = np.exp(lse_a - total)[..., None] * out_a + np.exp(lse_b - total)[..., None] * out_b
    assert_close(merged, reference_attention(q, k, v)[0], dtype)


def test_shape_error_becomes_value_error_with_the_library_message():
    with pytest.raises(ValueError, match=r"^attention::scaled_dot_product_attention: k\.cols\(\) "
                                         r"\(= 3\) must equal q\.cols\(\) \(= 4\)$"):
        attention.scaled_dot_product_attention(random((2, 4), 1), random((5, 3), 2),
                                               random((5, 4), 3))
    with pytest.raises(ValueError, match=r"v\.rows\(\) \(= 6\) must equal k\.rows\(\) \(= 5\)"):
        attention.scaled_dot_product_attention(random((2, 4), 1), random((5, 4), 2),
                                               random((6, 4), 3))
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*shape \(4,\)"):
        attention.scaled_dot_product_attention(random(4, 1), random((5, 4), 2), random((5, 4), 3))


def test_wrong_dtypes_raise_type_error():
    q = random((2, 4), 1)
    with pytest.raises(TypeError, match="q has dtype int64; expected float32 or float64"):
        attention.scaled_dot_product_attention(q.astype(np.int64), q, q)
    with pytest.raises(TypeError, match="q has dtype float16"):
        attention.attention_weights(q.astype(np.float16), q)
    with pytest.raises(TypeError, match="v has dtype float32 but q has float64"):
        attention.scaled_dot_product_attention(q, q, q.astype(np.float32))
    with pytest.raises(TypeError, match="attn_mask has dtype float32; expected bool"):
        attention.scaled_dot_product_attention(q, q, q, np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="attn_mask has dtype int64"):
        attention.scaled_dot_product_attention(q, q, q, np.ones((2, 2), np.int64))


def test_strided_and_fortran_ordered_inputs_give_the_same_result():
    q, k, v = random((4, 10, 16), 1), random((4, 12, 16), 2), random((4, 12, 8), 3)
    expected = attention.scaled_dot_product_attention(q, k, v)
    wide = random((4, 12, 32), 4)
    wide[..., :16] = k
    reversed_rows = np.ascontiguousarray(v[:, ::-1])[:, ::-1]  # negative row stride
    fortran_q = np.asfortranarray(q)
    for args in ((q, wide[..., :16], v), (fortran_q, k, v), (q, k, reversed_rows),
                 (np.swapaxes(np.swapaxes(q, 1, 2).copy(), 1, 2), k, v)):
        assert np.array_equal(attention.scaled_dot_product_attention(*args), expected)


def test_misaligned_input_gives_the_same_result():
    q = random((6, 8), 1, np.float32)
    expected = attention.scaled_dot_product_attention(q, q, q)
    # A float32 array one byte into a buffer: not 4-byte aligned, so it is copied once.
    misaligned = np.frombuffer(bytearray(q.nbytes + 1), dtype=np.float32, count=q.size,
                               offset=1).reshape(q.shape)
    assert not misaligned.flags.aligned
    misaligned[...] = q
    assert np.array_equal(attention.scaled_dot_product_attention(misaligned, q, misaligned),
                          expected)


def test_lists_and_objects_with_array_interface_are_accepted():
    class Wrapped:
        def __init__(self, array):
            self.array = array

        def __array__(self, dtype=None):
            return self.array

    q = random((3, 4), 1)
    expected = attention.scaled_dot_product_attention(q, q, q)
    assert np.array_equal(attention.scaled_dot_product_attention(q.tolist(), q, Wrapped(q)),
                          expected)


def test_c_contiguous_inputs_are_not_copied():
    # NumPy reports its allocations to tracemalloc, the library's (C++) do not: during a call on
    # C-contiguous inputs, the only new NumPy memory is the result.
    q, k, v = random((4, 256, 64), 1), random((4, 256, 64), 2), random((4, 256, 64), 3)
    result_bytes = q.nbytes
    for copy_expected, args in ((False, (q, k, v)), (True, (q, np.asfortranarray(k), v))):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            out = attention.scaled_dot_product_attention(*args)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert out.nbytes == result_bytes
        if copy_expected:  # the check can fail: a copy of k shows up
            assert peak >= result_bytes + k.nbytes
        else:
            assert peak < result_bytes + k.nbytes // 2, f"{peak} bytes for a {result_bytes}-byte result"


def test_batches_run_with_the_gil_released():
    # While a long batched call runs in one thread, the main thread keeps running Python: some of
    # its steps fall well inside the call. With the GIL held, none could. The call is made longer
    # until it lasts at least 50 ms, so that "well inside" means something on a fast machine.
    for length in (1024, 2048, 4096, 8192):
        q = random((8, length, 64), 1, np.float32)
        times = {}

        def worker():
            times["start"] = time.perf_counter()
            attention.scaled_dot_product_attention(q, q, q)
            times["end"] = time.perf_counter()

        thread = threading.Thread(target=worker)
        steps = []
        thread.start()
        while thread.is_alive():
            steps.append(time.perf_counter())
        thread.join()
        start, end = times["start"], times["end"]
        if end - start >= 0.05:
            break
    margin = 0.2 * (end - start)
    inside = [t for t in steps if start + margin < t < end - margin]
    assert inside, f"the main thread made no progress during a {end - start:.3f} s call"


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_batch_equals_one_call_per_matrix(dtype):
    # Many more matrices than threads: the batch is shared among threads (parallel.hpp); results
    # are bitwise those of separate calls.
    q, k, v = random((16, 33, 8), 1, dtype), random((16, 65, 8), 2, dtype), random((16, 65, 8), 3, dtype)
    out = attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    for b in range(16):
        assert np.array_equal(out[b], attention.scaled_dot_product_attention(q[b], k[b], v[b],
                                                                             is_causal=True))
