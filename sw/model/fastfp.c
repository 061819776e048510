/* The fast model's fp32 kernels in C: sw/model/fp32.py's, tail.py's and pcu.py's results bit for bit (the policy of
 * docs/numerics.md): the systolic GEMV, lane and group sums, element-wise operations, the tail functions and a whole
 * PCU run's arithmetic (stages, tail, reduction, fold, so0).
 *
 * A CPython extension module (built and imported by sw/model/cext.py through fp32.kernels(); the Python modules keep
 * their numpy forms as the fallback). Every function takes C-contiguous buffers of uint32 fp32 patterns and computes
 * the golden model's operations exactly, in the hardware's order:
 *
 * - denormals-are-zero on every operand (a subnormal pattern becomes the zero of its sign);
 * - a product is IEEE binary32 multiplication (round to nearest even) unless IEEE gives a subnormal or exactly
 *   2**-126, where the policy rounds as if the exponent range were unbounded and flushes below 2**-126: that rare
 *   case is sw/golden/arith.py's fp32_mul, in double (the product of two floats is exact in double);
 * - a sum is IEEE binary32 addition; a subnormal sum (exact, both operands being multiples of 2**-149) becomes the
 *   zero of its sign;
 * - NaN results are the canonical 0x7FC00000.
 *
 * Built with -ffp-contract=off and without -ffast-math (cext.FLAGS): no fused multiply-add, no reassociation, so
 * each float operation below is one IEEE operation in the order written. x86-64 and AArch64 evaluate float in
 * float (FLT_EVAL_METHOD 0); the module refuses to build elsewhere. The tail functions need the compiler's 128-bit
 * integers (GCC and Clang on 64-bit targets); where the build fails the numpy forms run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "fastfp.c needs float arithmetic evaluated in float (FLT_EVAL_METHOD 0)"
#endif

#define SIGN 0x80000000u
#define ABS 0x7FFFFFFFu
#define EXP 0x7F800000u
#define INF 0x7F800000u
#define CANON_NAN 0x7FC00000u
#define MIN_NORMAL 0x00800000u
#define MAX_LANES 64

static inline float fl(uint32_t x) { float f; memcpy(&f, &x, 4); return f; }
static inline uint32_t bits(float f) { uint32_t x; memcpy(&x, &f, 4); return x; }
static inline uint32_t daz(uint32_t x) { return (x & EXP) ? x : (x & SIGN); }
static inline uint32_t canon(uint32_t x) { return (x & ABS) > INF ? CANON_NAN : x; }

/* sw/golden/arith.py fp32_mul for operands after denormals-are-zero: the exact double product rounded to 24 bits
 * as if the exponent range were unbounded (tiny products scaled by 2**128 first), then flushed below 2**-126. */
static uint32_t mul_golden(uint32_t a, uint32_t b)
{
    double p = (double)fl(a) * (double)fl(b);
    double scale = fabs(p) < 0x1p-64 ? 0x1p128 : 1.0;
    volatile float rounded = (float)(p * scale);
    double q = (double)rounded / scale;
    if (fabs(q) < 0x1p-126)
        q = copysign(0.0, p);
    return canon(bits((float)q));
}

/* A product of operands after denormals-are-zero; a NaN keeps IEEE's payload (callers make sums canonical). */
static inline uint32_t mul_raw(uint32_t a, uint32_t b)
{
    uint32_t r = bits(fl(a) * fl(b));
    /* |r| in 1 .. 2**-126: a subnormal or the least normal, which the policy may round otherwise. */
    if (__builtin_expect((r & ABS) - 1u < MIN_NORMAL, 0))
        r = mul_golden(a, b);
    return r;
}

/* A sum of operands after denormals-are-zero, a subnormal result flushed to its sign (NaN payload kept). */
static inline uint32_t add_raw(uint32_t a, uint32_t b)
{
    uint32_t r = bits(fl(a) + fl(b));
    return (r & EXP) ? r : (r & SIGN);
}

/* --- buffers ----------------------------------------------------------------------------------------------- */

/* A C-contiguous buffer of at least ``items`` items of ``size`` bytes; -1 with an exception set otherwise. */
static int take_sized(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t items, Py_ssize_t size)
{
    if (items < 0 || items > PY_SSIZE_T_MAX / size) {
        PyErr_SetString(PyExc_ValueError, "fastfp: a buffer size is too large");
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    if (view->itemsize != size || view->len < items * size) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "fastfp: a buffer is too small or of another item size");
        return -1;
    }
    return 0;
}

/* Buffers taken by one call, released together. */
struct held {
    Py_buffer views[12];
    int count;
};

/* The buffer's data, or NULL with an exception set (an empty buffer's data may be NULL: a stand-in is returned). */
static void *hold(struct held *h, PyObject *obj, int writable, Py_ssize_t items, Py_ssize_t size)
{
    static int64_t nothing;
    if (take_sized(obj, &h->views[h->count], writable, items, size) < 0)
        return NULL;
    void *buf = h->views[h->count++].buf;
    return buf ? buf : &nothing;
}

static void release(struct held *h)
{
    while (h->count)
        PyBuffer_Release(&h->views[--h->count]);
}

static int sizes(PyObject *const *args, Py_ssize_t first, Py_ssize_t count, Py_ssize_t *out)
{
    for (Py_ssize_t k = 0; k < count; k++) {
        out[k] = PyLong_AsSsize_t(args[first + k]);
        if (out[k] == -1 && PyErr_Occurred())
            return -1;
        if (out[k] < 0 || out[k] > ((Py_ssize_t)1 << 40)) {
            PyErr_SetString(PyExc_ValueError, "fastfp: a size is negative or too large");
            return -1;
        }
    }
    return 0;
}

/* Checked item counts: each size is at most 2**40, but their products and sums may wrap (and then a small buffer
 * would pass take's check). Past ITEMS_MAX (a byte count of 8-byte items still fits) the call is refused. */
#define ITEMS_MAX (PY_SSIZE_T_MAX / 8)

static int too_large(void)
{
    PyErr_SetString(PyExc_ValueError, "fastfp: the sizes' product is too large");
    return -1;
}

/* *out = a * b, or -1 with ValueError past ITEMS_MAX (a, b >= 0). */
static int mul_items(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out)
{
    if (__builtin_mul_overflow(a, b, out) || *out > ITEMS_MAX)
        return too_large();
    return 0;
}

/* *out = a + b, or -1 with ValueError past ITEMS_MAX (a, b >= 0). */
static int add_items(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out)
{
    if (__builtin_add_overflow(a, b, out) || *out > ITEMS_MAX)
        return too_large();
    return 0;
}

/* *out = a * b + c, or -1 with ValueError past ITEMS_MAX (a, b, c >= 0). */
static int mul_add_items(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, Py_ssize_t *out)
{
    Py_ssize_t p;
    if (mul_items(a, b, &p) < 0)
        return -1;
    return add_items(p, c, out);
}

/* --- the systolic GEMV --------------------------------------------------------------------------------------- */

/* Weight word i of ``b``: a 32-bit word, or with ``half`` a bf16 value (16-bit words) widened as an AGCU's bf16 read
 * widens it (the value in the word's top half, the low half zero). */
static inline uint32_t weight(const void *b, Py_ssize_t i, int half)
{
    return half ? (uint32_t)((const uint16_t *)b)[i] << 16 : ((const uint32_t *)b)[i];
}

/* One group's accumulation for ``lanes`` accumulators of each of ``rows`` rows: acc = p_j + acc from +0, j in order. */
static inline void gemv_group(const uint32_t *a, Py_ssize_t step, const void *b, uint32_t *out, Py_ssize_t m,
                              Py_ssize_t rows, Py_ssize_t lanes, int half)
{
    uint32_t acc[MAX_LANES], bj[MAX_LANES];
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (Py_ssize_t l = 0; l < lanes; l++)
            acc[l] = 0;
        for (Py_ssize_t j = 0; j < m; j++) {
            uint32_t aj = daz(a[j * step + r]);
            for (Py_ssize_t l = 0; l < lanes; l++)
                bj[l] = daz(weight(b, j * lanes + l, half));
            for (Py_ssize_t l = 0; l < lanes; l++)
                acc[l] = add_raw(mul_raw(aj, bj[l]), acc[l]);
        }
        for (Py_ssize_t l = 0; l < lanes; l++)
            out[r * lanes + l] = canon(acc[l]);
    }
}

/* gemv_block_simd: the same accumulation for up to BLOCK groups in SIMD vectors of 4 lanes (GCC/Clang vector
 * extensions: element-wise IEEE operations), ``chunks`` vectors a row. Every product here is IEEE's, so it returns 1
 * (its results to be discarded) when some product is subnormal or exactly 2**-126 in magnitude; the caller then runs
 * gemv_group for those groups, which rounds such products as the policy does. */
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef float v4f __attribute__((vector_size(16)));
#define MAX_CHUNKS (MAX_LANES / 4)
#define BLOCK 4

/* Four bf16 values widened to four 32-bit words (each value in its word's top half): SSE2's interleave with zeros
 * where the target has it. */
static inline v4u widen4(const uint16_t *p)
{
#if defined(__SSE2__)
    __m128i x = _mm_loadl_epi64((const __m128i *)p);
    return (v4u)_mm_unpacklo_epi16(_mm_setzero_si128(), x);
#else
    uint16_t h[4];
    memcpy(h, p, 8);
    return (v4u){h[0], h[1], h[2], h[3]} << 16;
#endif
}

static inline v4u vdaz(v4u x)
{
    /* Lanes with a zero exponent field keep only their sign. */
    v4u zero_exp = (v4u)((x & EXP) == 0);
    return x & ~(zero_exp & ABS);
}

static inline int gemv_block_simd(const uint32_t *a, Py_ssize_t stride, Py_ssize_t step, const void *b,
                                  uint32_t *out, Py_ssize_t nb, Py_ssize_t m, Py_ssize_t rows, Py_ssize_t chunks,
                                  int half)
{
    /* ``nb`` groups at once (group g: a + g * stride, b + g * m * lanes, out + g * rows * lanes): their
     * accumulations are independent chains, which the processor overlaps. */
    v4u acc[BLOCK][MAX_CHUNKS];
    v4u bad = {0, 0, 0, 0};
    Py_ssize_t lanes = chunks * 4;
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (Py_ssize_t g = 0; g < nb; g++)
            for (Py_ssize_t c = 0; c < chunks; c++)
                acc[g][c] = (v4u){0, 0, 0, 0};
        for (Py_ssize_t j = 0; j < m; j++) {
            for (Py_ssize_t g = 0; g < nb; g++) {
                float aj = fl(daz(a[g * stride + j * step + r]));
                v4f av = {aj, aj, aj, aj};
                Py_ssize_t row = (g * m + j) * lanes;
                for (Py_ssize_t c = 0; c < chunks; c++) {
                    v4u bv;
                    if (half) {
                        bv = widen4((const uint16_t *)b + row + 4 * c);
                    } else {
                        memcpy(&bv, (const uint32_t *)b + row + 4 * c, 16);
                    }
                    v4u p = (v4u)(av * (v4f)vdaz(bv));
                    bad |= (v4u)(((p & ABS) - 1u) < MIN_NORMAL);
                    v4u sum = (v4u)((v4f)p + (v4f)acc[g][c]);
                    acc[g][c] = sum & ~((v4u)((sum & EXP) == 0) & ABS);
                }
            }
        }
        for (Py_ssize_t g = 0; g < nb; g++)
            for (Py_ssize_t c = 0; c < chunks; c++) {
                v4u x = acc[g][c];
                x = x ^ ((v4u)((x & ABS) > INF) & (x ^ CANON_NAN));
                memcpy(out + (g * rows + r) * lanes + 4 * c, &x, 16);
            }
    }
    return (bad[0] | bad[1] | bad[2] | bad[3]) != 0;
}

/* The same block accumulation for eight groups of four or eight lanes in 8-lane AVX2 vectors (two groups of four
 * lanes, or one group of eight, a vector), where the processor has AVX2 (checked once, at import): the same
 * element-wise IEEE operations in the same order, so the same results and the same return as gemv_block_simd. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define GEMV_AVX2 1
#include <immintrin.h>
#define BLOCK8 8
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));

static int have_avx2 = 0;
/* The vector paths gemv_run takes: 2 the AVX-512 blocks where they apply and AVX2 ones, 1 AVX2 blocks, 0 neither (the
 * portable forms); the best the processor has, unless simd() lowered it. Every level gives the same bits. */
static int simd_level = 0;

/* Weights k .. k + 3 and l .. l + 3 (lanes 4: two groups' rows), or k .. k + 7 (lanes 8), as one vector. */
__attribute__((target("avx2"))) static inline v8u weights8(const void *b, Py_ssize_t k, Py_ssize_t l, int lanes,
                                                           int half)
{
    __m256i x;
    if (half) {
        const uint16_t *h = (const uint16_t *)b;
        __m128i w = lanes == 4 ? _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(h + k)),
                                                   _mm_loadl_epi64((const __m128i *)(h + l)))
                               : _mm_loadu_si128((const __m128i *)(h + k));
        x = _mm256_slli_epi32(_mm256_cvtepu16_epi32(w), 16);
    } else {
        const uint32_t *w = (const uint32_t *)b;
        x = lanes == 4 ? _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + k))),
                                                 _mm_loadu_si128((const __m128i *)(w + l)), 1)
                       : _mm256_loadu_si256((const __m256i *)(w + k));
    }
    return (v8u)x;
}

__attribute__((target("avx2"), always_inline)) static inline int gemv_block_avx2_k(
    const uint32_t *a, Py_ssize_t stride, Py_ssize_t step, const void *b, uint32_t *out, Py_ssize_t m,
    Py_ssize_t rows, int lanes, int half, int shared)
{
    /* Vector v: groups 2v and 2v + 1 (lanes 4) or group v (lanes 8); BLOCK8 groups in ``lanes`` vectors. */
    v8u acc[8];
    /* The least |p| - 1 (unsigned: a zero product wraps to the top) of every product: one under MIN_NORMAL is a
     * product at or under 2**-126 in magnitude and not zero. */
    __m256i least = _mm256_set1_epi32(-1);
    const int vectors = lanes;
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (int v = 0; v < vectors; v++)
            acc[v] = (v8u){0, 0, 0, 0, 0, 0, 0, 0};
        for (Py_ssize_t j = 0; j < m; j++) {
            /* ``shared`` (stride 0): every group's activation is the same word, taken once a step. */
            float as = shared ? fl(daz(a[j * step + r])) : 0;
            /* Unrolled, so that the accumulators stay in registers. */
#pragma GCC unroll 8
            for (int v = 0; v < vectors; v++) {
                Py_ssize_t g = lanes == 4 ? 2 * v : v;
                float a0 = shared ? as : fl(daz(a[g * stride + j * step + r]));
                float a1 = shared ? as : lanes == 4 ? fl(daz(a[(g + 1) * stride + j * step + r])) : a0;
                v8f av = {a0, a0, a0, a0, a1, a1, a1, a1};
                v8u bv = weights8(b, (g * m + j) * lanes, ((g + 1) * m + j) * lanes, lanes, half);
                v8u zero_exp = (v8u)((bv & EXP) == 0);
                v8u p = (v8u)(av * (v8f)(bv & ~(zero_exp & ABS)));
                least = _mm256_min_epu32(least, (__m256i)((p & ABS) - 1u));
                v8u sum = (v8u)((v8f)p + (v8f)acc[v]);
                acc[v] = sum & ~((v8u)((sum & EXP) == 0) & ABS);
            }
        }
        for (int v = 0; v < vectors; v++) {
            v8u x = acc[v];
            x = x ^ ((v8u)((x & ABS) > INF) & (x ^ CANON_NAN));
            if (lanes == 4) {
                memcpy(out + (2 * v * rows + r) * 4, &x, 16);
                memcpy(out + ((2 * v + 1) * rows + r) * 4, (const char *)&x + 16, 16);
            } else {
                memcpy(out + (v * rows + r) * 8, &x, 32);
            }
        }
    }
    v8u bad = (v8u)least < MIN_NORMAL;
    v8u none = {0, 0, 0, 0, 0, 0, 0, 0};
    return memcmp(&bad, &none, sizeof bad) != 0;
}

/* One block of eight groups, lanes 4 or 8: gemv_block_avx2_k inlined with constant lanes and weight size (and, for
 * four lanes, whether the groups share their activations). */
__attribute__((target("avx2"))) static int gemv_block_avx2(const uint32_t *a, Py_ssize_t stride, Py_ssize_t step,
                                                           const void *b, uint32_t *out, Py_ssize_t m,
                                                           Py_ssize_t rows, Py_ssize_t lanes, int half)
{
    if (stride == 0 && lanes == 4 && half)
        return gemv_block_avx2_k(a, 0, step, b, out, m, rows, 4, 1, 1);
    if (stride == 0 && lanes == 4)
        return gemv_block_avx2_k(a, 0, step, b, out, m, rows, 4, 0, 1);
    if (lanes == 4)
        return half ? gemv_block_avx2_k(a, stride, step, b, out, m, rows, 4, 1, 0)
                    : gemv_block_avx2_k(a, stride, step, b, out, m, rows, 4, 0, 0);
    return half ? gemv_block_avx2_k(a, stride, step, b, out, m, rows, 8, 1, 0)
                : gemv_block_avx2_k(a, stride, step, b, out, m, rows, 8, 0, 0);
}

/* Sixteen groups of four lanes that share their activations (stride 0) with bf16 weights, the decode's weight GEMVs
 * on the chip, in 16-lane AVX-512 vectors (four groups a vector) where the processor has AVX-512F and AVX-512BW
 * (checked once, at import; simd() may lower the level): the same element-wise IEEE operations in the same order as
 * gemv_block_avx2_k, with the denormals-are-zero masks as mask registers, so the same results and the same return.
 * Four steps of two groups' weights are one 64-byte vector; one permutation a vector and step picks four groups'
 * values at a step and widens them (each value in its word's top half). */
#define GEMV_AVX512 1
#define BLOCK16 16

static int have_avx512 = 0;

/* Denormals-are-zero on sixteen words (a zero exponent field keeps only the sign), and the canonical NaN for every
 * NaN: the GEMV blocks' and the PCU stages' AVX-512 forms of daz() and canon(). */
__attribute__((target("avx512f"), always_inline)) static inline __m512i daz_avx512(__m512i x)
{
    return _mm512_mask_and_epi32(x, _mm512_testn_epi32_mask(x, _mm512_set1_epi32((int)EXP)), x,
                                 _mm512_set1_epi32((int)SIGN));
}

__attribute__((target("avx512f"), always_inline)) static inline __m512i canon_avx512(__m512i x)
{
    return _mm512_mask_mov_epi32(x, _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32((int)ABS)),
                                                             _mm512_set1_epi32((int)INF)),
                                 _mm512_set1_epi32((int)CANON_NAN));
}

/* One step of a vector of four groups: ``bv`` the weights with denormals-are-zero applied; with ``check``, the least
 * |p| - 1 of its products into ``least`` (as gemv_block_avx2_k). */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void gemv_step_avx512(
    __m512 av, __m512i bv, __m512i *acc, __m512i *least, int check)
{
    __m512 p = _mm512_mul_ps(av, _mm512_castsi512_ps(bv));
    if (check)
        *least = _mm512_min_epu32(*least, _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(p),
                                                                            _mm512_set1_epi32((int)ABS)),
                                                           _mm512_set1_epi32(1)));
    *acc = daz_avx512(_mm512_castps_si512(_mm512_add_ps(p, _mm512_castsi512_ps(*acc))));
}

/* The block, and whether its results are to be discarded: with ``check``, where some product is tiny (as
 * gemv_block_avx2_k); without, where the least nonzero |activation| times the least nonzero |weight| (after
 * denormals-are-zero) is under 2**-125, so that some product could be (every product of nonzero operands is at
 * least that exactly, so otherwise rounds to at least 2**-125; products with a zero, an infinity or a NaN are never
 * tiny), which spares each product's test. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline int gemv_block_avx512_k(
    const uint32_t *a, Py_ssize_t step, const uint16_t *b, uint32_t *out, Py_ssize_t m, Py_ssize_t rows, int check)
{
    /* Word 2e + 1 of the vector at step t (element e: group k = e / 4 of the vector's four, lane e % 4) comes from
     * word (k % 2) * 16 + 4t + e % 4 of the pair of groups k / 2 (the second table: + 32); even words are zeros. */
    __m512i pick[4];
    for (int t = 0; t < 4; t++) {
        uint16_t idx[32];
        for (int e = 0; e < 16; e++) {
            int k = e / 4;
            idx[2 * e] = 0;
            idx[2 * e + 1] = (uint16_t)((k / 2) * 32 + (k % 2) * 16 + 4 * t + e % 4);
        }
        pick[t] = _mm512_loadu_si512((const void *)idx);
    }
    const __mmask32 odd = 0xAAAAAAAAu;
    const __m512i hexp = _mm512_set1_epi16((short)(EXP >> 16)), hsign = _mm512_set1_epi16((short)(SIGN >> 16));
    const __m512i habs = _mm512_set1_epi16(0x7FFF), hone = _mm512_set1_epi16(1);
    __m512i least = _mm512_set1_epi32(-1);
    /* Without ``check``: the least nonzero |weight| - 1 (bf16 halves; the steps one by one: words) and the least
     * nonzero |activation| - 1 (unsigned: a zero wraps to the top). */
    __m512i least_b16 = _mm512_set1_epi32(-1), least_b32 = _mm512_set1_epi32(-1);
    uint32_t least_a = 0xFFFFFFFFu;
    __m512i acc[4];
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (int v = 0; v < 4; v++)
            acc[v] = _mm512_setzero_si512();
        Py_ssize_t j = 0;
        for (; m - j >= 4; j += 4) {
            __m512i pair[8];
            /* Groups 2q and 2q + 1, steps j .. j + 3: four lanes of bf16 a step, 32 bytes a group. */
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) {
                pair[q] = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b + ((2 * q) * m + j) * 4))),
                    _mm256_loadu_si256((const __m256i *)(b + ((2 * q + 1) * m + j) * 4)), 1);
                /* Denormals-are-zero on the bf16 values, once for the four steps: a zero exponent field keeps only
                 * the sign (the widened word's exponent is the value's). */
                pair[q] = _mm512_mask_mov_epi16(pair[q], _mm512_testn_epi16_mask(pair[q], hexp),
                                                _mm512_and_si512(pair[q], hsign));
                if (!check)
                    least_b16 = _mm512_min_epu16(least_b16,
                                                 _mm512_sub_epi16(_mm512_and_si512(pair[q], habs), hone));
            }
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                uint32_t x = daz(a[(j + t) * step + r]);
                if (!check && (x & ABS) - 1u < least_a)
                    least_a = (x & ABS) - 1u;
                __m512 av = _mm512_set1_ps(fl(x));
#pragma GCC unroll 4
                for (int v = 0; v < 4; v++)
                    gemv_step_avx512(av, _mm512_maskz_permutex2var_epi16(odd, pair[2 * v], pick[t], pair[2 * v + 1]),
                                     &acc[v], &least, check);
            }
        }
        for (; j < m; j++) {
            uint32_t x = daz(a[j * step + r]);
            if (!check && (x & ABS) - 1u < least_a)
                least_a = (x & ABS) - 1u;
            __m512 av = _mm512_set1_ps(fl(x));
            for (int v = 0; v < 4; v++) {
                uint64_t w[4];
                for (int k = 0; k < 4; k++)
                    memcpy(&w[k], b + ((4 * v + k) * m + j) * 4, 8);
                __m512i bv = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), 16);
                bv = daz_avx512(bv);
                if (!check)
                    least_b32 = _mm512_min_epu32(least_b32, _mm512_sub_epi32(
                        _mm512_and_si512(bv, _mm512_set1_epi32((int)ABS)), _mm512_set1_epi32(1)));
                gemv_step_avx512(av, bv, &acc[v], &least, check);
            }
        }
        for (int v = 0; v < 4; v++) {
            uint32_t words[16];
            _mm512_storeu_si512((void *)words, canon_avx512(acc[v]));
            for (int k = 0; k < 4; k++)
                memcpy(out + ((4 * v + k) * rows + r) * 4, words + 4 * k, 16);
        }
    }
    if (check)
        return _mm512_cmplt_epu32_mask(least, _mm512_set1_epi32((int)MIN_NORMAL)) != 0;
    /* The least nonzero |weight| as a word (a half h - 1 of 0xFFFF: none, |h| being at most 0x7FFF). */
    uint16_t halves[32];
    uint32_t words[16], b16 = 0xFFFFu, b32 = 0xFFFFFFFFu;
    _mm512_storeu_si512((void *)halves, least_b16);
    _mm512_storeu_si512((void *)words, least_b32);
    for (int k = 0; k < 32; k++)
        b16 = halves[k] < b16 ? halves[k] : b16;
    for (int k = 0; k < 16; k++)
        b32 = words[k] < b32 ? words[k] : b32;
    uint32_t least_w = b16 == 0xFFFFu ? b32 : ((b16 + 1u) << 16) - 1u < b32 ? ((b16 + 1u) << 16) - 1u : b32;
    if (least_a == 0xFFFFFFFFu || least_w == 0xFFFFFFFFu)
        return 0;
    /* Exact in double; an infinity or a NaN (every such operand's products are infinities or NaNs) compares false. */
    return (double)fl(least_a + 1u) * (double)fl(least_w + 1u) < 0x1p-125;
}

/* Sixteen groups: without each product's test first, with it where the bound does not rule tiny products out. */
__attribute__((target("avx512f,avx512bw"))) static int gemv_block_avx512(const uint32_t *a, Py_ssize_t step,
                                                                         const uint16_t *b, uint32_t *out,
                                                                         Py_ssize_t m, Py_ssize_t rows)
{
    return gemv_block_avx512_k(a, step, b, out, m, rows, 0) && gemv_block_avx512_k(a, step, b, out, m, rows, 1);
}
#endif

/* gemv(a, b, out, groups, m, rows, lanes, a_group_stride, a_step_stride[, half]): out[g, r, l] = the ordered sum over j
 * of a[g * a_group_stride + j * a_step_stride + r] x b[g, j, l] (a_group_stride 0: one activation for every group);
 * with half 1, b holds 16-bit bf16 values, each the top half of its weight (an AGCU's bf16 widening, done here). */
/* The GEMV of gemv() on checked operands: ``a`` (activations, group g's step j at g stride + j step), ``b`` (the
 * weights, groups x m x lanes words or bf16 halves), ``out`` (groups x rows x lanes). No Python calls (the GIL may
 * be released). */
static void gemv_run(const uint32_t *pa, const char *pb, uint32_t *po, Py_ssize_t groups, Py_ssize_t m,
                     Py_ssize_t rows, Py_ssize_t lanes, Py_ssize_t stride, Py_ssize_t step, int half)
{
    Py_ssize_t b_size = half ? 2 : 4;
    Py_ssize_t g = 0;
#ifdef GEMV_AVX2
    if (simd_level >= 2 && lanes == 4 && stride == 0 && half)
        for (; groups - g >= BLOCK16; g += BLOCK16) {
            const char *gb = pb + g * m * lanes * b_size;
            uint32_t *go = po + g * rows * lanes;
            /* Some product is tiny (the policy's rounding): those groups step by step. */
            if (gemv_block_avx512(pa, step, (const uint16_t *)gb, go, m, rows))
                for (Py_ssize_t k = 0; k < BLOCK16; k++)
                    gemv_group(pa, step, gb + k * m * lanes * b_size, go + k * rows * lanes, m, rows, lanes, half);
        }
    if (simd_level >= 1 && (lanes == 4 || lanes == 8))
        for (; groups - g >= BLOCK8; g += BLOCK8) {
            const uint32_t *ga = pa + g * stride;
            const char *gb = pb + g * m * lanes * b_size;
            uint32_t *go = po + g * rows * lanes;
            /* Some product is tiny (the policy's rounding): those groups step by step. */
            if (gemv_block_avx2(ga, stride, step, gb, go, m, rows, lanes, half))
                for (Py_ssize_t k = 0; k < BLOCK8; k++)
                    gemv_group(ga + k * stride, step, gb + k * m * lanes * b_size, go + k * rows * lanes, m, rows,
                               lanes, half);
        }
#endif
    for (; g < groups; g += BLOCK) {
        Py_ssize_t nb = groups - g < BLOCK ? groups - g : BLOCK;
        const uint32_t *ga = pa + g * stride;
        const char *gb = pb + g * m * lanes * b_size;
        uint32_t *go = po + g * rows * lanes;
        /* Constant block and chunk counts (and weight sizes) let the compiler keep the accumulators in vector
         * registers. */
        int simd = lanes % 4 == 0 && (
            half ? (nb == BLOCK && lanes == 4 ? gemv_block_simd(ga, stride, step, gb, go, BLOCK, m, rows, 1, 1) == 0
                    : nb == BLOCK && lanes == 8 ? gemv_block_simd(ga, stride, step, gb, go, BLOCK, m, rows, 2, 1) == 0
                    : gemv_block_simd(ga, stride, step, gb, go, nb, m, rows, lanes / 4, 1) == 0)
            : nb == BLOCK && lanes == 4 ? gemv_block_simd(ga, stride, step, gb, go, BLOCK, m, rows, 1, 0) == 0
            : nb == BLOCK && lanes == 8 ? gemv_block_simd(ga, stride, step, gb, go, BLOCK, m, rows, 2, 0) == 0
            : gemv_block_simd(ga, stride, step, gb, go, nb, m, rows, lanes / 4, 0) == 0);
        /* Some product is tiny (the policy's rounding): those groups step by step. */
        if (!simd)
            for (Py_ssize_t k = 0; k < nb; k++)
                gemv_group(ga + k * stride, step, gb + k * m * lanes * b_size, go + k * rows * lanes, m, rows, lanes,
                           half);
    }
}

static PyObject *gemv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n[6];
    struct held h = {.count = 0};
    if (nargs != 9 && nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "gemv takes 9 or 10 arguments");
        return NULL;
    }
    int half = 0;
    if (nargs == 10) {
        long flag = PyLong_AsLong(args[9]);
        if (flag == -1 && PyErr_Occurred())
            return NULL;
        if (flag != 0 && flag != 1) {
            PyErr_SetString(PyExc_ValueError, "gemv: half must be 0 or 1");
            return NULL;
        }
        half = (int)flag;
    }
    Py_ssize_t b_size = half ? 2 : 4;
    if (sizes(args, 3, 6, n) < 0)
        return NULL;
    Py_ssize_t groups = n[0], m = n[1], rows = n[2], lanes = n[3], stride = n[4], step = n[5];
    if (lanes > MAX_LANES) {
        PyErr_SetString(PyExc_ValueError, "gemv: too many lanes");
        return NULL;
    }
    /* The items each operand must hold: a's last index + 1, b's groups x m x lanes, out's groups x rows x lanes. */
    Py_ssize_t a_items = 0, a_last, gm, b_items, out_items;
    if (groups && m &&
        (mul_items(groups - 1, stride, &a_last) < 0 || mul_add_items(m - 1, step, a_last, &a_last) < 0 ||
         add_items(a_last, rows, &a_items) < 0))
        return NULL;
    if (mul_items(groups, m, &gm) < 0 || mul_items(gm, lanes, &b_items) < 0 ||
        mul_items(groups, rows, &out_items) < 0 || mul_items(out_items, lanes, &out_items) < 0)
        return NULL;
    const uint32_t *pa = hold(&h, args[0], 0, a_items, 4);
    const char *pb = pa ? hold(&h, args[1], 0, b_items, b_size) : NULL;
    if (pb && h.views[1].len != b_items * b_size)
        PyErr_Format(PyExc_ValueError, "gemv: the weights hold %zd words, not %zd x %zd x %zd",
                     h.views[1].len / b_size, groups, m, lanes);
    uint32_t *po = pb && h.views[1].len == b_items * b_size ? hold(&h, args[2], 1, out_items, 4) : NULL;
    if (!po) {
        release(&h);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    gemv_run(pa, pb, po, groups, m, rows, lanes, stride, step, half);
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
}

/* --- reductions ------------------------------------------------------------------------------------------------ */

/* lane_sums(x, out, n, lanes): the PCU's pairwise cross-lane sum of each row of x (n, lanes), lanes a power of two
 * of at least 2: level by level, lane pairs (2i, 2i + 1) added. */
static PyObject *lane_sums(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n[2];
    struct held h = {.count = 0};
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "lane_sums takes 4 arguments");
        return NULL;
    }
    if (sizes(args, 2, 2, n) < 0)
        return NULL;
    Py_ssize_t rows = n[0], lanes = n[1];
    if (lanes < 2 || lanes > MAX_LANES || (lanes & (lanes - 1))) {
        PyErr_SetString(PyExc_ValueError, "lane_sums: lanes must be a power of two from 2 to 64");
        return NULL;
    }
    Py_ssize_t cells;
    if (mul_items(rows, lanes, &cells) < 0)
        return NULL;
    const uint32_t *px = hold(&h, args[0], 0, cells, 4);
    uint32_t *po = px ? hold(&h, args[1], 1, rows, 4) : NULL;
    if (!po) {
        release(&h);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    uint32_t t[MAX_LANES];
    for (Py_ssize_t i = 0; i < rows; i++) {
        for (Py_ssize_t l = 0; l < lanes; l++)
            t[l] = daz(px[i * lanes + l]);
        for (Py_ssize_t w = lanes; w > 1; w >>= 1)
            for (Py_ssize_t l = 0; l < w / 2; l++)
                t[l] = add_raw(t[2 * l], t[2 * l + 1]);
        po[i] = canon(t[0]);
    }
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
}

/* ordered_sums(x, out, groups, m, start): each row's sum of x (groups, m) in order, acc = x_j + acc from
 * acc = start (a pattern), as the golden accumulation steps. */
static PyObject *ordered_sums(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n[2];
    struct held h = {.count = 0};
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "ordered_sums takes 5 arguments");
        return NULL;
    }
    if (sizes(args, 2, 2, n) < 0)
        return NULL;
    unsigned long start = PyLong_AsUnsignedLong(args[4]);
    if (start == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (start > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "ordered_sums: start is not a 32-bit pattern");
        return NULL;
    }
    Py_ssize_t groups = n[0], m = n[1], cells;
    if (mul_items(groups, m, &cells) < 0)
        return NULL;
    const uint32_t *px = hold(&h, args[0], 0, cells, 4);
    uint32_t *po = px ? hold(&h, args[1], 1, groups, 4) : NULL;
    if (!po) {
        release(&h);
        return NULL;
    }
    uint32_t first = daz((uint32_t)start);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < groups; g++) {
        uint32_t acc = first;
        for (Py_ssize_t j = 0; j < m; j++)
            acc = add_raw(daz(px[g * m + j]), acc);
        po[g] = canon(acc);
    }
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
}

/* --- element-wise operations ------------------------------------------------------------------------------------ */

/* binary(op, a, b, out, n, lanes, a_rows, a_lanes, b_rows, b_lanes): out (n, lanes) = a op b, with each operand's
 * element (i, l) at i * x_rows + l * x_lanes (strides in items, 0 to broadcast). op: 0 add, 1 sub, 2 mul (canonical),
 * 3 max, 4 min. */
static PyObject *binary(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n[7];
    struct held h = {.count = 0};
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "binary takes 10 arguments");
        return NULL;
    }
    long op = PyLong_AsLong(args[0]);
    if (op == -1 && PyErr_Occurred())
        return NULL;
    if (op < 0 || op > 4) {
        PyErr_SetString(PyExc_ValueError, "binary: unknown operation");
        return NULL;
    }
    if (sizes(args, 4, 6, n) < 0)
        return NULL;
    Py_ssize_t rows = n[0], lanes = n[1], ar = n[2], al = n[3], br = n[4], bl = n[5];
    /* Each operand's last index + 1, and out's rows x lanes. */
    Py_ssize_t a_items = 0, b_items = 0, out_items, last;
    if (rows && lanes &&
        (mul_items(rows - 1, ar, &last) < 0 || mul_add_items(lanes - 1, al, last, &last) < 0 ||
         add_items(last, 1, &a_items) < 0 || mul_items(rows - 1, br, &last) < 0 ||
         mul_add_items(lanes - 1, bl, last, &last) < 0 || add_items(last, 1, &b_items) < 0))
        return NULL;
    if (mul_items(rows, lanes, &out_items) < 0)
        return NULL;
    const uint32_t *pa = hold(&h, args[1], 0, a_items, 4), *pb = pa ? hold(&h, args[2], 0, b_items, 4) : NULL;
    uint32_t *po = pb ? hold(&h, args[3], 1, out_items, 4) : NULL;
    if (!po) {
        release(&h);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < rows; i++) {
        const uint32_t *ra = pa + i * ar, *rb = pb + i * br;
        uint32_t *ro = po + i * lanes;
        switch (op) {
        case 0:
            for (Py_ssize_t l = 0; l < lanes; l++)
                ro[l] = canon(add_raw(daz(ra[l * al]), daz(rb[l * bl])));
            break;
        case 1:
            for (Py_ssize_t l = 0; l < lanes; l++)
                ro[l] = canon(add_raw(daz(ra[l * al]), daz(rb[l * bl]) ^ SIGN));
            break;
        case 2:
            for (Py_ssize_t l = 0; l < lanes; l++)
                ro[l] = canon(mul_raw(daz(ra[l * al]), daz(rb[l * bl])));
            break;
        default:
            for (Py_ssize_t l = 0; l < lanes; l++) {
                uint32_t x = daz(ra[l * al]), y = daz(rb[l * bl]);
                if ((x & ABS) > INF || (y & ABS) > INF) {
                    ro[l] = CANON_NAN;
                    continue;
                }
                /* The total order with -0 < +0 (fp32.py _max_key): keys one to one with the patterns. */
                int32_t kx = (int32_t)x ^ (((int32_t)x >> 31) & 0x7FFFFFFF);
                int32_t ky = (int32_t)y ^ (((int32_t)y >> 31) & 0x7FFFFFFF);
                ro[l] = (op == 3 ? kx >= ky : kx <= ky) ? x : y;
            }
        }
    }
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
}

/* --- the PCU tail functions ------------------------------------------------------------------------------------ */

/* sw/golden/tail.py step for step (the one-value forms of sw/model/tail.py): the same integer operations, on 128-bit
 * integers, whose products here stay below 2**90 (24-bit significands, 35-bit fixed-point values, 13-bit seeds), and
 * whose right shifts of negative values are arithmetic (floor, as Python's). The constant tables are facts/tail.py's,
 * given once by set_tables. */
typedef __int128 i128;
#define FRAC 0x007FFFFFu

static int64_t T_EXP[128], T_RECIP[128], T_RSQRT[128];
static int64_t LOG2E, POLY1, POLY2, POLY3, X_HUGE, HUGE_N, SEED_FRAC;
static int tables_set;

/* x >> k (floor) for any k >= 0. */
static inline i128 shr(i128 x, int64_t k) { return x >> (k > 127 ? 127 : k); }

static inline void exp_core(int64_t sign, int64_t e, int64_t frac, i128 *m, int64_t *n)
{
    i128 sig = e == 0 ? 0 : (frac | (1 << 23));
    i128 t = shr(sig * LOG2E, 156 - e > 0 ? 156 - e : 0);
    if (sign == 1)
        t = -t;
    i128 f;
    if (e >= X_HUGE) {
        *n = sign == 1 ? -HUGE_N : HUGE_N;
        f = 0;
    } else {
        *n = (int64_t)(t >> 32);
        f = t & 0xFFFFFFFF;
    }
    i128 r = f & ((1 << 25) - 1);
    i128 p = (POLY3 * r) >> 32;
    p = ((POLY2 + p) * r) >> 32;
    p = ((POLY1 + p) * r) >> 32;
    i128 table = T_EXP[(int)(f >> 25)];
    *m = table + ((table * p) >> 32);
}

static inline i128 recip_core(i128 d)
{
    i128 y = (d >> 33) == 1 ? (i128)1 << (SEED_FRAC - 1)
           : (d & 0xFFFFFFFF) == 0 ? (i128)1 << SEED_FRAC : (i128)T_RECIP[(int)((d >> 25) & 0x7F)];
    i128 e0 = ((i128)1 << 45) - d * y;
    y = (y * e0) >> 24;
    i128 delta = (((i128)1 << 64) - d * y) >> 24;
    return y + ((y * delta) >> 40);
}

static inline i128 rsqrt_core(int64_t e, int64_t frac)
{
    int64_t odd = 1 - (e & 1);
    i128 dd = (i128)(frac | (1 << 23)) << odd;
    i128 y = odd == 0 && frac == 0 ? (i128)1 << SEED_FRAC : (i128)T_RSQRT[(odd << 6) | (frac >> 17)];
    i128 h = 3 * ((i128)1 << 47) - dd * (y * y);
    y = (y * h) >> 28;
    i128 delta = (((i128)1 << 55) - dd * ((y * y) >> 32)) >> 15;
    return y + ((y * delta) >> 41);
}

static inline int bit_length(i128 p)
{
    uint64_t hi = (uint64_t)((unsigned __int128)p >> 64), lo = (uint64_t)p;
    return hi ? 128 - __builtin_clzll(hi) : lo ? 64 - __builtin_clzll(lo) : 0;
}

/* Round a s 2**exp to fp32 (RNE, flush to zero, overflow to infinity), sign given. */
static inline uint32_t finish(i128 a, i128 s, int64_t exp, int64_t sign)
{
    i128 p = a * s;
    int bits = bit_length(p);
    int lead = p < 0 || bits > 58 ? 57 : bits > 54 ? bits - 1 : 53;
    i128 sig = p >> (lead - 23);
    i128 guard = (p >> (lead - 24)) & 1;
    i128 sticky = (p & (((i128)1 << (lead - 24)) - 1)) != 0;
    i128 rounded = sig + (guard & (sticky | (sig & 1)));
    int64_t e = lead + exp + (int64_t)(rounded >> 24);
    uint32_t out = e >= 255 ? INF : e <= 0 ? 0 : ((uint32_t)e << 23) | ((uint32_t)rounded & FRAC);
    return out | ((uint32_t)sign << 31);
}

static inline void logistic(int64_t sign, int64_t e, int64_t frac, i128 *s, int64_t *ns)
{
    i128 m;
    int64_t n;
    exp_core(1, e, frac, &m, &n);
    /* n <= 0 here (the exponent of e**-|x|). */
    i128 r = recip_core(((i128)1 << 32) + shr(m, -n));
    if (sign == 1) {
        *s = (m * r) >> 32;
        *ns = n;
    } else {
        *s = r;
        *ns = 0;
    }
}

static uint32_t tail_one(int op, uint32_t x)
{
    x = daz(x);
    int64_t sign = x >> 31, e = (x >> 23) & 0xFF, frac = x & FRAC;
    int nan = e == 255 && frac;
    i128 m, s;
    int64_t n, ns;
    switch (op) {
    case 0: /* exp */
        if (nan)
            return CANON_NAN;
        exp_core(sign, e, frac, &m, &n);
        return finish(1 << 23, m, 72 + n, 0);
    case 1: /* recip */
        if (nan)
            return CANON_NAN;
        if (e == 0)
            return ((uint32_t)sign << 31) | INF;
        if (e == 255)
            return (uint32_t)sign << 31;
        return finish(1 << 23, recip_core((i128)(frac | (1 << 23)) << 9), 72 + 127 - e, sign);
    case 2: /* rsqrt */
        if (e == 0)
            return ((uint32_t)sign << 31) | INF;
        if (e == 255 || sign == 1)
            return sign == 0 && frac == 0 ? 0 : CANON_NAN;
        {
            int64_t odd = 1 - (e & 1);
            return finish(1 << 23, rsqrt_core(e, frac), 72 - ((e - 127 - odd) >> 1), 0);
        }
    case 3: /* sigmoid */
        if (nan)
            return CANON_NAN;
        logistic(sign, e, frac, &s, &ns);
        return finish(1 << 23, s, 72 + ns, 0);
    default: /* silu */
        if (e == 0)
            return (uint32_t)sign << 31;
        if (nan)
            return CANON_NAN;
        logistic(sign, e, frac, &s, &ns);
        return finish(frac | (1 << 23), s, e - 55 + ns, sign);
    }
}

/* set_tables(exp_table, recip_seed, rsqrt_seed, log2e, poly1, poly2, poly3, x_huge, huge_n, seed_frac): facts/tail.py's
 * constants (three sequences of 128 ints, then integers). All are read and checked before any is kept, so a refused
 * call leaves the tables as they were. The bounds keep every intermediate of the cores within 128 bits whatever the
 * values: seeds below 2**(SEED_FRAC + 1) with SEED_FRAC from 1 to 13, exp table entries below 2**33, polynomial
 * coefficients below 2**32 and log2(e) below 2**40 (then e**-|x| < 2**34, the recip step's largest product, in
 * sigmoid, below 2**125 and the rsqrt step's below 2**96; facts/tail.py: 12, < 2**33, < 2**32, < 2**38.6). */
#define SEED_FRAC_MAX 13

static PyObject *set_tables(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t tables[3][128], scalars[7];
    /* LOG2E, POLY1, POLY2, POLY3, X_HUGE, HUGE_N, SEED_FRAC: each at most these (and at least 0; SEED_FRAC 1). */
    static const int64_t scalar_max[7] = {((int64_t)1 << 40) - 1, ((int64_t)1 << 32) - 1, ((int64_t)1 << 32) - 1,
                                          ((int64_t)1 << 32) - 1, 255, ((int64_t)1 << 40) - 1, SEED_FRAC_MAX};
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "set_tables takes 10 arguments");
        return NULL;
    }
    for (int k = 0; k < 7; k++) {
        long long v = PyLong_AsLongLong(args[3 + k]);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (v < (k == 6 ? 1 : 0) || v > scalar_max[k]) {
            PyErr_Format(PyExc_ValueError, "set_tables: argument %d (%lld) is out of range", 3 + k, v);
            return NULL;
        }
        scalars[k] = v;
    }
    /* exp table entries below 2**33; seeds below 2**(SEED_FRAC + 1). */
    int64_t entry_max[3] = {((int64_t)1 << 33) - 1, ((int64_t)1 << (scalars[6] + 1)) - 1,
                            ((int64_t)1 << (scalars[6] + 1)) - 1};
    for (int k = 0; k < 3; k++) {
        PyObject *seq = PySequence_Fast(args[k], "set_tables: a table is not a sequence");
        if (!seq)
            return NULL;
        if (PySequence_Fast_GET_SIZE(seq) != 128) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "set_tables: a table has not 128 entries");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < 128; i++) {
            long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return NULL;
            }
            if (v < 0 || v > entry_max[k]) {
                Py_DECREF(seq);
                PyErr_Format(PyExc_ValueError, "set_tables: table %d entry %zd (%lld) is out of range", k, i, v);
                return NULL;
            }
            tables[k][i] = v;
        }
        Py_DECREF(seq);
    }
    memcpy(T_EXP, tables[0], sizeof T_EXP);
    memcpy(T_RECIP, tables[1], sizeof T_RECIP);
    memcpy(T_RSQRT, tables[2], sizeof T_RSQRT);
    LOG2E = scalars[0], POLY1 = scalars[1], POLY2 = scalars[2], POLY3 = scalars[3];
    X_HUGE = scalars[4], HUGE_N = scalars[5], SEED_FRAC = scalars[6];
    tables_set = 1;
    Py_RETURN_NONE;
}

/* tail(op, x, out, n): out = the tail function op (0 exp, 1 recip, 2 rsqrt, 3 sigmoid, 4 silu) of each of n
 * patterns. */
static PyObject *tail(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n;
    struct held h = {.count = 0};
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "tail takes 4 arguments");
        return NULL;
    }
    if (!tables_set) {
        PyErr_SetString(PyExc_RuntimeError, "tail: set_tables was not called");
        return NULL;
    }
    long op = PyLong_AsLong(args[0]);
    if (op == -1 && PyErr_Occurred())
        return NULL;
    if (op < 0 || op > 4) {
        PyErr_SetString(PyExc_ValueError, "tail: unknown function");
        return NULL;
    }
    if (sizes(args, 3, 1, &n) < 0)
        return NULL;
    const uint32_t *px = hold(&h, args[1], 0, n, 4);
    uint32_t *po = px ? hold(&h, args[2], 1, n, 4) : NULL;
    if (!po) {
        release(&h);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        po[i] = tail_one((int)op, px[i]);
    Py_END_ALLOW_THREADS
    release(&h);
    Py_RETURN_NONE;
}

/* --- a PCU run ------------------------------------------------------------------------------------------------- */

/* The fp32 element-wise stage operations (sw/model/pcu.py _OPS): 0 pass, 1 add, 2 sub, 3 mul, 4 fma, 5 max, 6 min. */
static inline uint32_t stage_op(int64_t op, uint32_t a, uint32_t b, uint32_t c)
{
    switch (op) {
    case 0:
        return a;
    case 1:
        return canon(add_raw(daz(a), daz(b)));
    case 2:
        return canon(add_raw(daz(a), daz(b) ^ SIGN));
    case 3:
        return canon(mul_raw(daz(a), daz(b)));
    case 4:
        return canon(add_raw(canon(mul_raw(daz(a), daz(b))), daz(c)));
    default: {
        uint32_t x = daz(a), y = daz(b);
        if ((x & ABS) > INF || (y & ABS) > INF)
            return CANON_NAN;
        /* The total order with -0 < +0 (fp32.py _max_key): keys one to one with the patterns. */
        int32_t kx = (int32_t)x ^ (((int32_t)x >> 31) & 0x7FFFFFFF);
        int32_t ky = (int32_t)y ^ (((int32_t)y >> 31) & 0x7FFFFFFF);
        return (op == 5 ? kx >= ky : kx <= ky) ? x : y;
    }
    }
}

#ifdef GEMV_AVX2
/* A PCU stage's op (stage_op) on every element in 16-lane AVX-512 vectors, where simd_level is 2 and ``lanes`` a
 * power of two: the same IEEE operations, masks and order element by element, so the same results. Operand q is a
 * register (row stride ``lanes``, lane stride 1), a scalar per row (1, 0) or one word (0, 0). A block where some
 * product is subnormal or 2**-126 in magnitude (mul_raw's rare case) is done by stage_op. */
__attribute__((target("avx512f"), always_inline)) static inline __m512i stage_add(__m512i a, __m512i b)
{
    __m512i r = _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)));
    return daz_avx512(r);
}

/* mul_raw's IEEE product; ``tiny`` gets the lanes where it is the rare case. */
__attribute__((target("avx512f"), always_inline)) static inline __m512i stage_mul(__m512i a, __m512i b,
                                                                                __mmask16 *tiny)
{
    __m512i r = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)));
    *tiny |= _mm512_cmplt_epu32_mask(_mm512_sub_epi32(_mm512_and_si512(r, _mm512_set1_epi32((int)ABS)),
                                                      _mm512_set1_epi32(1)),
                                     _mm512_set1_epi32((int)MIN_NORMAL));
    return r;
}

/* Elements e .. e + 15 of an operand (``keep``: those of the ``avail`` left; ``shift``: log2 of ``lanes``). */
__attribute__((target("avx512f"), always_inline)) static inline __m512i stage_operand(
    const uint32_t *base, Py_ssize_t rs, Py_ssize_t e, Py_ssize_t avail, int shift, __mmask16 keep)
{
    if (rs == 0)
        return _mm512_set1_epi32((int)base[0]);
    if (rs != 1)
        return _mm512_maskz_loadu_epi32(keep, base + e);
    if (shift >= 4)
        return _mm512_set1_epi32((int)base[e >> shift]);
    /* The rows' scalars (16 / lanes rows at most, those left), each repeated ``lanes`` times. */
    Py_ssize_t rows = (avail < 16 ? avail : 16) >> shift;
    __m512i per = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), shift);
    return _mm512_permutexvar_epi32(per, _mm512_maskz_loadu_epi32((__mmask16)((1u << rows) - 1u), base + (e >> shift)));
}

__attribute__((target("avx512f"))) static void stage_avx512(int64_t op, const uint32_t *const base[3],
                                                            const Py_ssize_t rs[3], uint32_t *dst, Py_ssize_t n,
                                                            Py_ssize_t lanes)
{
    int shift = __builtin_ctzll((unsigned long long)lanes);
    Py_ssize_t cells = n * lanes;
    for (Py_ssize_t e = 0; e < cells; e += 16) {
        __mmask16 keep = cells - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cells - e)) - 1u);
        __m512i a = stage_operand(base[0], rs[0], e, cells - e, shift, keep);
        __m512i r;
        if (op == 0) {
            r = a;
        } else {
            __m512i b = stage_operand(base[1], rs[1], e, cells - e, shift, keep);
            __m512i x = daz_avx512(a), y = daz_avx512(b);
            __mmask16 tiny = 0;
            switch (op) {
            case 1:
                r = canon_avx512(stage_add(x, y));
                break;
            case 2:
                r = canon_avx512(stage_add(x, _mm512_xor_si512(y, _mm512_set1_epi32((int)SIGN))));
                break;
            case 3:
                r = canon_avx512(stage_mul(x, y, &tiny));
                break;
            case 4: {
                __m512i c = daz_avx512(stage_operand(base[2], rs[2], e, cells - e, shift, keep));
                r = canon_avx512(stage_add(canon_avx512(stage_mul(x, y, &tiny)), c));
                break;
            }
            default: {
                __m512i abs = _mm512_set1_epi32((int)ABS), inf = _mm512_set1_epi32((int)INF);
                __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, abs), inf) |
                                _mm512_cmpgt_epu32_mask(_mm512_and_si512(y, abs), inf);
                /* The total order with -0 < +0 (as stage_op). */
                __m512i kx = _mm512_xor_si512(x, _mm512_and_si512(_mm512_srai_epi32(x, 31), abs));
                __m512i ky = _mm512_xor_si512(y, _mm512_and_si512(_mm512_srai_epi32(y, 31), abs));
                __mmask16 first = op == 5 ? _mm512_cmpge_epi32_mask(kx, ky) : _mm512_cmple_epi32_mask(kx, ky);
                r = _mm512_mask_mov_epi32(y, first, x);
                r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32((int)CANON_NAN));
            }
            }
            if (tiny & keep) {
                /* mul_raw's rare case: these elements as stage_op does them. */
                uint32_t out[16];
                for (Py_ssize_t k = 0; k < 16 && e + k < cells; k++) {
                    Py_ssize_t i = (e + k) >> shift;
                    const uint32_t *p0 = base[0], *p1 = base[1], *p2 = base[2];
                    out[k] = stage_op(op, p0[rs[0] == 0 ? 0 : rs[0] == 1 ? i : e + k],
                                      p1[rs[1] == 0 ? 0 : rs[1] == 1 ? i : e + k],
                                      p2[rs[2] == 0 ? 0 : rs[2] == 1 ? i : e + k]);
                }
                r = _mm512_maskz_loadu_epi32(keep, out);
            }
        }
        _mm512_mask_storeu_epi32(dst + e, keep, r);
    }
}
#endif

/* pcu(program, stages, n, lanes, r0, r1, r2, s0, s1, out_reg, tail, vo, so_mode, reduce, starts, sizes, groups,
 *     scale, bias, post, so): a PCU run's arithmetic once its plan is made (sw/model/pcu.py PcuModel.apply).
 *
 * Registers r0..r2 hold n x lanes patterns (None: zeros), r3 zeros; scalars s0, s1 one per firing (None: zeros). Each
 * stage (program: int64 rows of op, a, b, c, dst, const; operand slots 0-3 the registers, 4 s0, 5 s1, 6 the stage's
 * const, 7 zero) runs on every element, then vo = tail(register out_reg) (tail -1 none, 0-4 exp, recip, rsqrt,
 * sigmoid, silu). so_mode 0: no scalars; 1 (every) or 2 (group): each firing's lanes reduced (reduce 0: the pairwise
 * sum tree; 1: the largest), for group folded over each group (starts, sizes: int64; a sum from -0 in order, or the
 * largest; a group of one untouched), then post(x * scale + bias) (post as tail) into so (n or groups values). A
 * single lane is taken as it is, as the PCU's reduction does. */
/* A PCU run of pcu() on checked operands; ``regs``: scratch of 4 x max(cells, 1) + max(n, 1) words whose registers
 * (cells words each) that no input fills are zero; the n words after them are written before they are read. No
 * Python calls (the GIL may be released). */
static void pcu_run(const int64_t *code, Py_ssize_t k_stages, Py_ssize_t n, Py_ssize_t lanes,
                    const uint32_t *const in[3], const uint32_t *const scal[2], Py_ssize_t out_reg, long tail_op,
                    uint32_t *vo, long so_mode, long reduce, const int64_t *starts, const int64_t *group_sizes,
                    Py_ssize_t groups, unsigned long scale, unsigned long bias, long post, uint32_t *so,
                    uint32_t *regs)
{
    Py_ssize_t cells = n * lanes;
    uint32_t *red = regs + 4 * (cells ? cells : 1);
    for (int k = 0; k < 3; k++)
        if (in[k])
            memcpy(regs + k * cells, in[k], (size_t)cells * 4);
    static const uint32_t zero = 0;
    for (Py_ssize_t k = 0; k < k_stages; k++) {
        const int64_t *st = code + 6 * k;
        uint32_t konst = (uint32_t)st[5];
        /* Each operand as a base pointer and strides (row, lane) in items. */
        const uint32_t *base[3];
        Py_ssize_t rs[3], ls[3];
        for (int q = 0; q < 3; q++) {
            int64_t slot = st[1 + q];
            if (slot < 4) {
                base[q] = regs + slot * cells, rs[q] = lanes, ls[q] = 1;
            } else if (slot < 6 && scal[slot - 4]) {
                base[q] = scal[slot - 4], rs[q] = 1, ls[q] = 0;
            } else {
                base[q] = slot == 6 ? &konst : &zero, rs[q] = 0, ls[q] = 0;
            }
        }
        uint32_t *dst = regs + st[4] * cells;
        int64_t op = st[0];
#ifdef GEMV_AVX2
        if (simd_level >= 2 && lanes > 0 && (lanes & (lanes - 1)) == 0) {
            stage_avx512(op, base, rs, dst, n, lanes);
            continue;
        }
#endif
        for (Py_ssize_t i = 0; i < n; i++)
            for (Py_ssize_t l = 0; l < lanes; l++)
                dst[i * lanes + l] = stage_op(op, base[0][i * rs[0] + l * ls[0]], base[1][i * rs[1] + l * ls[1]],
                                              base[2][i * rs[2] + l * ls[2]]);
    }
    const uint32_t *out = regs + out_reg * cells;
    for (Py_ssize_t i = 0; i < cells; i++)
        vo[i] = tail_op < 0 ? out[i] : tail_one((int)tail_op, out[i]);

    if (so_mode) {
        uint32_t t[MAX_LANES];
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint32_t *row = vo + i * lanes;
            if (lanes == 1) {
                red[i] = row[0];
            } else if (reduce == 0) {
                for (Py_ssize_t l = 0; l < lanes; l++)
                    t[l] = daz(row[l]);
                for (Py_ssize_t w = lanes; w > 1; w >>= 1)
                    for (Py_ssize_t l = 0; l < w / 2; l++)
                        t[l] = add_raw(t[2 * l], t[2 * l + 1]);
                red[i] = canon(t[0]);
            } else {
                uint32_t best = row[0];
                for (Py_ssize_t l = 1; l < lanes; l++)
                    best = stage_op(5, best, row[l], 0);
                red[i] = best;
            }
        }
        Py_ssize_t count = so_mode == 1 ? n : groups;
        for (Py_ssize_t g = 0; g < count; g++) {
            uint32_t x;
            if (so_mode == 1) {
                x = red[g];
            } else if (group_sizes[g] == 1) {
                x = red[starts[g]];
            } else if (reduce == 0) {
                uint32_t acc = SIGN;
                for (int64_t j = starts[g]; j < starts[g] + group_sizes[g]; j++)
                    acc = add_raw(daz(red[j]), acc);
                x = canon(acc);
            } else {
                x = red[starts[g]];
                for (int64_t j = starts[g] + 1; j < starts[g] + group_sizes[g]; j++)
                    x = stage_op(5, x, red[j], 0);
            }
            uint32_t y = stage_op(4, x, (uint32_t)scale, (uint32_t)bias);
            so[g] = post < 0 ? y : tail_one((int)post, y);
        }
    }
}

static PyObject *pcu(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct held h = {.count = 0};
    uint32_t *regs = NULL;
    if (nargs != 21) {
        PyErr_SetString(PyExc_TypeError, "pcu takes 21 arguments");
        return NULL;
    }
    Py_ssize_t dims[3];
    if (sizes(args, 1, 3, dims) < 0)
        return NULL;
    Py_ssize_t k_stages = dims[0], n = dims[1], lanes = dims[2];
    /* Each conversion checked before the next runs (a call with an exception set is not allowed). */
    Py_ssize_t out_reg, groups;
    long tail_op, so_mode, reduce, post;
    unsigned long scale, bias;
    if (((out_reg = PyLong_AsSsize_t(args[9])) == -1 && PyErr_Occurred()) ||
        ((tail_op = PyLong_AsLong(args[10])) == -1 && PyErr_Occurred()) ||
        ((so_mode = PyLong_AsLong(args[12])) == -1 && PyErr_Occurred()) ||
        ((reduce = PyLong_AsLong(args[13])) == -1 && PyErr_Occurred()) ||
        ((groups = PyLong_AsSsize_t(args[16])) == -1 && PyErr_Occurred()) ||
        ((scale = PyLong_AsUnsignedLong(args[17])) == (unsigned long)-1 && PyErr_Occurred()) ||
        ((bias = PyLong_AsUnsignedLong(args[18])) == (unsigned long)-1 && PyErr_Occurred()) ||
        ((post = PyLong_AsLong(args[19])) == -1 && PyErr_Occurred()))
        return NULL;
    if (out_reg < 0 || out_reg > 3 || tail_op < -1 || tail_op > 4 || so_mode < 0 || so_mode > 2 || reduce < 0 ||
        reduce > 1 || groups < 0 || groups > n || scale > 0xFFFFFFFFul || bias > 0xFFFFFFFFul || post < -1 ||
        post > 4 || lanes < 1 || lanes > MAX_LANES || (lanes & (lanes - 1))) {
        PyErr_SetString(PyExc_ValueError, "pcu: an argument is out of range");
        return NULL;
    }
    if ((tail_op >= 0 || post >= 0) && !tables_set) {
        PyErr_SetString(PyExc_RuntimeError, "pcu: set_tables was not called");
        return NULL;
    }
    Py_ssize_t cells, code_items, reg_items;
    /* n x lanes cells; the scratch: four registers and the n reductions. */
    if (mul_items(n, lanes, &cells) < 0 || mul_items(k_stages, 6, &code_items) < 0 ||
        mul_add_items(4, cells ? cells : 1, n ? n : 1, &reg_items) < 0)
        return NULL;
    const int64_t *code = hold(&h, args[0], 0, code_items, 8);
    if (!code)
        goto fail;
    for (Py_ssize_t k = 0; k < k_stages; k++) {
        const int64_t *st = code + 6 * k;
        if (st[0] < 0 || st[0] > 6 || st[1] < 0 || st[1] > 7 || st[2] < 0 || st[2] > 7 || st[3] < 0 || st[3] > 7 ||
            st[4] < 0 || st[4] > 3 || st[5] < 0 || st[5] > 0xFFFFFFFFll) {
            PyErr_SetString(PyExc_ValueError, "pcu: a stage is out of range");
            goto fail;
        }
    }
    const uint32_t *in[3] = {NULL, NULL, NULL}, *scal[2] = {NULL, NULL};
    for (int k = 0; k < 3; k++) {
        if (args[4 + k] == Py_None)
            continue;
        if (!(in[k] = hold(&h, args[4 + k], 0, cells, 4)))
            goto fail;
        /* A register is the unit's stream itself: n x lanes words exactly, as a reshape would insist. */
        if (h.views[h.count - 1].len != cells * 4) {
            PyErr_Format(PyExc_ValueError, "pcu: input %d holds %zd words, not %zd x %zd", k,
                         h.views[h.count - 1].len / 4, n, lanes);
            goto fail;
        }
    }
    for (int k = 0; k < 2; k++)
        if (args[7 + k] != Py_None && !(scal[k] = hold(&h, args[7 + k], 0, n, 4)))
            goto fail;
    uint32_t *vo = hold(&h, args[11], 1, cells, 4);
    if (!vo)
        goto fail;
    const int64_t *starts = NULL, *group_sizes = NULL;
    if (so_mode == 2) {
        if (!(starts = hold(&h, args[14], 0, groups, 8)) || !(group_sizes = hold(&h, args[15], 0, groups, 8)))
            goto fail;
        /* The groups are consecutive runs of firings. */
        for (Py_ssize_t g = 0; g < groups; g++)
            if (starts[g] < 0 || group_sizes[g] < 1 || starts[g] > n || group_sizes[g] > n - starts[g]) {
                PyErr_SetString(PyExc_ValueError, "pcu: a group is out of range");
                goto fail;
            }
    }
    Py_ssize_t so_count = so_mode == 0 ? 0 : so_mode == 1 ? n : groups;
    uint32_t *so = hold(&h, args[20], 1, so_count, 4);
    if (!so)
        goto fail;
    regs = PyMem_Calloc((size_t)reg_items, 4);
    if (!regs) {
        PyErr_NoMemory();
        goto fail;
    }

    Py_BEGIN_ALLOW_THREADS
    pcu_run(code, k_stages, n, lanes, in, scal, out_reg, tail_op, vo, so_mode, reduce, starts, group_sizes,
            groups, scale, bias, post, so, regs);
    Py_END_ALLOW_THREADS
    PyMem_Free(regs);
    release(&h);
    Py_RETURN_NONE;
fail:
    PyMem_Free(regs);
    release(&h);
    return NULL;
}

/* --- a launch's flat sequence ---------------------------------------------------------------------------------- */

/* seq_build(slots, ops, checks, word_bytes, reads, writes) -> capsule; seq_run(capsule, read_bases, write_bases)
 * -> whether it ran (False: a base is not a whole memory word inside its bounds, nothing done).
 *
 * A warm launch's flat sequence (sw/model/chip.py, ChipModel._flat) as one call: its reads, units and writes on
 * buffers bound once. ``slots``: per slot a buffer (an output or scratch uint32 array, a tier's bytes, a read-only
 * int64 index or code array: no op may write what is checked here) or an int, the byte length of a slot that a
 * SQ_HALF op points into a tier on each run.
 * ``checks``: int64 (reads + writes) x 2, the rows (base / word_bytes) each base may take, lo <= row < hi.
 * ``ops``: int64 words, each op its code then its fields (below). Every op is checked here against the slots'
 * lengths and the checks' rows, so a run touches no byte outside its buffers. */

enum { SQ_READ = 1, SQ_HALF = 2, SQ_WRITE = 3, SQ_SLICE = 4, SQ_TAKE = 5, SQ_GEMV = 6, SQ_PCU = 7 };
/* Words of each op, its code included. */
static const Py_ssize_t SQ_WORDS[8] = {0, 14, 5, 14, 6, 5, 11, 22};
/* SQ_READ / SQ_WRITE: code, data slot, tier slot, base index, widen (reads: bf16 halves to words), first row, shape
 *   (3, outer first), row strides (3, >= 0), offsets slot (-1: the grid; else an int64 array of rows, the grid
 *   unused), rows. Row k of the grid or array (+ first + the base's row) is copied whole, word_bytes bytes (a
 *   widened read: word_bytes / 2 halves, each the top of a 32-bit word), to or from the data slot's k-th row.
 * SQ_HALF: code, slot, tier slot, base index, first row: the slot points at the tier from that row on.
 * SQ_SLICE: code, dst, src, start, step (>= 1), count: dst[i] = src[start + i step] (32-bit words).
 * SQ_TAKE: code, dst, src, index slot (int64), count: dst[i] = src[index[i]].
 * SQ_GEMV: code, a, b, out, groups, m, rows, lanes, stride, step, half: gemv()'s.
 * SQ_PCU: code, code slot, stages, n, lanes, in0, in1, in2, s0, s1 (-1: none), out_reg, tail_op, vo, so_mode,
 *   reduce, starts, sizes (-1 where so_mode != 2), groups, scale, bias, post, so: pcu()'s. */

struct seq {
    Py_ssize_t nslots, nops, nreads, nwrites, wb, scratch_items;
    Py_buffer *views;
    char *viewed;
    char **addr;
    Py_ssize_t *len;
    int64_t *ops, *lo, *hi, *rows;
    uint32_t *scratch;
};

static void seq_free(struct seq *q)
{
    if (!q)
        return;
    for (Py_ssize_t k = 0; q->viewed && k < q->nslots; k++)
        if (q->viewed[k])
            PyBuffer_Release(&q->views[k]);
    PyMem_Free(q->views);
    PyMem_Free(q->viewed);
    PyMem_Free(q->addr);
    PyMem_Free(q->len);
    PyMem_Free(q->ops);
    PyMem_Free(q->lo);
    PyMem_Free(q->scratch);
    PyMem_Free(q);
}

static void seq_capsule_free(PyObject *capsule)
{
    seq_free(PyCapsule_GetPointer(capsule, "fastfp.seq"));
}

static int seq_bad(const char *what)
{
    PyErr_Format(PyExc_ValueError, "seq_build: %s", what);
    return -1;
}

/* The slot's length in bytes, or -1 with an exception where ``k`` names no slot (or not a buffer, with ``viewed``). */
static Py_ssize_t seq_slot(const struct seq *q, int64_t k, int need_view)
{
    if (k < 0 || k >= q->nslots || (need_view && !q->viewed[k])) {
        seq_bad("an op names a slot that is not there");
        return -1;
    }
    return q->len[k];
}

/* seq_slot of a slot of indices or stage code, checked here once: a read-only buffer, so that no op writes it. */
static Py_ssize_t seq_indices(const struct seq *q, int64_t k)
{
    Py_ssize_t len = seq_slot(q, k, 1);
    if (len >= 0 && !q->views[k].readonly) {
        seq_bad("an index or code slot is writable");
        return -1;
    }
    return len;
}

/* The least and greatest row (from the base's row) of a READ / WRITE op's grid or offsets. */
static int seq_rows(const struct seq *q, const int64_t *o, int64_t *least, int64_t *greatest)
{
    int64_t first = o[5], count = o[13];
    if (o[12] >= 0) {
        Py_ssize_t len = seq_indices(q, o[12]);
        if (len < 0)
            return -1;
        if (count < 1 || count > ((int64_t)1 << 40) || len < count * 8)
            return seq_bad("an offsets array is shorter than its rows");
        const int64_t *off = (const int64_t *)q->addr[o[12]];
        *least = *greatest = off[0];
        for (int64_t k = 1; k < count; k++) {
            if (off[k] < *least)
                *least = off[k];
            if (off[k] > *greatest)
                *greatest = off[k];
        }
        if (*least < -((int64_t)1 << 40) || *greatest > ((int64_t)1 << 40) || first < -((int64_t)1 << 40) ||
            first > ((int64_t)1 << 40))
            return seq_bad("an offset is too large");
        *least += first, *greatest += first;
        return 0;
    }
    int64_t n = 1, span = 0;
    for (int l = 0; l < 3; l++) {
        int64_t size = o[6 + l], stride = o[9 + l];
        if (size < 1 || size > ((int64_t)1 << 30) || stride < 0 || stride > ((int64_t)1 << 30))
            return seq_bad("a grid level is out of range");
        n *= size;
        span += (size - 1) * stride;
        if (n > ((int64_t)1 << 40))
            return seq_bad("a grid is too large");
    }
    if (n != count || first < -((int64_t)1 << 40) || first > ((int64_t)1 << 40))
        return seq_bad("a grid's rows are not its count");
    *least = first, *greatest = first + span;
    return 0;
}

static int seq_check(struct seq *q)
{
    char *set = PyMem_Calloc((size_t)q->nslots + 1, 1);
    if (!set) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < q->nslots; k++)
        set[k] = q->viewed[k];
    int64_t *o = q->ops, *end = q->ops + q->nops;
    int bad = 0;
#define NEED(cond, what) do { if (!(cond)) { seq_bad(what); bad = 1; goto done; } } while (0)
#define LEN(var, k, view) Py_ssize_t var = seq_slot(q, (k), (view)); if (var < 0) { bad = 1; goto done; }
#define INDICES(var, k) Py_ssize_t var = seq_indices(q, (k)); if (var < 0) { bad = 1; goto done; }
    while (o < end) {
        NEED(o[0] >= 1 && o[0] <= 7 && end - o >= SQ_WORDS[o[0]], "an op's code or length");
        switch (o[0]) {
        case SQ_READ:
        case SQ_WRITE: {
            int read = o[0] == SQ_READ;
            LEN(data, o[1], 1);
            LEN(tier, o[2], 1);
            NEED(read || !o[4], "a widened write");
            NEED(o[3] >= 0 && o[3] < q->nreads + q->nwrites && (o[3] < q->nreads) == read, "an op's base");
            NEED(!q->views[read ? o[1] : o[2]].readonly, "a read-only buffer written");
            int64_t least, greatest;
            if (seq_rows(q, o, &least, &greatest) < 0) {
                bad = 1;
                goto done;
            }
            /* Every row the op may take: lo + least >= 0 and hi - 1 + greatest < the tier's rows. */
            int64_t lo = q->lo[o[3]], hi = q->hi[o[3]], nrows = tier / q->wb;
            NEED(hi > lo && lo + least >= 0 && hi - 1 + greatest < nrows, "an op's rows leave its tier");
            NEED(data >= o[13] * q->wb * (o[4] ? 2 : 1), "a data slot is shorter than its rows");
            break;
        }
        case SQ_HALF: {
            NEED(o[1] >= 0 && o[1] < q->nslots && !q->viewed[o[1]], "a half slot is a buffer");
            LEN(tier, o[2], 1);
            NEED(o[3] >= 0 && o[3] < q->nreads, "an op's base");
            int64_t lo = q->lo[o[3]], hi = q->hi[o[3]], nrows = tier / q->wb;
            NEED(o[4] >= -((int64_t)1 << 40) && o[4] <= ((int64_t)1 << 40) && q->len[o[1]] % q->wb == 0,
                 "a half slot");
            NEED(hi > lo && lo + o[4] >= 0 && hi - 1 + o[4] + q->len[o[1]] / q->wb <= nrows,
                 "a half slot leaves its tier");
            set[o[1]] = 1;
            break;
        }
        case SQ_SLICE: {
            LEN(dst, o[1], 1);
            LEN(src, o[2], 0);
            NEED(set[o[2]] && !q->views[o[1]].readonly, "a slice's slots");
            NEED(o[3] >= 0 && o[4] >= 1 && o[5] >= 0 && o[3] <= ((int64_t)1 << 40) && o[4] <= ((int64_t)1 << 30) &&
                 o[5] <= ((int64_t)1 << 30) && dst >= o[5] * 4 && (!o[5] || src >= (o[3] + (o[5] - 1) * o[4] + 1) * 4),
                 "a slice out of range");
            break;
        }
        case SQ_TAKE: {
            LEN(dst, o[1], 1);
            LEN(src, o[2], 0);
            INDICES(index, o[3]);
            NEED(set[o[2]] && !q->views[o[1]].readonly && o[4] >= 0 && o[4] <= ((int64_t)1 << 40) && dst >= o[4] * 4 &&
                 index >= o[4] * 8,
                 "a take's slots");
            const int64_t *ix = (const int64_t *)q->addr[o[3]];
            for (int64_t k = 0; k < o[4]; k++)
                NEED(ix[k] >= 0 && ix[k] < src / 4, "a take's index out of range");
            break;
        }
        case SQ_GEMV: {
            int64_t groups = o[4], m = o[5], rows = o[6], lanes = o[7], stride = o[8], step = o[9], half = o[10];
            NEED(groups >= 0 && m >= 0 && rows >= 0 && lanes >= 1 && lanes <= MAX_LANES && stride >= 0 && step >= 0 &&
                 groups <= ((int64_t)1 << 30) && m <= ((int64_t)1 << 30) && groups * m <= ((int64_t)1 << 40) &&
                 rows <= MAX_LANES &&
                 stride <= ((int64_t)1 << 30) && step <= ((int64_t)1 << 30) && (half == 0 || half == 1),
                 "a GEMV's sizes");
            LEN(a, o[1], 0);
            LEN(b, o[2], 0);
            LEN(out, o[3], 1);
            NEED(set[o[1]] && set[o[2]] && q->viewed[o[1]] && (half || q->viewed[o[2]]) &&
                 !q->views[o[3]].readonly, "a GEMV's slots");
            int64_t a_items = groups && m ? (groups - 1) * stride + (m - 1) * step + rows : 0;
            NEED(a <= PY_SSIZE_T_MAX && a_items <= a / 4 && b == groups * m * lanes * (half ? 2 : 4) &&
                 out >= groups * rows * lanes * 4, "a GEMV's operands");
            set[o[3]] = 1;
            break;
        }
        case SQ_PCU: {
            int64_t stages = o[2], n = o[3], lanes = o[4], out_reg = o[10], tail_op = o[11], so_mode = o[13];
            int64_t reduce = o[14], groups = o[17], scale = o[18], bias = o[19], post = o[20];
            NEED(stages >= 0 && stages <= 4096 && n >= 0 && n <= ((int64_t)1 << 30) && lanes >= 1 &&
                 lanes <= MAX_LANES && !(lanes & (lanes - 1)) && out_reg >= 0 && out_reg <= 3 && tail_op >= -1 &&
                 tail_op <= 4 && so_mode >= 0 && so_mode <= 2 && reduce >= 0 && reduce <= 1 && groups >= 0 &&
                 groups <= n && scale >= 0 && scale <= 0xFFFFFFFFll && bias >= 0 && bias <= 0xFFFFFFFFll &&
                 post >= -1 && post <= 4, "a PCU's arguments");
            NEED(!((tail_op >= 0 || post >= 0) && !tables_set), "a PCU's tables are not set");
            INDICES(code, o[1]);
            NEED(code >= stages * 6 * 8, "a PCU's code");
            const int64_t *st = (const int64_t *)q->addr[o[1]];
            for (int64_t k = 0; k < stages; k++, st += 6)
                NEED(st[0] >= 0 && st[0] <= 6 && st[1] >= 0 && st[1] <= 7 && st[2] >= 0 && st[2] <= 7 && st[3] >= 0 &&
                     st[3] <= 7 && st[4] >= 0 && st[4] <= 3 && st[5] >= 0 && st[5] <= 0xFFFFFFFFll, "a PCU's stage");
            int64_t cells = n * lanes;
            for (int k = 0; k < 5; k++) {
                if (o[5 + k] < 0)
                    continue;
                LEN(in, o[5 + k], 1);
                NEED(set[o[5 + k]] && (k < 3 ? in == cells * 4 : in >= n * 4), "a PCU's input");
            }
            LEN(vo, o[12], 1);
            NEED(!q->views[o[12]].readonly && vo >= cells * 4, "a PCU's vo");
            if (so_mode == 2) {
                INDICES(starts, o[15]);
                INDICES(sizes, o[16]);
                NEED(starts >= groups * 8 && sizes >= groups * 8, "a PCU's groups");
                const int64_t *s0 = (const int64_t *)q->addr[o[15]], *s1 = (const int64_t *)q->addr[o[16]];
                for (int64_t g = 0; g < groups; g++)
                    NEED(s0[g] >= 0 && s1[g] >= 1 && s0[g] <= n && s1[g] <= n - s0[g], "a PCU's group");
            }
            LEN(so, o[21], 1);
            NEED(!q->views[o[21]].readonly && so >= (so_mode == 0 ? 0 : so_mode == 1 ? n : groups) * 4, "a PCU's so");
            int64_t items = 4 * (cells ? cells : 1) + (n ? n : 1);
            if (items > q->scratch_items)
                q->scratch_items = items;
            set[o[12]] = set[o[21]] = 1;
            break;
        }
        }
        o += SQ_WORDS[o[0]];
    }
#undef NEED
#undef LEN
#undef INDICES
done:
    PyMem_Free(set);
    return bad ? -1 : 0;
}

static PyObject *seq_build(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "seq_build takes 6 arguments");
        return NULL;
    }
    PyObject *slots = args[0];
    if (!PyTuple_Check(slots)) {
        PyErr_SetString(PyExc_TypeError, "seq_build: slots must be a tuple");
        return NULL;
    }
    Py_ssize_t sz[3];
    if (sizes(args, 3, 3, sz) < 0)
        return NULL;
    struct seq *q = PyMem_Calloc(1, sizeof(struct seq));
    if (!q)
        return PyErr_NoMemory();
    q->wb = sz[0], q->nreads = sz[1], q->nwrites = sz[2], q->nslots = PyTuple_GET_SIZE(slots);
    Py_ssize_t nb = q->nreads + q->nwrites;
    q->views = PyMem_Calloc((size_t)q->nslots + 1, sizeof(Py_buffer));
    q->viewed = PyMem_Calloc((size_t)q->nslots + 1, 1);
    q->addr = PyMem_Calloc((size_t)q->nslots + 1, sizeof(char *));
    q->len = PyMem_Calloc((size_t)q->nslots + 1, sizeof(Py_ssize_t));
    q->lo = PyMem_Calloc((size_t)3 * nb + 1, sizeof(int64_t));
    if (!q->views || !q->viewed || !q->addr || !q->len || !q->lo) {
        PyErr_NoMemory();
        goto fail;
    }
    q->hi = q->lo + nb, q->rows = q->lo + 2 * nb;
    if (q->wb < 4 || q->wb % 4 || q->wb > ((Py_ssize_t)1 << 20)) {
        seq_bad("word_bytes must be a multiple of 4, at most 2**20");
        goto fail;
    }
    for (Py_ssize_t k = 0; k < q->nslots; k++) {
        PyObject *item = PyTuple_GET_ITEM(slots, k);
        if (PyLong_Check(item)) {
            q->len[k] = PyLong_AsSsize_t(item);
            if (q->len[k] < 0) {
                if (!PyErr_Occurred())
                    seq_bad("a half slot's length is negative");
                goto fail;
            }
            continue;
        }
        if (PyObject_GetBuffer(item, &q->views[k], PyBUF_SIMPLE) < 0)
            goto fail;
        q->viewed[k] = 1;
        q->addr[k] = q->views[k].buf;
        q->len[k] = q->views[k].len;
        if (!q->addr[k] && q->len[k]) {
            seq_bad("a buffer without data");
            goto fail;
        }
    }
    Py_buffer ops, checks;
    if (take_sized(args[1], &ops, 0, 0, 8) < 0)
        goto fail;
    q->nops = ops.len / 8;
    q->ops = PyMem_Malloc((size_t)ops.len + 8);
    if (q->ops)
        memcpy(q->ops, ops.buf, (size_t)ops.len);
    PyBuffer_Release(&ops);
    if (!q->ops) {
        PyErr_NoMemory();
        goto fail;
    }
    if (take_sized(args[2], &checks, 0, 2 * nb, 8) < 0)
        goto fail;
    for (Py_ssize_t k = 0; k < nb; k++) {
        q->lo[k] = ((const int64_t *)checks.buf)[2 * k];
        q->hi[k] = ((const int64_t *)checks.buf)[2 * k + 1];
    }
    PyBuffer_Release(&checks);
    for (Py_ssize_t k = 0; k < nb; k++)
        if (q->lo[k] < -((int64_t)1 << 50) || q->hi[k] > ((int64_t)1 << 50)) {
            seq_bad("a base's rows are out of range");
            goto fail;
        }
    if (seq_check(q) < 0)
        goto fail;
    q->scratch = PyMem_Malloc((size_t)(q->scratch_items ? q->scratch_items : 1) * 4);
    if (!q->scratch) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject *capsule = PyCapsule_New(q, "fastfp.seq", seq_capsule_free);
    if (!capsule)
        goto fail;
    return capsule;
fail:
    seq_free(q);
    return NULL;
}

/* ``count`` bf16 values widened as an AGCU's bf16 read widens them: each the top half of a 32-bit word. */
static inline void seq_widen(char *restrict dst, const char *restrict src, Py_ssize_t count)
{
    uint32_t *d = (uint32_t *)dst;
    const uint16_t *t = (const uint16_t *)src;
    Py_ssize_t i = 0;
    for (; i + 4 <= count; i += 4) {
        v4u w = widen4(t + i);
        memcpy(d + i, &w, 16);
    }
    for (; i < count; i++)
        d[i] = (uint32_t)t[i] << 16;
}

/* Moves `bytes` between a tier's rows at t and a buffer at d: a write stores d's bytes in the tier, a read
   loads the tier's into d, widened from bf16 where asked. */
static inline void seq_move(char *t, char *d, Py_ssize_t bytes, int read, int widen)
{
    if (!read)
        memcpy(t, d, (size_t)bytes);
    else if (!widen)
        memcpy(d, t, (size_t)bytes);
    else
        seq_widen(d, t, bytes / 2);
}

/* Row k of a READ / WRITE op's grid or offsets, from the base's row. */
static inline void seq_copy_rows(const struct seq *q, const int64_t *o, int64_t row)
{
    Py_ssize_t wb = q->wb;
    char *data = q->addr[o[1]], *tier = q->addr[o[2]];
    int read = o[0] == SQ_READ, widen = (int)o[4];
    Py_ssize_t out = widen ? 2 * wb : wb;
    if (o[12] >= 0) {
        const int64_t *off = (const int64_t *)q->addr[o[12]];
        for (int64_t k = 0; k < o[13]; k++)
            seq_move(tier + (row + o[5] + off[k]) * wb, data + k * out, wb, read, widen);
        return;
    }
    /* Rows that follow each other on the innermost level are one block. */
    int64_t inner = o[8], block = o[11] == 1 ? inner : 1, k = 0;
    for (int64_t i0 = 0; i0 < o[6]; i0++)
        for (int64_t i1 = 0; i1 < o[7]; i1++)
            for (int64_t i2 = 0; i2 < inner; i2 += block, k += block)
                seq_move(tier + (row + o[5] + i0 * o[9] + i1 * o[10] + i2 * o[11]) * wb, data + k * out,
                         block * wb, read, widen);
}

static PyObject *seq_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "seq_run takes 3 arguments");
        return NULL;
    }
    struct seq *q = PyCapsule_GetPointer(args[0], "fastfp.seq");
    if (!q)
        return NULL;
    for (int side = 0; side < 2; side++) {
        PyObject *bases = args[1 + side];
        Py_ssize_t count = side ? q->nwrites : q->nreads, at = side ? q->nreads : 0;
        if (!PyList_Check(bases) || PyList_GET_SIZE(bases) != count) {
            PyErr_SetString(PyExc_ValueError, "seq_run: a list of bases of another length");
            return NULL;
        }
        for (Py_ssize_t k = 0; k < count; k++) {
            /* A plain int only: another object's __index__ could run Python that changes the list. */
            PyObject *item = PyList_GET_ITEM(bases, k);
            if (!PyLong_CheckExact(item))
                Py_RETURN_FALSE;
            int overflow;
            long long base = PyLong_AsLongLongAndOverflow(item, &overflow);
            if (base == -1 && PyErr_Occurred())
                return NULL;
            if (overflow || base < -((long long)1 << 60) || base > ((long long)1 << 60))
                Py_RETURN_FALSE;
            /* divmod's floor: a base that is not a whole word, or a row outside the bounds, runs nothing. */
            long long row = base / q->wb, rest = base % q->wb;
            if (rest < 0)
                rest += q->wb, row -= 1;
            if (rest || row < q->lo[at + k] || row >= q->hi[at + k])
                Py_RETURN_FALSE;
            q->rows[at + k] = row;
        }
    }
    /* The GIL stays held: the rows, scratch and buffers are the sequence's own, so one run at a time. */
    for (int64_t *o = q->ops, *end = q->ops + q->nops; o < end; o += SQ_WORDS[o[0]]) {
        char **a = q->addr;
        switch (o[0]) {
        case SQ_READ:
        case SQ_WRITE:
            seq_copy_rows(q, o, q->rows[o[3]]);
            break;
        case SQ_HALF:
            a[o[1]] = a[o[2]] + (q->rows[o[3]] + o[4]) * q->wb;
            break;
        case SQ_SLICE: {
            uint32_t *dst = (uint32_t *)a[o[1]];
            const uint32_t *src = (const uint32_t *)a[o[2]] + o[3];
            if (o[4] == 1)
                memcpy(dst, src, (size_t)o[5] * 4);
            else
                for (int64_t i = 0; i < o[5]; i++)
                    dst[i] = src[i * o[4]];
            break;
        }
        case SQ_TAKE: {
            uint32_t *dst = (uint32_t *)a[o[1]];
            const uint32_t *src = (const uint32_t *)a[o[2]];
            const int64_t *ix = (const int64_t *)a[o[3]];
            for (int64_t i = 0; i < o[4]; i++)
                dst[i] = src[ix[i]];
            break;
        }
        case SQ_GEMV:
            gemv_run((const uint32_t *)a[o[1]], a[o[2]], (uint32_t *)a[o[3]], o[4], o[5], o[6], o[7], o[8], o[9],
                     (int)o[10]);
            break;
        case SQ_PCU: {
            const uint32_t *in[3], *scal[2];
            for (int k = 0; k < 3; k++)
                in[k] = o[5 + k] < 0 ? NULL : (const uint32_t *)a[o[5 + k]];
            for (int k = 0; k < 2; k++)
                scal[k] = o[8 + k] < 0 ? NULL : (const uint32_t *)a[o[8 + k]];
            /* The registers no input fills start at zero (pcu_run writes the reductions before reading them). */
            int64_t n = o[3], cells = n * o[4];
            for (int k = 0; k < 4; k++)
                if (k == 3 || !in[k])
                    memset(q->scratch + k * cells, 0, (size_t)cells * 4);
            pcu_run((const int64_t *)a[o[1]], o[2], n, o[4], in, scal, o[10], (long)o[11], (uint32_t *)a[o[12]],
                    (long)o[13], (long)o[14], o[13] == 2 ? (const int64_t *)a[o[15]] : NULL,
                    o[13] == 2 ? (const int64_t *)a[o[16]] : NULL, o[17], (unsigned long)o[18], (unsigned long)o[19],
                    (long)o[20], (uint32_t *)a[o[21]], q->scratch);
            break;
        }
        }
    }
    Py_RETURN_TRUE;
}

/* simd([level]): the vector level gemv_run takes (simd_level); with ``level``, that level or the best the processor
 * has, whichever is lower, from now on (tests run every level the processor has). Returns the level in effect. */
static PyObject *simd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "simd takes at most 1 argument");
        return NULL;
    }
    long level = 0;
    if (nargs == 1 && (level = PyLong_AsLong(args[0])) == -1 && PyErr_Occurred())
        return NULL;
#ifdef GEMV_AVX2
    if (nargs == 1) {
        int best = have_avx512 ? 2 : have_avx2 ? 1 : 0;
        simd_level = level < 0 ? 0 : level < best ? (int)level : best;
    }
    return PyLong_FromLong(simd_level);
#else
    return PyLong_FromLong(0);
#endif
}

static PyMethodDef methods[] = {
    {"simd", (PyCFunction)(void (*)(void))simd, METH_FASTCALL, "The GEMV's vector level."},
    {"gemv", (PyCFunction)(void (*)(void))gemv, METH_FASTCALL, "The systolic GEMV's ordered sums."},
    {"lane_sums", (PyCFunction)(void (*)(void))lane_sums, METH_FASTCALL, "Pairwise cross-lane sums."},
    {"ordered_sums", (PyCFunction)(void (*)(void))ordered_sums, METH_FASTCALL, "Each row's sum, in order."},
    {"binary", (PyCFunction)(void (*)(void))binary, METH_FASTCALL, "An element-wise fp32 operation."},
    {"set_tables", (PyCFunction)(void (*)(void))set_tables, METH_FASTCALL, "The tail functions' constants."},
    {"tail", (PyCFunction)(void (*)(void))tail, METH_FASTCALL, "A PCU tail function."},
    {"pcu", (PyCFunction)(void (*)(void))pcu, METH_FASTCALL, "A PCU run's arithmetic."},
    {"seq_build", (PyCFunction)(void (*)(void))seq_build, METH_FASTCALL, "A launch's flat sequence, checked."},
    {"seq_run", (PyCFunction)(void (*)(void))seq_run, METH_FASTCALL, "A launch's flat sequence, run."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastfp", "The fast model's fp32 kernels.", -1, methods};

PyMODINIT_FUNC PyInit_fastfp(void)
{
#ifdef GEMV_AVX2
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") != 0;
    have_avx512 = have_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    simd_level = have_avx512 ? 2 : have_avx2 ? 1 : 0;
#endif
    return PyModule_Create(&module);
}
