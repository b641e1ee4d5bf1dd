/*
 * attention_tile.h - the vector half of the inference attention kernel,
 * included by attention.c once per instruction set. Not a public header.
 *
 * Before each inclusion attention.c defines
 *   ATT_ISA     the suffix of the functions defined here (generic, avx2, ...)
 *   ATT_VEC     floats per vector: 4 (SSE), 8 (AVX), 16 (AVX-512)
 *   ATT_TARGET  the target attribute of the functions, or nothing
 * and gets flash_task_<ATT_ISA>, one task of the kernel (flash_task_body)
 * built on the tiles below.
 *
 * The accumulators are explicit vectors (GCC's vector extension), sized to
 * the registers of the instruction set, so that every value is one
 * multiply-add chain in a fixed order (scores: over d; outputs: over keys c)
 * in the 4-row tile and in the single-row routine alike. Left to the
 * auto-vectoriser, a single-row loop was vectorised along d instead, as
 * products added one by one, which rounds differently from the tile's fused
 * multiply-adds and would break the promise that a row computed alone (a
 * KV-cache decode step) equals the same row of a whole-sequence forward.
 * Vectors are only ever loaded and stored with memcpy of exactly the floats
 * they cover, so nothing is read or written past a row.
 */
#define ATT_CAT2(a, b) a##_##b
#define ATT_CAT(a, b) ATT_CAT2(a, b)
#define ATT_NAME(n) ATT_CAT(n, ATT_ISA)
#define VEC ATT_NAME(vec)
#define CHUNK (2 * ATT_VEC)   /* features or keys per step: two vectors */
#define VLOAD(v, ptr) memcpy(&(v), (ptr), sizeof(VEC))
#define VSTORE(ptr, v) memcpy((ptr), &(v), sizeof(VEC))

typedef float VEC __attribute__((vector_size(ATT_VEC * sizeof(float))));
_Static_assert(K_BLOCK % CHUNK == 0, "K_BLOCK must be a multiple of two vectors");
_Static_assert(ROW_TILE == 4, "the tiles are written for 4 rows");

/* s[r][c] = q_r . kt[:, c] for the 4 rows q[0..3], all K_BLOCK columns (row
 * r of s at s + r * K_BLOCK; kt is [HS][K_BLOCK]). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(scores_tile)(
    float *s, const float *const *q, const float *kt, int HS)
{
    const float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
    for (int c0 = 0; c0 < K_BLOCK; c0 += CHUNK) {
        VEC a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
        for (int d = 0; d < HS; d++) {
            VEC k, l;
            VLOAD(k, kt + (size_t)d * K_BLOCK + c0);
            VLOAD(l, kt + (size_t)d * K_BLOCK + c0 + ATT_VEC);
            a0 += q0[d] * k;
            b0 += q0[d] * l;
            a1 += q1[d] * k;
            b1 += q1[d] * l;
            a2 += q2[d] * k;
            b2 += q2[d] * l;
            a3 += q3[d] * k;
            b3 += q3[d] * l;
        }
        VSTORE(s + c0, a0);
        VSTORE(s + c0 + ATT_VEC, b0);
        VSTORE(s + K_BLOCK + c0, a1);
        VSTORE(s + K_BLOCK + c0 + ATT_VEC, b1);
        VSTORE(s + 2 * K_BLOCK + c0, a2);
        VSTORE(s + 2 * K_BLOCK + c0 + ATT_VEC, b2);
        VSTORE(s + 3 * K_BLOCK + c0, a3);
        VSTORE(s + 3 * K_BLOCK + c0 + ATT_VEC, b3);
    }
}

/* s[c] = q . kt[:, c] for one row. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(scores_row)(
    float *s, const float *q, const float *kt, int HS)
{
    for (int c0 = 0; c0 < K_BLOCK; c0 += CHUNK) {
        VEC a = {0}, b = {0};
        for (int d = 0; d < HS; d++) {
            VEC k, l;
            VLOAD(k, kt + (size_t)d * K_BLOCK + c0);
            VLOAD(l, kt + (size_t)d * K_BLOCK + c0 + ATT_VEC);
            a += q[d] * k;
            b += q[d] * l;
        }
        VSTORE(s + c0, a);
        VSTORE(s + c0 + ATT_VEC, b);
    }
}

/* The last w < ATT_VEC features of a row into a vector (the rest zero) and
 * back. Through pointers: a vector passed by value would depend on the ABI
 * of the instruction set. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(load_part)(
    VEC *v, const float *p, int w)
{
    *v = (VEC){0};
    memcpy(v, p, (size_t)w * sizeof(float));
}

ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(store_part)(
    float *p, const VEC *v, int w)
{
    memcpy(p, v, (size_t)w * sizeof(float));
}

/* o_r += sum_{c < n} p_r[c] v_c for the 4 rows o[0..3] (p_r at
 * p + r * K_BLOCK; value c at v + c * ldv). */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_tile)(
    float *const *o, const float *p, const float *v, size_t ldv, int n, int HS)
{
    float *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];
    const float *p0 = p, *p1 = p + K_BLOCK, *p2 = p + 2 * K_BLOCK, *p3 = p + 3 * K_BLOCK;
    int d0 = 0;
    for (; d0 + CHUNK <= HS; d0 += CHUNK) {
        VEC a0, b0, a1, b1, a2, b2, a3, b3;
        VLOAD(a0, o0 + d0);
        VLOAD(b0, o0 + d0 + ATT_VEC);
        VLOAD(a1, o1 + d0);
        VLOAD(b1, o1 + d0 + ATT_VEC);
        VLOAD(a2, o2 + d0);
        VLOAD(b2, o2 + d0 + ATT_VEC);
        VLOAD(a3, o3 + d0);
        VLOAD(b3, o3 + d0 + ATT_VEC);
        for (int c = 0; c < n; c++) {
            VEC x, y;
            VLOAD(x, v + (size_t)c * ldv + d0);
            VLOAD(y, v + (size_t)c * ldv + d0 + ATT_VEC);
            a0 += p0[c] * x;
            b0 += p0[c] * y;
            a1 += p1[c] * x;
            b1 += p1[c] * y;
            a2 += p2[c] * x;
            b2 += p2[c] * y;
            a3 += p3[c] * x;
            b3 += p3[c] * y;
        }
        VSTORE(o0 + d0, a0);
        VSTORE(o0 + d0 + ATT_VEC, b0);
        VSTORE(o1 + d0, a1);
        VSTORE(o1 + d0 + ATT_VEC, b1);
        VSTORE(o2 + d0, a2);
        VSTORE(o2 + d0 + ATT_VEC, b2);
        VSTORE(o3 + d0, a3);
        VSTORE(o3 + d0 + ATT_VEC, b3);
    }
    for (; d0 < HS; d0 += ATT_VEC) {   /* the last HS % CHUNK features */
        const int w = HS - d0 < ATT_VEC ? HS - d0 : ATT_VEC;
        VEC a0, a1, a2, a3, x;
        ATT_NAME(load_part)(&a0, o0 + d0, w);
        ATT_NAME(load_part)(&a1, o1 + d0, w);
        ATT_NAME(load_part)(&a2, o2 + d0, w);
        ATT_NAME(load_part)(&a3, o3 + d0, w);
        for (int c = 0; c < n; c++) {
            ATT_NAME(load_part)(&x, v + (size_t)c * ldv + d0, w);
            a0 += p0[c] * x;
            a1 += p1[c] * x;
            a2 += p2[c] * x;
            a3 += p3[c] * x;
        }
        ATT_NAME(store_part)(o0 + d0, &a0, w);
        ATT_NAME(store_part)(o1 + d0, &a1, w);
        ATT_NAME(store_part)(o2 + d0, &a2, w);
        ATT_NAME(store_part)(o3 + d0, &a3, w);
    }
}

/* o += sum_{c0 <= c < n} p[c] v_c for one row. */
ATT_TARGET static inline __attribute__((always_inline)) void ATT_NAME(values_row)(
    float *o, const float *p, const float *v, size_t ldv, int c0, int n, int HS)
{
    int d0 = 0;
    for (; d0 + CHUNK <= HS; d0 += CHUNK) {
        VEC a, b;
        VLOAD(a, o + d0);
        VLOAD(b, o + d0 + ATT_VEC);
        for (int c = c0; c < n; c++) {
            VEC x, y;
            VLOAD(x, v + (size_t)c * ldv + d0);
            VLOAD(y, v + (size_t)c * ldv + d0 + ATT_VEC);
            a += p[c] * x;
            b += p[c] * y;
        }
        VSTORE(o + d0, a);
        VSTORE(o + d0 + ATT_VEC, b);
    }
    for (; d0 < HS; d0 += ATT_VEC) {
        const int w = HS - d0 < ATT_VEC ? HS - d0 : ATT_VEC;
        VEC a, x;
        ATT_NAME(load_part)(&a, o + d0, w);
        for (int c = c0; c < n; c++) {
            ATT_NAME(load_part)(&x, v + (size_t)c * ldv + d0, w);
            a += p[c] * x;
        }
        ATT_NAME(store_part)(o + d0, &a, w);
    }
}

ATT_TARGET static void ATT_NAME(flash_task)(const flash_problem *pb, int b, int h, int row0,
                                            int nrows, float *scratch)
{
    flash_task_body(pb, b, h, row0, nrows, scratch, ATT_NAME(scores_tile),
                    ATT_NAME(scores_row), ATT_NAME(values_tile), ATT_NAME(values_row));
}

#undef VSTORE
#undef VLOAD
#undef CHUNK
#undef VEC
#undef ATT_NAME
#undef ATT_CAT
#undef ATT_CAT2
