"""The backward kernels of the C core (gptc._C.*_backward and the training
forwards) against PyTorch autograd.

Each gradient is compared with torch's, computed in float64 from the same
float32 inputs, as the relative error max|got - ref| / max|ref| (at most
1e-4); every test prints the largest it saw. Gradients accumulate (+=) into
the arrays passed, so the tests also start from non-zero arrays, call twice,
and pass None for gradients that are not wanted.
"""
import numpy as np
import pytest

import gptc
from gptc import _C
from conftest import report
from guard_pages import guarded

TOL = 1e-4


def rel_err(name, got, ref, tol=TOL):
    """max|got - ref| / max|ref|, asserted <= tol and printed."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    if ref.size == 0:
        return 0.0
    err = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    rel = err / scale if scale > 0 else err
    print(f"{name}: max rel error {rel:.3g}")
    assert rel <= tol, f"{name}: relative error {rel:.3g} > {tol:g}"
    return rel


def t64(torch, a, grad=True):
    """A float64 leaf tensor holding the float32 values of a."""
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def randn(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def start(rng, ref):
    """Non-zero starting values for a gradient array, on the scale of the gradient
    (so that subtracting them again loses no precision to cancellation)."""
    ref = np.asarray(ref)
    return randn(rng, *ref.shape, scale=float(np.abs(ref).max()) if ref.size else 1.0)


class threads:
    """with threads(n): run gptc's kernels on n threads, then restore."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = _C.get_num_threads()
        _C.set_num_threads(self.n)

    def __exit__(self, *exc):
        _C.set_num_threads(self.old)


# -- Linear ---------------------------------------------------------------------

LINEAR_SHAPES = [(1, 5, 1), (7, 72, 13), (64, 768, 3072), (1, 768, 13), (7, 5, 3072),
                 (64, 72, 1), (13, 77, 31), (64, 3072, 768)]


def torch_linear_grads(torch, x, w, b, dout):
    tx, tw, tb = t64(torch, x), t64(torch, w), t64(torch, b)
    torch.nn.functional.linear(tx, tw, tb).backward(torch.tensor(dout, dtype=torch.float64))
    return tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("M,K,N", LINEAR_SHAPES)
def test_linear_backward_matches_torch(torch, M, K, N):
    """dinp, dweight and dbias equal torch's, accumulate into what the arrays held,
    double when called twice, and None skips a gradient."""
    rng = np.random.default_rng(M * 1000 + K + N)
    x, w, b, dout = randn(rng, M, K), randn(rng, N, K), randn(rng, N), randn(rng, M, N)
    rx, rw, rb = torch_linear_grads(torch, x, w, b, dout)
    worst = 0.0
    # accumulate into arrays that already hold something
    dx0, dw0, db0 = start(rng, rx), start(rng, rw), start(rng, rb)
    dx, dw, db = dx0.copy(), dw0.copy(), db0.copy()
    assert _C.linear_backward(dout, x, w, dx, dw, db) is None
    worst = max(worst, rel_err("dinp (+= onto values)", dx.astype(np.float64) - dx0, rx))
    worst = max(worst, rel_err("dweight (+= onto values)", dw.astype(np.float64) - dw0, rw))
    worst = max(worst, rel_err("dbias (+= onto values)", db.astype(np.float64) - db0, rb))
    # twice from zero doubles
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        _C.linear_backward(dout, x, w, dx, dw, db)
    worst = max(worst, rel_err("dinp x2", dx, 2 * rx))
    worst = max(worst, rel_err("dweight x2", dw, 2 * rw))
    worst = max(worst, rel_err("dbias x2", db, 2 * rb))
    # each gradient alone, the others None
    for i, (name, ref) in enumerate([("dinp", rx), ("dweight", rw), ("dbias", rb)]):
        grads = [None, None, None]
        grads[i] = np.zeros(ref.shape, np.float32)
        _C.linear_backward(dout, x, w, *grads)
        worst = max(worst, rel_err(f"{name} alone", grads[i], ref))
    _C.linear_backward(dout, x, w, None, None, None)   # nothing wanted: a no-op
    print(f"linear_backward {M}x{K}x{N}: max rel error {worst:.3g}")


def test_linear_backward_keeps_leading_dimensions(torch):
    """inp (2, 3, K) and dout (2, 3, N), as a Linear on a (batch, tokens, emb) input."""
    rng = np.random.default_rng(11)
    x, w, b, dout = randn(rng, 2, 3, 72), randn(rng, 13, 72), randn(rng, 13), randn(rng, 2, 3, 13)
    rx, rw, rb = torch_linear_grads(torch, x, w, b, dout)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    _C.linear_backward(dout, x, w, dx, dw, db)
    worst = max(rel_err("dinp", dx, rx), rel_err("dweight", dw, rw), rel_err("dbias", db, rb))
    print(f"linear_backward (2, 3, 72): max rel error {worst:.3g}")


def test_linear_backward_is_deterministic_for_any_thread_count():
    """Each gradient element is summed in one fixed order whatever the threads:
    1 and 2 threads give the same bits."""
    rng = np.random.default_rng(12)
    M, K, N = 96, 200, 300
    x, w, dout = randn(rng, M, K), randn(rng, N, K), randn(rng, M, N)
    results = []
    for n in (1, 2, 1, 2):
        with threads(n):
            g = [np.zeros_like(x), np.zeros_like(w), np.zeros(N, np.float32)]
            _C.linear_backward(dout, x, w, *g)
            results.append(g)
    for g in results[1:]:
        for a, b in zip(results[0], g):
            np.testing.assert_array_equal(a, b)


def test_linear_backward_kernel_per_isa_stays_inside_its_operands(isa):
    """Each kernel set computes the gradients and touches nothing past the end of
    its operands or gradients (each is followed by a guard page); the input
    gradient of 8500 outputs is a reduction of more than one 4096-step slab."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for m, k, n in [(1, 1, 1), (6, 16, 6), (5, 17, 3), (7, 33, 5), (13, 77, 31),
                    (1, 768, 50), (64, 768, 300), (20, 300, 7), (900, 20, 5), (9, 20, 800),
                    (40, 30, 8500)]:
        x, w, dout = guarded((m, k)), guarded((n, k)), guarded((m, n))
        dx, dw, db = guarded((m, k)), guarded((n, k)), guarded((n,))
        for a in (x, w, dout):
            a[...] = rng.normal(size=a.shape)
        for a in (dx, dw, db):
            a[...] = 0
        gptc._C.linear_backward(dout, x, w, dx, dw, db)
        d64 = dout.astype(np.float64)
        for got, ref in [(dx, d64 @ w), (dw, d64.T @ x), (db, d64.sum(axis=0))]:
            worst = max(worst, float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-30)))
    print(f"linear_backward {isa}: max rel error {worst:.3g}")
    assert worst < 1e-5



# -- LayerNorm ------------------------------------------------------------------

def torch_layer_norm_grads(torch, x, scale, shift, dout, eps=1e-5):
    """The book's LayerNorm (biased variance) in float64."""
    tx, ts, tb = t64(torch, x), t64(torch, scale), t64(torch, shift)
    mean = tx.mean(dim=-1, keepdim=True)
    var = tx.var(dim=-1, keepdim=True, unbiased=False)
    y = ts * ((tx - mean) / torch.sqrt(var + eps)) + tb
    y.backward(torch.tensor(dout, dtype=torch.float64))
    return tx.grad.numpy(), ts.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize("shape", [(2, 6), (2, 4, 768), (3, 1), (5, 1000), (1, 72), (128, 768),
                                   (4, 1003)])
def test_layer_norm_backward_matches_torch(torch, shape):
    """dinp, dscale, dshift of the book's LayerNorm, with non-trivial scale and
    shift, an offset input and (128, 768) large enough for the threaded path; (4, 1003)
    has full 8-lane steps and a tail in the row sums."""
    rng = np.random.default_rng(sum(shape))
    C = shape[-1]
    x = (rng.normal(3.0, 2.0, size=shape)).astype(np.float32)
    scale, shift, dout = randn(rng, C), randn(rng, C), randn(rng, *shape)
    rx, rs, rb = torch_layer_norm_grads(torch, x, scale, shift, dout)
    worst = 0.0
    dx0, ds0, db0 = start(rng, rx), start(rng, rs), start(rng, rb)
    dx, ds, db = dx0.copy(), ds0.copy(), db0.copy()
    assert _C.layer_norm_backward(dout, x, scale, 1e-5, dx, ds, db) is None
    worst = max(worst, rel_err("dinp (+= onto values)", dx.astype(np.float64) - dx0, rx))
    worst = max(worst, rel_err("dscale (+= onto values)", ds.astype(np.float64) - ds0, rs))
    worst = max(worst, rel_err("dshift (+= onto values)", db.astype(np.float64) - db0, rb))
    dx, ds, db = np.zeros_like(x), np.zeros_like(scale), np.zeros_like(shift)
    for _ in range(2):
        _C.layer_norm_backward(dout, x, scale, 1e-5, dx, ds, db)
    worst = max(worst, rel_err("dinp x2", dx, 2 * rx))
    worst = max(worst, rel_err("dscale x2", ds, 2 * rs))
    worst = max(worst, rel_err("dshift x2", db, 2 * rb))
    for i, (name, ref) in enumerate([("dinp", rx), ("dscale", rs), ("dshift", rb)]):
        grads = [None, None, None]
        grads[i] = np.zeros(ref.shape, np.float32)
        _C.layer_norm_backward(dout, x, scale, 1e-5, *grads)
        worst = max(worst, rel_err(f"{name} alone", grads[i], ref))
    print(f"layer_norm_backward {shape}: max rel error {worst:.3g}")


def test_layer_norm_backward_is_deterministic_for_any_thread_count():
    rng = np.random.default_rng(13)
    x, scale, dout = randn(rng, 200, 768), randn(rng, 768), randn(rng, 200, 768)
    results = []
    for n in (1, 2, 2):
        with threads(n):
            g = [np.zeros_like(x), np.zeros_like(scale), np.zeros_like(scale)]
            _C.layer_norm_backward(dout, x, scale, 1e-5, *g)
            results.append(g)
    for g in results[1:]:
        for a, b in zip(results[0], g):
            np.testing.assert_array_equal(a, b)


# -- GELU, ReLU -----------------------------------------------------------------

def test_gelu_backward_matches_torch(torch, ref):
    """The derivative of the book's tanh-approximation GELU, on a range that
    covers both tails and on a random (2, 4, 3072) activation."""
    rng = np.random.default_rng(14)
    worst = 0.0
    for x in [np.linspace(-8, 8, 10001, dtype=np.float32), randn(rng, 2, 4, 3072, scale=2.0)]:
        dout = randn(rng, *x.shape)
        tx = t64(torch, x)
        ref.GELU()(tx).backward(torch.tensor(dout, dtype=torch.float64))
        dx0 = start(rng, tx.grad.numpy())
        dx = dx0.copy()
        assert _C.gelu_backward(dout, x, dx) is None
        worst = max(worst, rel_err(f"gelu dinp {x.shape}", dx.astype(np.float64) - dx0,
                                   tx.grad.numpy()))
        dx = np.zeros_like(x)
        _C.gelu_backward(dout, x, dx)
        _C.gelu_backward(dout, x, dx)
        worst = max(worst, rel_err(f"gelu dinp x2 {x.shape}", dx, 2 * tx.grad.numpy()))
    _C.gelu_backward(dout, x, None)
    print(f"gelu_backward: max rel error {worst:.3g}")


def test_relu_backward_matches_torch(torch):
    """Gradient 1 for x > 0 and 0 for x <= 0, including exactly 0, as torch.relu."""
    rng = np.random.default_rng(15)
    x = randn(rng, 7, 13)
    x[0, :5] = 0.0
    x[1, 0] = -0.0
    dout = randn(rng, 7, 13)
    tx = t64(torch, x)
    torch.relu(tx).backward(torch.tensor(dout, dtype=torch.float64))
    dx = np.zeros_like(x)
    _C.relu_backward(dout, x, dx)
    np.testing.assert_array_equal(dx, tx.grad.numpy().astype(np.float32))
    assert np.all(dx[0, :5] == 0) and dx[1, 0] == 0
    _C.relu_backward(dout, x, dx)
    np.testing.assert_array_equal(dx, 2 * tx.grad.numpy().astype(np.float32))
    _C.relu_backward(dout, x, None)
    print("relu_backward: max rel error 0 (exact)")


# -- Embedding ------------------------------------------------------------------

@pytest.mark.parametrize("V,C,idx_shape", [(50, 7, (2, 3)), (10, 72, (40,)), (50, 7, ()),
                                           (100, 768, (4, 512))])
def test_embedding_backward_matches_torch(torch, V, C, idx_shape):
    """Rows of repeated ids collect every occurrence's gradient; (4, 512) x 768 ids
    into 100 rows take the threaded path."""
    rng = np.random.default_rng(V + C)
    w = randn(rng, V, C)
    idx = rng.integers(0, V, size=idx_shape).astype(np.int64)
    dout = randn(rng, *idx_shape, C)
    tw = t64(torch, w)
    torch.nn.functional.embedding(torch.from_numpy(idx), tw).backward(
        torch.tensor(dout, dtype=torch.float64))
    expected = tw.grad.numpy()
    dw0 = start(rng, expected)
    dw = dw0.copy()
    assert _C.embedding_backward(dout, idx, dw) is None
    worst = rel_err("dweight (+= onto values)", dw.astype(np.float64) - dw0, expected)
    dw = np.zeros_like(w)
    _C.embedding_backward(dout, idx, dw)
    _C.embedding_backward(dout, idx, dw)
    worst = max(worst, rel_err("dweight x2", dw, 2 * expected))
    _C.embedding_backward(dout, idx, None)
    print(f"embedding_backward V={V} C={C} ids {idx_shape}: max rel error {worst:.3g}")


def test_embedding_backward_is_deterministic_for_any_thread_count():
    rng = np.random.default_rng(16)
    idx = rng.integers(0, 30, size=(8, 256)).astype(np.int64)
    dout = randn(rng, 8, 256, 768)
    results = []
    for n in (1, 2):
        with threads(n):
            dw = np.zeros((30, 768), np.float32)
            _C.embedding_backward(dout, idx, dw)
            results.append(dw)
    np.testing.assert_array_equal(results[0], results[1])


# -- Dropout --------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1,), (40,), (1000,), (2, 4, 768)])
def test_dropout_train_draws_what_nn_dropout_draws(p, shape):
    """After the same seed, dropout_train's out equals gptc.nn.Dropout's training
    output bit for bit, its noise is 0 or 1/(1-p) (as PyTorch's noise tensor),
    out = x * noise, and the generator ends in the same state."""
    rng = np.random.default_rng(17)
    x = randn(rng, *shape)
    gptc.manual_seed(123)
    expected = gptc.nn.Dropout(p).train()(x)
    state_after = gptc.get_rng_state()
    gptc.manual_seed(123)
    out, noise = _C.dropout_train(x, p, gptc.random.default_generator)
    np.testing.assert_array_equal(gptc.get_rng_state(), state_after)
    np.testing.assert_array_equal(out, expected)
    assert out.shape == noise.shape == x.shape and noise.dtype == np.float32
    keep_value = np.float32(1.0) / np.float32(1.0 - p) if p < 1 else np.float32(0)
    assert np.all((noise == 0) | (noise == keep_value))
    if p == 0.0:
        assert np.all(noise == 1)
    if p == 1.0:
        assert np.all(noise == 0)
    np.testing.assert_array_equal(out, x * noise)


def test_dropout_train_matches_the_c_dropout_and_torch_noise(torch):
    """dropout_train and _C.dropout use the same draws from a fresh generator; the
    kept scale is torch's float32 1 / (1 - p)."""
    x = np.ones((3, 1000), np.float32)
    for p in (0.1, 0.2, 0.5, 0.9):
        g1, g2 = gptc.Generator().manual_seed(7), gptc.Generator().manual_seed(7)
        out, noise = _C.dropout_train(x, p, g1)
        np.testing.assert_array_equal(out, _C.dropout(x, p, g2))
        np.testing.assert_array_equal(g1.get_state(), g2.get_state())
        scale = (torch.ones(1) / (1 - p)).item()   # how torch scales its noise
        assert set(np.unique(noise).tolist()) <= {0.0, np.float32(scale)}


def test_dropout_backward_matches_torch(torch):
    rng = np.random.default_rng(18)
    x, dout = randn(rng, 2, 4, 768), randn(rng, 2, 4, 768)
    out, noise = _C.dropout_train(x, 0.1, gptc.Generator().manual_seed(1))
    tx = t64(torch, x)
    (tx * torch.tensor(noise, dtype=torch.float64)).backward(torch.tensor(dout, dtype=torch.float64))
    dx0 = start(rng, tx.grad.numpy())
    dx = dx0.copy()
    assert _C.dropout_backward(dout, noise, dx) is None
    worst = rel_err("dropout dinp (+= onto values)", dx.astype(np.float64) - dx0, tx.grad.numpy())
    dx = np.zeros_like(x)
    _C.dropout_backward(dout, noise, dx)
    _C.dropout_backward(dout, noise, dx)
    worst = max(worst, rel_err("dropout dinp x2", dx, 2 * tx.grad.numpy()))
    _C.dropout_backward(dout, noise, None)
    print(f"dropout_backward: max rel error {worst:.3g}")


# -- Attention ------------------------------------------------------------------

def torch_attention(torch, q, k, v, num_heads, dout, noise=None):
    """The book's attention math in float64: (q k^T) masked with -inf above the
    diagonal, softmax of the scores / sqrt(head_dim), dropout as a fixed noise
    tensor, weights @ v, heads merged. Returns out, weights, dq, dk, dv."""
    B, T, C = q.shape
    hs = C // num_heads
    tq, tk, tv = t64(torch, q), t64(torch, k), t64(torch, v)
    heads = lambda t: t.view(B, T, num_heads, hs).transpose(1, 2)
    scores = heads(tq) @ heads(tk).transpose(2, 3)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, -torch.inf)
    weights = torch.softmax(scores / hs ** 0.5, dim=-1)
    dropped = weights if noise is None else weights * torch.tensor(noise, dtype=torch.float64)
    out = (dropped @ heads(tv)).transpose(1, 2).reshape(B, T, C)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return (out.detach().numpy(), weights.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(),
            tv.grad.numpy())


def attention_eval_through_mha(q, k, v, num_heads, p, generator):
    """The attention of MultiHeadAttention without gradients (the inference
    kernel, or with dropout the training kernel keeping nothing), reached through
    _C.multihead_attention with projections that select q, k and v out of one
    concatenated input (0/1 weights are exact), so it can be compared bit for bit."""
    B, T, C = q.shape
    x = np.concatenate([q, k, v], axis=-1)
    eye, zero = np.eye(C, dtype=np.float32), np.zeros((C, C), np.float32)
    wq = np.ascontiguousarray(np.concatenate([eye, zero, zero], axis=1))
    wk = np.ascontiguousarray(np.concatenate([zero, eye, zero], axis=1))
    wv = np.ascontiguousarray(np.concatenate([zero, zero, eye], axis=1))
    weights = {"W_query.weight": wq, "W_key.weight": wk, "W_value.weight": wv,
               "out_proj.weight": eye, "dropout.p": p}
    return _C.multihead_attention(x, weights, num_heads, generator)


ATTENTION_SHAPES = [(2, 16, 6, 12), (1, 1, 1, 64), (2, 16, 1, 64), (1, 1, 6, 12),
                    (3, 16, 6, 64), (2, 5, 2, 12)]


@pytest.mark.parametrize("p", [0.0, 0.1])
@pytest.mark.parametrize("B,T,NH,HS", ATTENTION_SHAPES)
def test_attention_train_and_backward_match_torch(torch, B, T, NH, HS, p):
    """attention_train's out equals the eval/inference kernel's (the same draws and
    generator state after; the values to float32 rounding, since the training
    kernel computes them as matrix products); att is the pre-dropout softmax with zeros
    above the diagonal; out, dq, dk, dv equal the book's math in torch with
    gptc's noise multiplied in."""
    rng = np.random.default_rng(B * 1000 + T * 100 + NH * 10 + HS)
    C = NH * HS
    q, k, v, dout = (randn(rng, B, T, C) for _ in range(4))
    g_train, g_eval = gptc.Generator().manual_seed(42), gptc.Generator().manual_seed(42)
    out, att, noise = _C.attention_train(q, k, v, NH, p, g_train)
    assert out.shape == (B, T, C) and att.shape == (B, NH, T, T)
    if p == 0.0:
        assert noise is None
    else:
        assert noise.shape == (B, NH, T, T)
        keep = np.float32(1.0) / np.float32(1.0 - p)
        assert np.all((noise == 0) | (noise == keep))
    report("out vs the eval kernel", out, attention_eval_through_mha(q, k, v, NH, p, g_eval),
           rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(g_train.get_state(), g_eval.get_state())
    assert np.all(att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)

    r_out, r_att, rq, rk, rv = torch_attention(torch, q, k, v, NH, dout, noise)
    worst = max(rel_err("out", out, r_out), rel_err("att", att, r_att))
    dq0, dk0, dv0 = start(rng, rq), start(rng, rk), start(rng, rv)
    dq, dk, dv = dq0.copy(), dk0.copy(), dv0.copy()
    assert _C.attention_backward(dout, q, k, v, att, noise, NH, dq, dk, dv) is None
    worst = max(worst, rel_err("dq (+= onto values)", dq.astype(np.float64) - dq0, rq))
    worst = max(worst, rel_err("dk (+= onto values)", dk.astype(np.float64) - dk0, rk))
    worst = max(worst, rel_err("dv (+= onto values)", dv.astype(np.float64) - dv0, rv))
    dq, dk, dv = (np.zeros_like(q) for _ in range(3))
    for _ in range(2):
        _C.attention_backward(dout, q, k, v, att, noise, NH, dq, dk, dv)
    worst = max(worst, rel_err("dq x2", dq, 2 * rq))
    worst = max(worst, rel_err("dk x2", dk, 2 * rk))
    worst = max(worst, rel_err("dv x2", dv, 2 * rv))
    for i, (name, ref) in enumerate([("dq", rq), ("dk", rk), ("dv", rv)]):
        grads = [None, None, None]
        grads[i] = np.zeros(ref.shape, np.float32)
        _C.attention_backward(dout, q, k, v, att, noise, NH, *grads)
        worst = max(worst, rel_err(f"{name} alone", grads[i], ref))
    _C.attention_backward(dout, q, k, v, att, noise, NH, None, None, None)
    print(f"attention B={B} T={T} NH={NH} HS={HS} p={p}: max rel error {worst:.3g}")


def test_attention_train_with_dropout_one_drops_everything(torch):
    """p = 1: noise all zero (no draws), out zero, all gradients zero."""
    rng = np.random.default_rng(19)
    q, k, v, dout = (randn(rng, 2, 4, 12) for _ in range(4))
    g = gptc.Generator().manual_seed(3)
    state = g.get_state()
    out, att, noise = _C.attention_train(q, k, v, 2, 1.0, g)
    np.testing.assert_array_equal(g.get_state(), state)
    assert np.all(noise == 0) and np.all(out == 0)
    grads = [np.zeros_like(q) for _ in range(3)]
    _C.attention_backward(dout, q, k, v, att, noise, 2, *grads)
    assert all(np.all(gr == 0) for gr in grads)


def test_attention_backward_is_deterministic_for_any_thread_count():
    rng = np.random.default_rng(20)
    q, k, v, dout = (randn(rng, 3, 16, 72) for _ in range(4))
    out, att, noise = _C.attention_train(q, k, v, 6, 0.1, gptc.Generator().manual_seed(0))
    results = []
    for n in (1, 2, 2):
        with threads(n):
            np.testing.assert_array_equal(
                _C.attention_train(q, k, v, 6, 0.1, gptc.Generator().manual_seed(0))[0], out)
            grads = [np.zeros_like(q) for _ in range(3)]
            _C.attention_backward(dout, q, k, v, att, noise, 6, *grads)
            results.append(grads)
    for g in results[1:]:
        for a, b in zip(results[0], g):
            np.testing.assert_array_equal(a, b)


def torch_attention_halves(torch, q, k, weights, v, num_heads, datt, dout):
    """The book's two halves of attention in float64, each on its own: the causal
    softmax weights of q and k, backpropagated from datt; and weights @ v per head
    with the heads merged, backpropagated from dout. Returns att, dq, dk, out,
    dweights, dv."""
    B, T, C = q.shape
    hs = C // num_heads
    tq, tk, tw, tv = t64(torch, q), t64(torch, k), t64(torch, weights), t64(torch, v)
    heads = lambda t: t.view(B, T, num_heads, hs).transpose(1, 2)
    scores = heads(tq) @ heads(tk).transpose(2, 3)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    att = torch.softmax(scores.masked_fill(mask, -torch.inf) / hs ** 0.5, dim=-1)
    att.backward(torch.tensor(datt, dtype=torch.float64))
    out = (tw @ heads(tv)).transpose(1, 2).reshape(B, T, C)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return (att.detach().numpy(), tq.grad.numpy(), tk.grad.numpy(), out.detach().numpy(),
            tw.grad.numpy(), tv.grad.numpy())


@pytest.mark.parametrize("B,T,NH,HS", ATTENTION_SHAPES)
def test_attention_halves_and_their_backwards_match_torch(torch, B, T, NH, HS):
    """attention_weights is attention_train's att bit for bit; attention_context of
    weights that are not causal (a hook may return anything) is weights @ v per head.
    Both backwards give torch's gradients (datt counts only up to the diagonal, where
    the weights are not constant 0), accumulate (+=) onto what the arrays held, and
    skip a gradient passed as None."""
    rng = np.random.default_rng(B * 1000 + T * 100 + NH * 10 + HS + 7)
    C = NH * HS
    q, k, v, dout = (randn(rng, B, T, C) for _ in range(4))
    weights, datt = randn(rng, B, NH, T, T), randn(rng, B, NH, T, T)
    att = _C.attention_weights(q, k, NH)
    np.testing.assert_array_equal(att, _C.attention_train(q, k, v, NH, 0.0, gptc.Generator())[1])
    out = _C.attention_context(weights, v, NH)
    r_att, rq, rk, r_out, rw, rv = torch_attention_halves(torch, q, k, weights, v, NH, datt,
                                                          dout)
    worst = max(rel_err("att", att, r_att), rel_err("out", out, r_out))
    grads = {"dq": rq, "dk": rk, "dweights": rw, "dv": rv}
    starts = {name: start(rng, ref) for name, ref in grads.items()}
    acc = {name: value.copy() for name, value in starts.items()}
    assert _C.attention_weights_backward(datt, q, k, att, NH, acc["dq"], acc["dk"]) is None
    assert _C.attention_context_backward(dout, weights, v, NH, acc["dweights"], acc["dv"]) is None
    for name, ref in grads.items():
        worst = max(worst, rel_err(f"{name} (+= onto values)",
                                   acc[name].astype(np.float64) - starts[name], ref))
    for i, name in enumerate(("dq", "dk")):
        alone = [None, None]
        alone[i] = np.zeros(q.shape, np.float32)
        _C.attention_weights_backward(datt, q, k, att, NH, *alone)
        worst = max(worst, rel_err(f"{name} alone", alone[i], grads[name]))
    for i, name in enumerate(("dweights", "dv")):
        alone = [None, None]
        alone[i] = np.zeros(grads[name].shape, np.float32)
        _C.attention_context_backward(dout, weights, v, NH, *alone)
        worst = max(worst, rel_err(f"{name} alone", alone[i], grads[name]))
    _C.attention_weights_backward(datt, q, k, att, NH, None, None)
    _C.attention_context_backward(dout, weights, v, NH, None, None)
    print(f"attention halves B={B} T={T} NH={NH} HS={HS}: max rel error {worst:.3g}")


def test_attention_halves_are_deterministic_for_any_thread_count():
    rng = np.random.default_rng(21)
    q, k, v, dout = (randn(rng, 3, 16, 72) for _ in range(4))
    datt = randn(rng, 3, 6, 16, 16)
    results = []
    for n in (1, 2, 2):
        with threads(n):
            att = _C.attention_weights(q, k, 6)
            out = _C.attention_context(att, v, 6)
            grads = [np.zeros_like(q), np.zeros_like(q), np.zeros_like(datt), np.zeros_like(v)]
            _C.attention_weights_backward(datt, q, k, att, 6, grads[0], grads[1])
            _C.attention_context_backward(dout, att, v, 6, grads[2], grads[3])
            results.append([att, out] + grads)
    for result in results[1:]:
        for a, b in zip(results[0], result):
            np.testing.assert_array_equal(a, b)


# -- Losses ---------------------------------------------------------------------

@pytest.mark.parametrize("N,V,spread", [(4, 50257, 30.0), (7, 13, 1.0), (3, 1, 1.0),
                                        (1, 1000, 100.0), (64, 1000, 3.0)])
def test_cross_entropy_matches_torch(torch, N, V, spread):
    """Per-row losses equal F.cross_entropy(reduction='none') and the gradient
    equals torch's for a random upstream gradient, also for logits in the
    hundreds (the row maximum is subtracted)."""
    rng = np.random.default_rng(N + V)
    logits = randn(rng, N, V, scale=spread)
    targets = rng.integers(0, V, size=N).astype(np.int64)
    dlosses = randn(rng, N)
    tl = t64(torch, logits)
    ref_losses = torch.nn.functional.cross_entropy(tl, torch.from_numpy(targets), reduction="none")
    ref_losses.backward(torch.tensor(dlosses, dtype=torch.float64))
    losses = _C.cross_entropy(logits, targets)
    assert losses.shape == (N,) and losses.dtype == np.float32
    worst = rel_err("losses", losses, ref_losses.detach().numpy())
    dl0 = start(rng, tl.grad.numpy())
    dl = dl0.copy()
    assert _C.cross_entropy_backward(dlosses, logits, targets, dl) is None
    worst = max(worst, rel_err("dlogits (+= onto values)", dl.astype(np.float64) - dl0,
                               tl.grad.numpy()))
    dl = np.zeros_like(logits)
    _C.cross_entropy_backward(dlosses, logits, targets, dl)
    _C.cross_entropy_backward(dlosses, logits, targets, dl)
    worst = max(worst, rel_err("dlogits x2", dl, 2 * tl.grad.numpy()))
    _C.cross_entropy_backward(dlosses, logits, targets, None)
    print(f"cross_entropy N={N} V={V}: max rel error {worst:.3g}")


def test_cross_entropy_mean_of_a_batch(torch):
    """The mean loss over (B, T) rows and its gradient (dlosses = 1 / N), as a
    training step uses it."""
    rng = np.random.default_rng(21)
    logits, targets = randn(rng, 2 * 4, 1000, scale=2.0), rng.integers(0, 1000, 8)
    tl = t64(torch, logits)
    loss = torch.nn.functional.cross_entropy(tl, torch.from_numpy(targets))
    loss.backward()
    got = float(_C.cross_entropy(logits, targets).astype(np.float64).mean())
    assert abs(got - loss.item()) <= 1e-6 * abs(loss.item())
    dl = np.zeros_like(logits)
    _C.cross_entropy_backward(np.full(8, 1 / 8, np.float32), logits, targets, dl)
    print(f"cross_entropy mean: loss {got:.6f} vs torch {loss.item():.6f}")
    rel_err("dlogits (mean)", dl, tl.grad.numpy())


@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 4, 768)])
def test_mse_backward_matches_torch(torch, shape):
    """dpred of F.mse_loss (mean: scale = dloss / n; sum: scale = dloss)."""
    rng = np.random.default_rng(22)
    pred, target = randn(rng, *shape), randn(rng, *shape)
    worst = 0.0
    for reduction, dloss in [("mean", 1.0), ("mean", 0.37), ("sum", 2.5)]:
        tp = t64(torch, pred)
        loss = torch.nn.functional.mse_loss(tp, torch.tensor(target, dtype=torch.float64),
                                            reduction=reduction)
        loss.backward(torch.tensor(dloss, dtype=torch.float64))
        scale = dloss / pred.size if reduction == "mean" else dloss
        dp0 = start(rng, tp.grad.numpy())
        dp = dp0.copy()
        assert _C.mse_backward(pred, target, scale, dp) is None
        worst = max(worst, rel_err(f"dpred {reduction} (+= onto values)",
                                   dp.astype(np.float64) - dp0, tp.grad.numpy()))
        dp = np.zeros_like(pred)
        _C.mse_backward(pred, target, scale, dp)
        _C.mse_backward(pred, target, scale, dp)
        worst = max(worst, rel_err(f"dpred {reduction} x2", dp, 2 * tp.grad.numpy()))
    _C.mse_backward(pred, target, 1.0, None)
    print(f"mse_backward {shape}: max rel error {worst:.3g}")


def test_elementwise_gradients_may_accumulate_in_place():
    """An elementwise backward may add into the very array holding dout (each
    element is read before it is written); a partial overlap is refused."""
    rng = np.random.default_rng(24)
    x, dout = randn(rng, 100), randn(rng, 100)
    # the same sum into a separate copy of dout: each element is computed as
    # one multiply-add onto its old value, fused where the kernel set has FMA
    expected = dout.copy()
    _C.gelu_backward(dout, x, expected)
    d = dout.copy()
    _C.gelu_backward(d, x, d)
    np.testing.assert_array_equal(d, expected)
    buf = randn(rng, 101)
    with pytest.raises(ValueError, match=r"dinp must not share memory with dout"):
        _C.gelu_backward(buf[:100], x, buf[1:])


def test_scalar_and_empty_inputs():
    """0-d arrays and empty dimensions go through every binding without touching
    memory they do not own (this file also runs under ASan/UBSan in CI)."""
    x0, d0 = np.array(0.5, np.float32), np.array(2.0, np.float32)
    for fn in (_C.gelu_backward, _C.relu_backward, _C.dropout_backward):
        g = np.zeros((), np.float32)
        fn(d0, x0, g)
        assert g.shape == () and np.isfinite(g)
    g = np.zeros((), np.float32)
    _C.mse_backward(x0, d0, 1.0, g)
    assert g == np.float32(2 * (0.5 - 2.0))
    out, noise = _C.dropout_train(x0, 0.5, gptc.Generator())
    assert out.shape == noise.shape == ()
    empty = np.zeros((0,), np.float32)
    _C.gelu_backward(empty, empty, empty.copy())
    # M = 0, K = 0 and N = 0 Linear gradients: sums over nothing add nothing
    for M, K, N in [(0, 5, 3), (4, 0, 3), (4, 5, 0)]:
        x, w, dout = np.ones((M, K), np.float32), np.ones((N, K), np.float32), np.ones((M, N), np.float32)
        dx, dw, db = np.full((M, K), 7, np.float32), np.full((N, K), 7, np.float32), np.full(N, 7, np.float32)
        _C.linear_backward(dout, x, w, dx, dw, db)
        np.testing.assert_array_equal(dx, np.full((M, K), 7 + N, np.float32))
        np.testing.assert_array_equal(dw, np.full((N, K), 7 + M, np.float32))
        np.testing.assert_array_equal(db, np.full(N, 7 + M, np.float32))
    dw = np.zeros((5, 3), np.float32)
    _C.embedding_backward(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), dw)
    assert _C.cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)).shape == (0,)
    q = np.zeros((2, 0, 4), np.float32)
    out, att, noise = _C.attention_train(q, q, q, 2, 0.1, gptc.Generator())
    assert out.shape == (2, 0, 4) and att.shape == noise.shape == (2, 2, 0, 0)
    _C.attention_backward(q, q, q, q, att, noise, 2, q.copy(), q.copy(), q.copy())
    assert _C.attention_weights(q, q, 2).shape == (2, 2, 0, 0)
    assert _C.attention_context(att, q, 2).shape == (2, 0, 4)
    _C.attention_weights_backward(att, q, q, att, 2, q.copy(), q.copy())
    _C.attention_context_backward(q, att, q, 2, att.copy(), q.copy())
