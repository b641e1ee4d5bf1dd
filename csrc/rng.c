/*
 * rng.c - PyTorch's default CPU random generator, reproduced draw for draw.
 *
 * Everything here mirrors what torch 2.x does on an x86-64 CPU with AVX2
 * (AVX-512 CPUs take the same kernels for these ops, see gptc_normal_f32):
 *
 *   - a 32-bit Mersenne Twister (mt19937) seeded from the low 32 bits of
 *     the 64-bit seed;
 *   - uniform floats built from 24 random bits, uniform doubles from 53;
 *   - normal samples by Box-Muller, along two different code paths;
 *   - Bernoulli samples by comparing a 53-bit uniform double with p;
 *   - the generator state serialised in torch.get_rng_state()'s layout.
 *
 * Bit-exact parity depends on IEEE single/double arithmetic performed
 * exactly as written: every fused multiply-add below is an explicit fma()
 * call, and the compiler must not fuse anything else.
 */
#include "gptc.h"

#include <math.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "rng.c must be built without -ffast-math: PyTorch parity needs strict IEEE arithmetic"
#endif

/* Forbid the compiler from contracting a*b+c into an FMA on its own: where
 * PyTorch's compiled kernel fused, we call fmaf()/fma() explicitly, and
 * everywhere else the product must be rounded before the add. GCC ignores
 * the standard pragma, so it gets its own spelling. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---------------------------------------------------------------------
 * mt19937
 * ------------------------------------------------------------------- */

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

/* One step of the twist recurrence: the top bit of `hi` joined with the
 * low 31 bits of `lo`, shifted, and xor-ed with the matrix when the
 * joined word is odd. */
static uint32_t mt_twist_word(uint32_t hi, uint32_t lo)
{
    uint32_t joined = (hi & MT_UPPER) | (lo & MT_LOWER);
    return (joined >> 1) ^ ((lo & 1u) ? MT_MATRIX_A : 0u);
}

/* Regenerate all 624 words at once (the classic "next_state"). */
static void mt_regenerate(gptc_generator *g)
{
    uint32_t *s = g->state;
    int k;
    for (k = 0; k < GPTC_MT_N - MT_M; k++)
        s[k] = s[k + MT_M] ^ mt_twist_word(s[k], s[k + 1]);
    for (; k < GPTC_MT_N - 1; k++)
        s[k] = s[k + MT_M - GPTC_MT_N] ^ mt_twist_word(s[k], s[k + 1]);
    s[GPTC_MT_N - 1] = s[MT_M - 1] ^ mt_twist_word(s[GPTC_MT_N - 1], s[0]);
    g->left = GPTC_MT_N;
    g->next = 0;
}

void gptc_generator_seed(gptc_generator *g, uint64_t seed)
{
    /* PyTorch keeps the whole 64-bit seed for initial_seed() but feeds only
     * its low 32 bits to the twister (Knuth's multiplier recurrence). */
    uint32_t *s = g->state;
    g->seed = seed;
    s[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t i = 1; i < GPTC_MT_N; i++)
        s[i] = 1812433253u * (s[i - 1] ^ (s[i - 1] >> 30)) + i;
    /* left == 1 makes the very first draw regenerate the whole block. */
    g->left = 1;
    g->next = 0;
    g->seeded = 1;
    /* manual_seed forgets any Box-Muller value still waiting to be used. */
    g->has_next_double_normal = 0;
    g->next_double_normal = 0.0;
    g->has_next_float_normal = 0;
    g->next_float_normal = 0.0f;
}

static inline uint32_t mt_temper(uint32_t y)
{
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

uint32_t gptc_random_u32(gptc_generator *g)
{
    /* The counter is decremented before the draw, so a freshly seeded
     * generator (left == 1) twists on its first call. */
    if (--g->left == 0)
        mt_regenerate(g);
    /* A state loaded by set_state may claim more draws left than there are
     * words after `next` (PyTorch accepts such states and then reads past
     * its array). We regenerate instead of reading out of bounds; states
     * that PyTorch itself produces never reach this branch. */
    if (g->next >= GPTC_MT_N)
        mt_regenerate(g);
    return mt_temper(g->state[g->next++]);
}

/* n consecutive draws of gptc_random_u32, the same words in the same order,
 * for the samplers that need one or two words per element: between twists
 * the words come straight from the state array in a loop the compiler
 * vectorises; the draw at a twist (or from a state set_state left
 * inconsistent) goes through gptc_random_u32, which handles both. */
static void mt_draw_words(gptc_generator *g, uint32_t *out, size_t n)
{
    while (n > 0) {
        if (g->left <= 1 || g->next >= GPTC_MT_N) {
            *out++ = gptc_random_u32(g);
            n--;
            continue;
        }
        /* Each of these draws leaves left >= 1 (no twist) and reads below N. */
        size_t run = (size_t)(g->left - 1);
        if (run > (size_t)(GPTC_MT_N - g->next)) run = (size_t)(GPTC_MT_N - g->next);
        if (run > n) run = n;
        const uint32_t *words = g->state + g->next;
        for (size_t i = 0; i < run; i++)
            out[i] = mt_temper(words[i]);
        g->left -= (int32_t)run;
        g->next += (int32_t)run;
        out += run;
        n -= run;
    }
}

uint64_t gptc_random_u64(gptc_generator *g)
{
    /* The first 32-bit draw becomes the high half. */
    uint64_t hi = gptc_random_u32(g);
    uint64_t lo = gptc_random_u32(g);
    return (hi << 32) | lo;
}

/* ---------------------------------------------------------------------
 * Uniform
 * ------------------------------------------------------------------- */

/* A float in [0, 1) on the 2^-24 grid: 24 bits is float's full significand,
 * so every step of that grid is reachable and the scaling is exact. */
static float uniform01_f32(gptc_generator *g)
{
    return (float)(gptc_random_u32(g) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* A double in [0, 1) on the 2^-53 grid, from one 64-bit draw. */
static double uniform01_f64(gptc_generator *g)
{
    return (double)(gptc_random_u64(g) & 0x1fffffffffffffull) * (1.0 / 9007199254740992.0);
}

void gptc_uniform_f32(gptc_generator *g, float *out, size_t n, double from, double to)
{
    /* PyTorch narrows the bounds to float first and does the affine map in
     * float. Its AVX2 kernel (the one x86 CPUs with AVX2 or AVX-512 run)
     * was compiled with FMA contraction, so u*(to-from)+from is rounded
     * once. */
    const float lo = (float)from;
    const float hi = (float)to;
    const float width = hi - lo;
    for (size_t i = 0; i < n; i++) {
        float v = fmaf(uniform01_f32(g), width, lo);
        /* Rounding can land exactly on the open upper bound; PyTorch maps
         * that case back to `from` so the result stays in [from, to). */
        out[i] = (v == hi) ? lo : v;
    }
}

/* ---------------------------------------------------------------------
 * Normal, scalar path (n < 16): normal_distribution<double>
 * ------------------------------------------------------------------- */

static double normal_scalar(gptc_generator *g, double mean, double std)
{
    double z;
    if (g->has_next_double_normal) {
        /* Box-Muller yields two values; the second was kept for this call. */
        z = g->next_double_normal;
        g->has_next_double_normal = 0;
    } else {
        const double u1 = uniform01_f64(g);
        const double u2 = uniform01_f64(g);
        /* log1p(-u2) = log(1 - u2) with u2 in [0, 1), so never log(0). */
        const double r = sqrt(-2.0 * log1p(-u2));
        const double theta = 2.0 * 3.14159265358979323846 * u1;
        g->next_double_normal = r * sin(theta);
        g->has_next_double_normal = 1;
        z = r * cos(theta);
    }
    /* The scaling was contracted into one FMA in PyTorch's build. */
    return fma(z, std, mean);
}

/* ---------------------------------------------------------------------
 * Normal, vectorised path (n >= 16)
 *
 * On AVX2 (and AVX-512, whose dispatch entry for normal_ falls back to the
 * AVX2 kernel) PyTorch runs Box-Muller on 8 lanes with Cephes-style
 * polynomial log and sincos, in float. The compiler fused many of the
 * multiply/add pairs of those polynomials into FMAs; the helpers below
 * perform, per lane, the same float operations in the same order, with
 * fmaf() exactly where the shipped kernel has an FMA instruction. That
 * reproduces its output bit for bit, which glibc's logf/sinf/cosf would
 * not (they differ from the polynomials in the last bits).
 * ------------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Natural log of x in (0, 1]: split x = m * 2^e with m in [0.5, 1), move m
 * to [sqrt(1/2), sqrt(2)) so log(m) comes from a degree-9 polynomial in
 * m - 1, then add e*log(2) in two parts (0.693359375 is exact in float and
 * the small correction carries the rest). */
static float cephes_logf(float x)
{
    const float smallest_normal = f32_from_bits(0x00800000u);
    if (!(x > smallest_normal))
        x = smallest_normal; /* the kernel clamps subnormals the same way */
    const uint32_t bits = f32_bits(x);
    float m = f32_from_bits((bits & 0x807fffffu) | 0x3f000000u); /* [0.5, 1) */
    float e = (float)((int32_t)(bits >> 23) - 127) + 1.0f;

    const int below = m < 0.707106781186547524f;
    const float keep = below ? m : 0.0f;
    m = m + -1.0f;
    e = e - (below ? 1.0f : 0.0f);
    m = m + keep; /* m - 1, or 2m - 1 when m was below sqrt(1/2) */

    const float m2 = m * m;
    float p = fmaf(7.0376836292E-2f, m, -1.1514610310E-1f);
    p = fmaf(p, m, 1.1676998740E-1f);
    p = fmaf(p, m, -1.2420140846E-1f);
    p = fmaf(p, m, 1.4249322787E-1f);
    p = fmaf(p, m, -1.6668057665E-1f);
    p = fmaf(p, m, 2.0000714765E-1f);
    p = fmaf(p, m, -2.4999993993E-1f);
    p = fmaf(p, m, 3.3333331174E-1f);
    p = p * m;
    p = fmaf(p, m2, e * -2.12194440e-4f);
    p = fmaf(-m2, 0.5f, p);
    m = m + p;
    return fmaf(e, 0.693359375f, m);
}

/* sin and cos of x >= 0 (x < 2*pi here): reduce by multiples of pi/4 using
 * pi/4 split in three parts for extra precision, evaluate the sine and the
 * cosine polynomial on the reduced argument, then pick and sign them by
 * octant. */
static void cephes_sincosf(float x, float *s_out, float *c_out)
{
    const uint32_t sign_in = f32_bits(x) & 0x80000000u;
    x = f32_from_bits(f32_bits(x) & 0x7fffffffu);

    int32_t j = (int32_t)(x * 1.27323954473516f); /* x * 4/pi, truncated */
    j = (j + 1) & ~1;                               /* round up to even */
    const float jf = (float)j;

    const uint32_t sin_sign = sign_in ^ ((uint32_t)(j & 4) << 29);
    const uint32_t cos_sign = ((uint32_t)(~(j - 2)) & 4u) << 29;
    const int sine_poly_for_sin = (j & 2) == 0;

    x = fmaf(jf, -0.78515625f, x);
    x = fmaf(jf, -2.4187564849853515625e-4f, x);
    x = fmaf(jf, -3.77489497744594108e-8f, x);

    const float z = x * x;
    const float half_z = z * 0.5f;

    float yc = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = z * yc;
    yc = fmaf(z, yc, -half_z);
    yc = yc + 1.0f; /* cos of the reduced argument */

    float ys = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = z * ys;
    ys = fmaf(x, ys, x); /* sin of the reduced argument */

    /* The kernel selects with bit masks and then adds and subtracts the
     * selected parts; doing the same arithmetic keeps signed zeros equal. */
    const float sin_from_s = sine_poly_for_sin ? ys : 0.0f;
    const float sin_from_c = sine_poly_for_sin ? 0.0f : yc;
    const float rest_s = ys - sin_from_s;
    const float rest_c = yc - sin_from_c;
    const float s = sin_from_s + sin_from_c;
    const float c = rest_s + rest_c;
    *s_out = f32_from_bits(f32_bits(s) ^ sin_sign);
    *c_out = f32_from_bits(f32_bits(c) ^ cos_sign);
}

/* Box-Muller on one block of 16 uniforms in place: lane j pairs
 * u1 = 1 - d[j] (in (0, 1], safe for log) with u2 = d[j + 8]. */
static void box_muller_16(float *d, float mean, float std)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j];
        const float u2 = d[j + 8];
        const float radius = sqrtf(cephes_logf(u1) * -2.0f);
        float s, c;
        cephes_sincosf(two_pi * u2, &s, &c);
        d[j] = fmaf(radius * c, std, mean);
        d[j + 8] = fmaf(radius * s, std, mean);
    }
}

void gptc_normal_f32(gptc_generator *g, float *out, size_t n, double mean, double std)
{
    if (n < 16) {
        /* Too small for a block: one double sample per element, consuming
         * and refilling the cached spare. */
        for (size_t i = 0; i < n; i++)
            out[i] = (float)normal_scalar(g, mean, std);
        return;
    }
    /* Whole-tensor uniform fill first, then Box-Muller per 16-block. The
     * vectorised path never reads or writes the cached spare. */
    const float fmean = (float)mean;
    const float fstd = (float)std;
    for (size_t i = 0; i < n; i++)
        out[i] = uniform01_f32(g);
    for (size_t i = 0; i + 16 <= n; i += 16)
        box_muller_16(out + i, fmean, fstd);
    if (n % 16 != 0) {
        /* The ragged tail is handled by redrawing the last 16 positions
         * (overwriting some finished outputs) and transforming them as one
         * more block. */
        float *tail = out + (n - 16);
        for (int i = 0; i < 16; i++)
            tail[i] = uniform01_f32(g);
        box_muller_16(tail, fmean, fstd);
    }
}

/* ---------------------------------------------------------------------
 * Bernoulli
 * ------------------------------------------------------------------- */

void gptc_bernoulli_f32(gptc_generator *g, float *out, size_t n, double p)
{
    /* One 53-bit uniform double per element, u = x * 2^-53 for the integer x
     * made of two draws (the first the high half); success when u < p.
     * (On Intel CPUs PyTorch hands this op to MKL with a different stream,
     * which is not reproduced here.)
     *
     * u < p is decided on the integer: p * 2^53 is exact in double, and an
     * integer x is below a real t exactly when it is below ceil(t), so the
     * test is x < threshold with threshold = ceil(p * 2^53), clamped to
     * [0, 2^53] (p >= 1 always succeeds, p <= 0 or NaN never). Every
     * element still takes its two draws, as PyTorch's do. */
    const double two53 = 9007199254740992.0;
    const uint64_t threshold = !(p > 0.0) ? 0u
                             : p >= 1.0 ? (uint64_t)two53
                             : (uint64_t)ceil(p * two53);
    uint32_t words[512];
    while (n > 0) {
        size_t len = n < 256 ? n : 256;
        mt_draw_words(g, words, 2 * len);
        for (size_t i = 0; i < len; i++) {
            uint64_t x = ((uint64_t)(words[2 * i] & 0x1fffffu) << 32) | words[2 * i + 1];
            out[i] = x < threshold ? 1.0f : 0.0f;
        }
        out += len;
        n -= len;
    }
}

/* ---------------------------------------------------------------------
 * State serialisation: the byte image of PyTorch's CPUGeneratorImplState
 * on a little-endian LP64 build (what torch.get_rng_state() returns):
 *
 *   offset  size  field
 *        0     8  uint64 initial seed
 *        8     4  int32  left
 *       12     4  int32  seeded
 *       16     8  uint64 next
 *       24  4992  uint64 state[624] (each holding a 32-bit word)
 *     5016     8  double normal_x     (unused, written as 0)
 *     5024     8  double normal_y     (the cached double spare)
 *     5032     8  double normal_rho   (unused, written as 0)
 *     5040     4  int32  normal_is_valid
 *     5044     4  padding (zero)
 *     5048     4  float  cached float spare
 *     5052     1  bool   cached float spare is valid
 *     5053     3  padding (zero)
 * ------------------------------------------------------------------- */

enum {
    OFF_SEED = 0,
    OFF_LEFT = 8,
    OFF_SEEDED = 12,
    OFF_NEXT = 16,
    OFF_STATE = 24,
    OFF_NORMAL_X = OFF_STATE + 8 * GPTC_MT_N,
    OFF_NORMAL_Y = OFF_NORMAL_X + 8,
    OFF_NORMAL_RHO = OFF_NORMAL_Y + 8,
    OFF_NORMAL_VALID = OFF_NORMAL_RHO + 8,
    OFF_FLOAT_NORMAL = OFF_NORMAL_VALID + 8, /* after 4 bytes of padding */
    OFF_FLOAT_VALID = OFF_FLOAT_NORMAL + 4,
    STATE_END = OFF_FLOAT_VALID + 4 /* 3 bytes of tail padding */
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(STATE_END == GPTC_RNG_STATE_BYTES, "rng state layout must be 5056 bytes");
#endif

static void put_le(uint8_t *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int nbytes)
{
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double f64_from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void gptc_generator_get_state(const gptc_generator *g, uint8_t out[GPTC_RNG_STATE_BYTES])
{
    /* PyTorch builds the image in a value-initialised struct, so every
     * padding byte is zero. */
    memset(out, 0, GPTC_RNG_STATE_BYTES);
    put_le(out + OFF_SEED, g->seed, 8);
    put_le(out + OFF_LEFT, (uint32_t)g->left, 4);
    put_le(out + OFF_SEEDED, g->seeded ? 1u : 0u, 4);
    put_le(out + OFF_NEXT, (uint64_t)(uint32_t)g->next, 8);
    for (int i = 0; i < GPTC_MT_N; i++)
        put_le(out + OFF_STATE + 8 * i, g->state[i], 8);
    /* normal_x and normal_rho are legacy fields and stay 0. */
    if (g->has_next_double_normal) {
        put_le(out + OFF_NORMAL_Y, f64_bits(g->next_double_normal), 8);
        put_le(out + OFF_NORMAL_VALID, 1, 4);
    }
    if (g->has_next_float_normal) {
        put_le(out + OFF_FLOAT_NORMAL, f32_bits(g->next_float_normal), 4);
        out[OFF_FLOAT_VALID] = 1;
    }
}

int gptc_generator_set_state(gptc_generator *g, const uint8_t in[GPTC_RNG_STATE_BYTES])
{
    /* The same acceptance rules as PyTorch: `seeded` must be non-zero,
     * `left` in 1..624, and `next` - truncated to 32 bits first, as
     * PyTorch stores it - at most 624. Nothing else is checked. */
    const int32_t left = (int32_t)(uint32_t)get_le(in + OFF_LEFT, 4);
    const int32_t seeded = (int32_t)(uint32_t)get_le(in + OFF_SEEDED, 4);
    const uint32_t next = (uint32_t)get_le(in + OFF_NEXT, 8);
    if (seeded == 0 || left <= 0 || left > GPTC_MT_N || next > GPTC_MT_N)
        return -1;

    g->seed = get_le(in + OFF_SEED, 8);
    g->left = left;
    g->next = (int32_t)next;
    g->seeded = 1;
    /* Each word was widened to 64 bits on the way out; only the low 32
     * bits come back, exactly like PyTorch's narrowing copy. */
    for (int i = 0; i < GPTC_MT_N; i++)
        g->state[i] = (uint32_t)get_le(in + OFF_STATE + 8 * i, 8);

    g->has_next_double_normal = get_le(in + OFF_NORMAL_VALID, 4) != 0;
    g->next_double_normal =
        g->has_next_double_normal ? f64_from_bits(get_le(in + OFF_NORMAL_Y, 8)) : 0.0;
    g->has_next_float_normal = in[OFF_FLOAT_VALID] != 0;
    g->next_float_normal =
        g->has_next_float_normal ? f32_from_bits((uint32_t)get_le(in + OFF_FLOAT_NORMAL, 4)) : 0.0f;
    return 0;
}

/* ---------------------------------------------------------------------
 * torch.randperm(n) on the CPU: a Fisher-Yates shuffle of 0 .. n - 1 from
 * the front, element i swapped with i + (one 32-bit draw mod (n - i)).
 * PyTorch uses 32-bit draws for every n below 2^32, the only sizes gptc
 * accepts (checked against torch.randperm up to n = 3,000,000 by the tests).
 * The modulo is slightly biased for large n - i; so is PyTorch's, and the
 * point is the same permutation.
 * --------------------------------------------------------------------- */
void gptc_randperm(gptc_generator *g, int64_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = 0; i + 1 < n; i++) {
        int64_t z = (int64_t)(gptc_random_u32(g) % (uint64_t)(n - i));
        int64_t tmp = out[i];
        out[i] = out[i + z];
        out[i + z] = tmp;
    }
}
