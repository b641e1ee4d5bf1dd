"""gptc's random numbers against PyTorch's default CPU generator.

What is proved here, and how:

* Constant tests (no torch needed) pin a few values that torch 2.13 printed
  for ``torch.manual_seed(123)``, and check the layout of the state bytes.
* Parity tests (skipped without torch) draw the same things from torch and
  from gptc after the same seed and require identical bits:

  - ``rand``: mt19937 seeding, 24-bit floats, draw order;
  - ``randn`` on BOTH PyTorch code paths: n < 16 uses a double-precision
    Box-Muller with a cached spare (glibc log1p/sin/cos, same libm here);
    n >= 16 uses the AVX2 kernel with Cephes-style float log/sincos, which
    gptc reproduces operation by operation (including the FMAs the compiler
    put in), so it is bit-exact too - the tests assert equality, and print
    the max ulp difference (0);
  - the cached spare across mixed calls;
  - ``get_state``/``set_state`` against ``torch.get_rng_state()`` bytes,
    in both directions, and the same accept/reject decisions for bad bytes;
  - ``nn.Dropout`` in training mode (PyTorch's non-MKL Bernoulli path, which
    is what it runs on non-Intel CPUs) and ``nn.Linear`` initialisation.
"""
import struct

import numpy as np
import pytest

import gptc
from conftest import is_intel_cpu

STATE_BYTES = 5056
SEEDS = [0, 1, 123, 2**32 + 5, 0xDEADBEEFCAFEF00D]
SIZES = list(range(1, 41)) + [1000]
SHAPES = [(3, 5), (2, 4, 768)]


# ---------------------------------------------------------------- helpers

def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _as_f32(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


def _ulp_diff(a, b):
    """Distance in float32 ulps (0 for identical bits, also across +-0)."""
    def ordered(x):
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(ordered(a) - ordered(b))


def _assert_same_bits(expected, got, what):
    expected = np.asarray(expected, dtype=np.float32)
    got = np.asarray(got)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    d = _ulp_diff(expected, got)
    worst = int(d.max()) if d.size else 0
    assert np.array_equal(_bits(expected), _bits(got)), (
        f"{what}: {int((d > 0).sum())} of {d.size} values differ, max {worst} ulp")
    return worst


def _torch():
    return pytest.importorskip("torch")


def _torch_state_bytes(torch):
    return torch.get_rng_state().numpy().tobytes()


# ------------------------------------------------- constants, no torch needed

# torch 2.13: torch.manual_seed(123); torch.rand(5)
RAND5_SEED123 = [0x3E979BFC, 0x3F043D6D, 0x3E80DAFC, 0x3F304542, 0x3D977EE0]
#   = [0.29611194, 0.51656228, 0.25167072, 0.68855679, 0.07397246]
# torch.manual_seed(123); torch.randn(3)       (n < 16: double Box-Muller)
RANDN3_SEED123 = [0xBDE448DF, 0x3DF680D9, 0xBEBD40BC]
#   = [-0.11146712, 0.12036294, -0.36963451]
# torch.manual_seed(123); torch.randn(20)[:4]  (n >= 16: vectorised path)
RANDN20_HEAD_SEED123 = [0x3EACBBC9, 0xBE360B3B, 0xBE9B67F8, 0xBF1687F2]
#   = [0.33737019, -0.17777722, -0.30352759, -0.58801186]
# torch.manual_seed(123); F.dropout(torch.ones(12), 0.5, True)  (non-MKL path)
DROPOUT12_SEED123 = [2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 2.0]


def test_rand_constants_seed_123():
    """gptc.rand(5) after manual_seed(123) gives torch's exact first values."""
    gptc.manual_seed(123)
    _assert_same_bits(_as_f32(RAND5_SEED123), gptc.rand(5), "rand(5)")


def test_randn_constants_both_paths_seed_123():
    """randn(3) (scalar path) and randn(20) (vectorised path) match torch's
    literal values after manual_seed(123)."""
    gptc.manual_seed(123)
    _assert_same_bits(_as_f32(RANDN3_SEED123), gptc.randn(3), "randn(3)")
    gptc.manual_seed(123)
    _assert_same_bits(_as_f32(RANDN20_HEAD_SEED123), gptc.randn(20)[:4], "randn(20)[:4]")


def test_dropout_constants_seed_123():
    """A training-mode Dropout(0.5) on ones after manual_seed(123) gives the
    mask torch's non-MKL path gives, scaled by 2."""
    gptc.manual_seed(123)
    drop = gptc.nn.Dropout(0.5)
    drop.train()
    out = drop(np.ones(12, dtype=np.float32))
    _assert_same_bits(np.array(DROPOUT12_SEED123, dtype=np.float32), out, "dropout(ones(12))")


def test_shapes_dtypes_and_generator_argument():
    """rand/randn return float32 arrays of the requested shape, and an
    explicit Generator is used instead of the default one."""
    for fn in (gptc.rand, gptc.randn):
        a = fn(2, 3, 4)
        assert a.shape == (2, 3, 4) and a.dtype == np.float32
        assert fn(0).shape == (0,)
    g1 = gptc.Generator().manual_seed(7)
    g2 = gptc.Generator().manual_seed(7)
    gptc.manual_seed(8)
    default_before = gptc.get_rng_state().tobytes()
    _assert_same_bits(gptc.rand(50, generator=g1), gptc.rand(50, generator=g2), "same-seed generators")
    assert gptc.get_rng_state().tobytes() == default_before, "explicit generator touched the default one"


def test_initial_seed_keeps_all_64_bits():
    """initial_seed() returns the full 64-bit seed even though only its low
    32 bits seed the twister (so seeds 5 and 2**32+5 give the same stream)."""
    gptc.manual_seed(2**32 + 5)
    assert gptc.initial_seed() == 2**32 + 5
    a = gptc.rand(10)
    g = gptc.Generator()
    assert g.manual_seed(5) is g
    assert g.initial_seed() == 5
    _assert_same_bits(a, gptc.rand(10, generator=g), "seed 5 vs 2**32+5")


def test_state_layout_after_seeding():
    """get_state() is 5056 uint8 bytes laid out as PyTorch's CPU generator
    state: seed, left=1, seeded=1, next=0, 624 words widened to 64 bits,
    no cached normals, zero padding."""
    seed = 0x0123456789ABCDEF
    st = gptc.Generator().manual_seed(seed).get_state()
    assert isinstance(st, np.ndarray) and st.dtype == np.uint8 and st.shape == (STATE_BYTES,)
    b = st.tobytes()
    the_seed, left, seeded, nxt = struct.unpack_from("<QiiQ", b, 0)
    assert (the_seed, left, seeded, nxt) == (seed, 1, 1, 0)
    words = struct.unpack_from("<624Q", b, 24)
    assert words[0] == seed & 0xFFFFFFFF
    assert words[1] == (1812433253 * (words[0] ^ (words[0] >> 30)) + 1) & 0xFFFFFFFF
    assert all(w < 2**32 for w in words)
    nx, ny, nrho, nvalid = struct.unpack_from("<dddi", b, 5016)
    assert (nx, ny, nrho, nvalid) == (0.0, 0.0, 0.0, 0)
    assert b[5044:5048] == b"\0" * 4 and b[5048:] == b"\0" * 8


def test_state_round_trip_continues_stream():
    """A state saved mid-stream, with a cached normal spare pending, restores
    to the identical continuation (both randn paths and rand)."""
    g = gptc.Generator().manual_seed(42)
    gptc.randn(3, generator=g)      # leaves a cached double spare
    saved = g.get_state()
    assert struct.unpack_from("<i", saved.tobytes(), 5040)[0] == 1
    first = [gptc.randn(1, generator=g), gptc.randn(17, generator=g), gptc.rand(9, generator=g)]
    h = gptc.Generator().manual_seed(0)
    h.set_state(saved.tobytes())    # bytes are accepted as well as arrays
    again = [gptc.randn(1, generator=h), gptc.randn(17, generator=h), gptc.rand(9, generator=h)]
    for a, b in zip(first, again):
        _assert_same_bits(a, b, "continuation")


def _mutated(state, fmt, offset, value):
    b = bytearray(np.asarray(state, dtype=np.uint8).tobytes())
    struct.pack_into(fmt, b, offset, value)
    return np.frombuffer(bytes(b), dtype=np.uint8)


def test_set_state_rejects_bad_size_and_invalid_fields():
    """Wrong sizes and invalid left/next/seeded values raise ValueError and
    leave the generator unchanged."""
    g = gptc.Generator().manual_seed(3)
    gptc.rand(10, generator=g)
    good = g.get_state()
    bad = [np.zeros(STATE_BYTES - 8, dtype=np.uint8), np.zeros(STATE_BYTES + 1, dtype=np.uint8),
           _mutated(good, "<i", 8, 0), _mutated(good, "<i", 8, 625), _mutated(good, "<i", 8, -1),
           _mutated(good, "<i", 12, 0), _mutated(good, "<Q", 16, 625)]
    for state in bad:
        with pytest.raises(ValueError):
            g.set_state(state)
        assert g.get_state().tobytes() == good.tobytes()
    # accepted as PyTorch accepts them: next is narrowed to 32 bits first
    g.set_state(_mutated(good, "<Q", 16, 2**32))
    assert struct.unpack_from("<Q", g.get_state().tobytes(), 16)[0] == 0


# ------------------------------------------------------ parity with torch

def test_rand_matches_torch():
    """torch.rand(n) == gptc.rand(n) bit for bit, for several seeds (incl.
    >32-bit ones), every n in 1..40, 1000 and 2-d/3-d shapes."""
    torch = _torch()
    worst = 0
    for seed in SEEDS:
        for shape in [(n,) for n in SIZES] + SHAPES:
            torch.manual_seed(seed)
            gptc.manual_seed(seed)
            worst = max(worst, _assert_same_bits(torch.rand(*shape).numpy(), gptc.rand(*shape),
                                                 f"rand{shape} seed {seed}"))
            assert gptc.initial_seed() == torch.initial_seed() == seed
    print(f"rand: max ulp difference {worst}")


def test_randn_matches_torch_both_paths():
    """torch.randn == gptc.randn bit for bit on the scalar path (n < 16,
    double Box-Muller with cached spare) and the vectorised path (n >= 16,
    float Cephes log/sincos as in PyTorch's AVX2 kernel, incl. the re-drawn
    last 16 when n % 16 != 0)."""
    torch = _torch()
    worst = {"scalar (n<16)": 0, "vectorised (n>=16)": 0}
    for seed in SEEDS:
        for shape in [(n,) for n in SIZES] + SHAPES:
            torch.manual_seed(seed)
            gptc.manual_seed(seed)
            expected = torch.randn(*shape).numpy()
            got = gptc.randn(*shape)
            path = "scalar (n<16)" if expected.size < 16 else "vectorised (n>=16)"
            d = _ulp_diff(expected, got)
            worst[path] = max(worst[path], int(d.max()))
            _assert_same_bits(expected, got, f"randn{shape} seed {seed}")
    print(f"randn: max ulp difference per path {worst}")


def test_randn_large_matches_torch():
    """One million normals from the vectorised path match torch exactly (a
    wide sample of the polynomial log/sincos emulation)."""
    torch = _torch()
    torch.manual_seed(2024)
    gptc.manual_seed(2024)
    expected = torch.randn(1_000_000).numpy()
    got = gptc.randn(1_000_000)
    worst = int(_ulp_diff(expected, got).max())
    print(f"randn(1e6): max ulp difference {worst}")
    _assert_same_bits(expected, got, "randn(1e6)")


def test_mixed_calls_and_cached_spare_match_torch():
    """A sequence of mixed calls on one generator (the n < 16 path caches a
    spare that the n >= 16 path and rand do not touch) matches torch, and
    the state bytes agree after every call."""
    torch = _torch()
    calls = [("randn", 3), ("randn", 20), ("rand", 7), ("randn", 1), ("randn", 5), ("randn", 16),
             ("rand", 700), ("randn", 15), ("randn", 31), ("randn", 1), ("randn", 2)]
    for seed in (0, 123, 2**40 + 1):
        tg = torch.Generator().manual_seed(seed)
        g = gptc.Generator().manual_seed(seed)
        for name, n in calls:
            expected = getattr(torch, name)(n, generator=tg).numpy()
            got = getattr(gptc, name)(n, generator=g)
            _assert_same_bits(expected, got, f"{name}({n}) seed {seed}")
            assert g.get_state().tobytes() == tg.get_state().numpy().tobytes(), f"state after {name}({n})"
    print("mixed calls: max ulp difference 0")


def test_state_bytes_move_both_ways_with_torch():
    """torch.get_rng_state() loads into gptc and continues torch's stream;
    gptc's state loads into torch (and as a torch ByteTensor into gptc) and
    continues gptc's stream."""
    torch = _torch()
    torch.manual_seed(11)
    torch.randn(3)
    torch.rand(100)
    g = gptc.Generator()
    g.set_state(torch.get_rng_state())          # a torch ByteTensor, via __array__
    assert g.get_state().tobytes() == _torch_state_bytes(torch)
    for fn, n in (("randn", 1), ("randn", 40), ("rand", 9), ("randn", 3)):
        _assert_same_bits(getattr(torch, fn)(n).numpy(), getattr(gptc, fn)(n, generator=g), f"t->g {fn}")

    h = gptc.Generator().manual_seed(99)
    gptc.randn(7, generator=h)
    gptc.rand(13, generator=h)
    torch.set_rng_state(torch.from_numpy(h.get_state().copy()))
    assert _torch_state_bytes(torch) == h.get_state().tobytes()
    for fn, n in (("randn", 40), ("randn", 3), ("rand", 9)):
        _assert_same_bits(getattr(torch, fn)(n).numpy(), getattr(gptc, fn)(n, generator=h), f"g->t {fn}")
    print("state transfer: max ulp difference 0")


def test_set_state_validation_matches_torch():
    """For each corrupted field gptc accepts or rejects the bytes exactly as
    torch.set_rng_state does, and accepted states give the same image."""
    torch = _torch()
    torch.manual_seed(3)
    torch.rand(10)
    good = torch.get_rng_state().numpy().copy()
    cases = [("<i", 8, 0), ("<i", 8, -1), ("<i", 8, 1), ("<i", 8, 624), ("<i", 8, 625),
             ("<i", 12, 0), ("<i", 12, 2), ("<Q", 16, 625), ("<Q", 16, 2**32),
             ("<Q", 16, 2**32 + 625), ("<Q", 24 + 8 * 5, 0xABCDEF0112345678),
             ("<i", 5040, 2), ("<B", 5052, 2), ("<I", 5044, 0xFFFFFFFF)]
    for fmt, offset, value in cases:
        data = _mutated(good, fmt, offset, value)
        try:
            torch.set_rng_state(torch.from_numpy(data.copy()))
            torch_ok = True
        except RuntimeError:
            torch_ok = False
        g = gptc.Generator().manual_seed(1)
        try:
            g.set_state(data)
            gptc_ok = True
        except ValueError:
            gptc_ok = False
        assert gptc_ok == torch_ok, f"field at {offset} = {value}: torch {torch_ok}, gptc {gptc_ok}"
        if torch_ok:
            assert g.get_state().tobytes() == _torch_state_bytes(torch)


def test_linear_init_matches_torch():
    """nn.Linear(768, 768) after the same seed: weight = uniform_(-b, b) with
    kaiming_uniform_(a=sqrt(5))'s bound and bias = U(-1/sqrt(768), 1/sqrt(768))
    are bit-identical to torch's (float bounds, one rounding per value, the
    upper-bound clamp)."""
    torch = _torch()
    if not hasattr(gptc.nn, "Linear"):
        pytest.skip("gptc.nn.Linear not available")
    worst = 0
    for seed in (123, 0):
        torch.manual_seed(seed)
        ref = torch.nn.Linear(768, 768)
        gptc.manual_seed(seed)
        lin = gptc.nn.Linear(768, 768)
        worst = max(worst, _assert_same_bits(ref.weight.detach().numpy(), np.asarray(lin.weight), "weight"))
        worst = max(worst, _assert_same_bits(ref.bias.detach().numpy(), np.asarray(lin.bias), "bias"))
    print(f"Linear init: max ulp difference {worst}")


@pytest.mark.skipif(is_intel_cpu(),
                    reason="on Intel CPUs PyTorch's bernoulli_ (used by dropout) takes its MKL "
                           "path, a different random stream that gptc does not reproduce")
def test_dropout_matches_torch():
    """nn.Dropout(p) in training mode equals torch.nn.Dropout(p) after the
    same seed: same zeroed positions, same values (x * 1.0f/float(1-p)) bit
    for bit, on the shapes the model uses."""
    torch = _torch()
    worst = 0
    for seed in (0, 123, 2**32 + 5):
        shapes = [(n,) for n in range(1, 41)] + [(1000,), (3, 5), (2, 4, 768), (2, 12, 4, 4)]
        for shape in shapes:
            for p in ((0.1, 0.5, 0.0, 0.25, 0.9) if len(shape) > 1 else (0.1, 0.5)):
                x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
                torch.manual_seed(seed)
                ref = torch.nn.Dropout(p)
                ref.train()
                expected = ref(torch.from_numpy(x.copy())).numpy()
                gptc.manual_seed(seed)
                drop = gptc.nn.Dropout(p)
                drop.train()
                got = drop(x)
                assert np.array_equal(expected == 0, np.asarray(got) == 0), f"mask {shape} p={p}"
                worst = max(worst, _assert_same_bits(expected, got, f"dropout {shape} p={p} seed {seed}"))
                # both generators must have consumed the same number of draws
                assert gptc.get_rng_state().tobytes() == _torch_state_bytes(torch)
    print(f"dropout: max ulp difference {worst}")


@pytest.mark.parametrize("n", [0, 1, 2, 10, 1000, 100_000])
def test_randperm_is_torchs(torch, n):
    """gptc.randperm(n) after a seed is torch.randperm(n) after the same seed, and
    it consumes the generator as PyTorch does."""
    for seed in (0, 123, 2 ** 40 + 7):
        torch.manual_seed(seed)
        gptc.manual_seed(seed)
        expected = torch.randperm(n).numpy()
        got = gptc.randperm(n)
        assert got.dtype == np.int64 and got.shape == (n,)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(gptc.rand(3), torch.rand(3).numpy())


def test_randperm_rejects_bad_n():
    with pytest.raises(ValueError, match=r"randperm expects 0 <= n < 2\*\*32, got n=-1"):
        gptc.randperm(-1)
    with pytest.raises(TypeError, match="randperm\\(\\) expects an integer n, got float"):
        gptc.randperm(3.0)
    with pytest.raises(TypeError, match="generator must be a gptc.Generator"):
        gptc.randperm(3, generator=object())


@pytest.mark.skipif(is_intel_cpu(),
                    reason="on Intel CPUs PyTorch's bernoulli_ takes its MKL path, a different "
                           "random stream that gptc does not reproduce")
def test_bernoulli_threshold_and_block_boundaries_match_torch():
    """bernoulli_ decides u < p on the 53-bit integer behind u (csrc/rng.c): for
    probabilities on and next to the 2^-53 grid, tiny and next to 1, and for
    lengths that end on, before and after a twist of the 624-word state, from a
    fresh seed and from the middle of a block, the draws equal torch's and both
    generators end in the same state."""
    torch = _torch()
    grid = 2.0 ** -53
    probabilities = [0.1, 1 / 3, 0.5, 0.9, 1 - grid, 1 - 2 * grid, 0.5 + grid, 0.5 - grid / 2,
                     grid, 3 * grid, 1e-300, 0.75 + 0.5 * grid]
    draws = 0
    for seed in (0, 123):
        tg = torch.Generator().manual_seed(seed)
        g = gptc.Generator().manual_seed(seed)
        for n in (1, 311, 312, 313, 623, 624, 625, 5000):
            for p in probabilities:
                expected = torch.empty(n).bernoulli_(p, generator=tg).numpy()
                got = np.empty(n, np.float32)
                gptc._C.bernoulli_(got, p, g)
                assert np.array_equal(expected, got), f"bernoulli_({p!r}) of {n}, seed {seed}"
                assert g.get_state().tobytes() == tg.get_state().numpy().tobytes()
                draws += n
    print(f"bernoulli_: {draws} draws equal to torch's")


def _temper(y):
    y ^= y >> 11
    y ^= (y << 7) & 0x9d2c5680
    y ^= (y << 15) & 0xefc60000
    return (y ^ (y >> 18)) & 0xffffffff


def _untemper(y):
    """The state word that _temper turns into y (each step of it inverted)."""
    y ^= y >> 18
    y ^= (y << 15) & 0xefc60000
    t = y
    for _ in range(5):
        t = y ^ ((t << 7) & 0x9d2c5680)
    t &= 0xffffffff
    y = t
    for _ in range(3):
        t = y ^ (t >> 11)
    return t


def test_bernoulli_decides_exactly_at_the_threshold():
    """Draws placed on, below and above each probability's threshold (a state
    whose next words temper into chosen 53-bit integers x): bernoulli_ succeeds
    exactly where the double x * 2^-53 is below p, as PyTorch's comparison does."""
    grid = 2.0 ** -53
    probabilities = [0.1, 1 / 3, 0.5, 0.9, 1 - grid, 0.5 + grid, grid, 3 * grid, 1e-300,
                     1.0, 0.0]
    xs = []
    for p in probabilities:
        edge = int(p / grid)              # p * 2^53 is exact, so is its floor
        xs += [min(max(x, 0), (1 << 53) - 1) for x in (edge - 1, edge, edge + 1)]
    xs += [(1 << 53) - 1, 0]
    words = []
    for x in xs:
        hi = (x >> 32) | (0xffe00000 if len(words) % 4 else 0)   # bits above 53 are ignored
        words += [hi, x & 0xffffffff]
    assert all(_temper(_untemper(w)) == w for w in words)
    state = bytearray(gptc.Generator().manual_seed(1).get_state().tobytes())
    state[8:12] = (624).to_bytes(4, "little")          # left: no twist before word 623
    state[16:24] = (1).to_bytes(8, "little")           # next
    for i, w in enumerate(words):
        state[24 + 8 * (1 + i):32 + 8 * (1 + i)] = _untemper(w).to_bytes(8, "little")
    for p in probabilities:
        g = gptc.Generator()
        g.set_state(np.frombuffer(bytes(state), np.uint8))
        got = np.empty(len(xs), np.float32)
        gptc._C.bernoulli_(got, p, g)
        expected = np.array([float(x) * grid < p for x in xs], np.float32)
        assert np.array_equal(got, expected), f"p = {p!r}"
    print(f"bernoulli_: {len(xs)} chosen draws x {len(probabilities)} probabilities decided "
          "as x * 2^-53 < p")
