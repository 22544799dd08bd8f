/* One-pass CPU epilogues of the tiled neighbour engine (fastndb.kernels.neighbours), called through ctypes.
 *
 * Each function reads a float32 tile of squared distances (row-major, written by one GEMM) once, while it is
 * still in cache, and does what several whole-tile torch operations did: the ball tests with their reductions,
 * or the merge of the tile into running candidate lists (compare with each list's last value, insert the few
 * entries below it). Each entry point splits the rows (or the lists) into one contiguous share per thread of an
 * OpenMP team: linked against libgomp.so.1, the library shares the runtime (and the idle threads) that torch's
 * CPU build has already loaded under that name, so its threads do not wait on torch's spinning ones. The
 * functions keep no state, allocate nothing and touch only the rows (lists) they are given. The arithmetic is
 * that of the torch path it replaces (float32 addition, comparisons), so both paths give the same bits. No
 * -ffast-math: NaN and signed zeros behave as in torch.
 *
 * Built by setup.py (optional: without a compiler the torch path runs). No Python.h: plain C for ctypes.
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GROUP 16 /* entries a group minimum spans */
#define SCAN 64   /* entries compared before any branch */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* Rows [r0, r1) of an n x m tile holding b_sq[j] - 2 a_i . b_j: add a_sq[i] and clamp at 0 in place (the squared
 * distance by the expansion), then test it against a's balls (row edges a_low, a_high) and b's balls (column
 * edges b_low, b_high):
 *   a_any[i]    some entry < a_low[i]                 (surely inside a_i's ball)
 *   a_unsure[i] some entry in [a_low[i], a_high[i]]   (to settle exactly)
 *   col_count[j] += number of rows with entry < a_low[i]
 *   b_surely[i] some entry < b_low[j]                 (a_i surely inside some b_j's ball)
 *   b_maybe[i]  some entry <= b_high[j], none surely  (to settle exactly)
 */
CLONES static void ball_share(float *block, int64_t m, int64_t r0, int64_t r1, const float *a_sq,
                              const float *a_low, const float *a_high, const float *b_low, const float *b_high,
                              uint8_t *a_any, uint8_t *a_unsure, uint8_t *b_surely, uint8_t *b_maybe,
                              int32_t *col_count) {
    for (int64_t i = r0; i < r1; ++i) {
        float *row = block + i * m;
        const float s = a_sq[i], lo = a_low[i], hi = a_high[i];
        int32_t any = 0, unsure = 0, surely = 0, maybe = 0;
        for (int64_t j = 0; j < m; ++j) {
            float x = row[j] + s;
            x = x < 0.0f ? 0.0f : x;
            row[j] = x;
            const int32_t in = x < lo;
            col_count[j] += in;
            any |= in;
            unsure |= (x <= hi) & (in ^ 1);
            surely |= x < b_low[j];
            maybe |= x <= b_high[j];
        }
        a_any[i] = (uint8_t)any;
        a_unsure[i] = (uint8_t)unsure;
        b_surely[i] = (uint8_t)surely;
        b_maybe[i] = (uint8_t)(maybe & (surely ^ 1));
    }
}

/* Insert v (with its index) into the ascending list vals[0..w) whose first `filled` entries are finite (the rest
 * +inf): the last value drops out; among equal values the new one goes last. Returns the new count of finite
 * entries. Starting at the filled end, an insertion into a list that is filling moves only its finite entries. */
static inline int64_t insert(float *vals, int64_t *idx, int64_t w, int64_t filled, float v, int64_t id) {
    int64_t p = filled < w ? filled : w - 1;
    while (p > 0 && vals[p - 1] > v) {
        vals[p] = vals[p - 1];
        idx[p] = idx[p - 1];
        --p;
    }
    vals[p] = v;
    idx[p] = id;
    return filled < w ? filled + 1 : w;
}

/* How many entries of the ascending list vals[0..w) are finite. */
static inline int64_t finite_count(const float *vals, int64_t w) {
    int64_t filled = 0;
    while (filled < w && !isinf(vals[filled])) ++filled;
    return filled;
}

/* Where a list is still empty (its last value +inf) and the tile holds w groups of GROUP entries for it, the
 * w-th smallest of the groups' minima bounds the list's w-th smallest entry from above (w distinct entries lie at
 * or below it; the rows use any value with w minima below it, found by bisection): only the entries at or below
 * that seed can enter, so the first tile costs a few insertions, not
 * one for each running minimum. */
#define MAX_GROUPS 1024
#define SEEDING (-1.0f) /* a column list being seeded (squared distances are never negative) */

static inline int64_t count_at_most(const float *v, int64_t n, float x) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += v[i] <= x; /* vectorised */
    return count;
}

/* A value with at least `need` of v[0..n) at or below it, at most 1/2^12 of their spread above the need-th
 * smallest (bisection on the value: branch-free counts instead of a selection's unpredictable branches); +inf when
 * fewer than `need` are finite. Inlined into each target's clone. */
static inline float bound_of_smallest(const float *v, int64_t n, int64_t need) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi && v[i] < INFINITY ? v[i] : hi;
    }
    if (count_at_most(v, n, hi) < need) return INFINITY;
    if (count_at_most(v, n, lo) >= need) return lo;
    for (int it = 0; it < 12; ++it) { /* count(<= lo) < need <= count(<= hi) */
        const float mid = lo + (hi - lo) * 0.5f;
        if (!(mid > lo && mid < hi)) break;
        if (count_at_most(v, n, mid) >= need)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

/* Merge rows [r0, r1) of an n x m tile into those rows' running lists best[i*w..], best_idx[i*w..] (ascending,
 * +inf where empty): every entry below the list's last value enters, with index c0 + j. An entry left out is at
 * least the list's last value when it was seen (or above the seed, which bounds the final last value), hence at
 * least the final one. */
CLONES static void merge_rows_share(const float *block, int64_t m, int64_t r0, int64_t r1, float *best,
                                    int64_t *best_idx, int64_t w, int64_t c0) {
    for (int64_t i = r0; i < r1; ++i) {
        const float *row = block + i * m;
        float *vals = best + i * w;
        int64_t *idx = best_idx + i * w;
        float limit = INFINITY;
        const int64_t stride = m / GROUP;
        if (isinf(vals[w - 1]) && stride >= w && stride <= MAX_GROUPS) {
            /* groups a stride apart (member t of group g is entry t * stride + g): their minima are element-wise
             * minima of GROUP contiguous runs, which vectorise */
            float minima[MAX_GROUPS];
            for (int64_t g = 0; g < stride; ++g) minima[g] = row[g];
            for (int64_t t = 1; t < GROUP; ++t) {
                const float *run = row + t * stride;
                for (int64_t g = 0; g < stride; ++g) minima[g] = run[g] < minima[g] ? run[g] : minima[g];
            }
            limit = nextafterf(bound_of_smallest(minima, stride, w), INFINITY); /* "<" below it: "<=" the seed */
        }
        float last = vals[w - 1] < limit ? vals[w - 1] : limit;
        int64_t filled = isinf(vals[w - 1]) ? finite_count(vals, w) : w;
        for (int64_t j0 = 0; j0 < m; j0 += SCAN) {
            const int64_t j1 = j0 + SCAN < m ? j0 + SCAN : m;
            int32_t hit = 0;
            for (int64_t j = j0; j < j1; ++j) hit |= row[j] < last; /* vectorised: no branch per entry */
            if (!hit) continue;
            for (int64_t k0 = j0; k0 < j1; k0 += GROUP) { /* the hits' groups of 16 only (few in a first tile) */
                const int64_t k1 = k0 + GROUP < j1 ? k0 + GROUP : j1;
                int32_t here = 0;
                for (int64_t j = k0; j < k1; ++j) here |= row[j] < last;
                if (!here) continue;
                for (int64_t j = k0; j < k1; ++j) {
                    if (row[j] < last) {
                        filled = insert(vals, idx, w, filled, row[j], c0 + j);
                        last = vals[w - 1] < limit ? vals[w - 1] : limit;
                    }
                }
            }
        }
    }
}

/* The same for columns [j0, j1) of an n x m tile, whose lists are best[(j - j0)*w..] (the tile transposed, read
 * in its own layout): entry (i, j) enters column j's list with index r0 + i. last[0..j1-j0) and
 * limit[0..j1-j0) are scratch; the seeds come from minima over groups of GROUP tile rows. */
CLONES static void merge_cols_share(const float *block, int64_t n, int64_t m, int64_t j0, int64_t j1, float *best,
                                    int64_t *best_idx, int64_t w, int64_t r0, float *last, float *limit) {
    const int64_t lists = j1 - j0;
    int32_t empty = 0;
    for (int64_t c = 0; c < lists; ++c) { /* SEEDING marks a list with no entry yet: only it may serve as scratch */
        limit[c] = isinf(best[c * w]) ? SEEDING : INFINITY;
        empty |= limit[c] == SEEDING;
    }
    if (empty && n / GROUP >= w) {
        for (int64_t g = 0; g + GROUP <= n; g += GROUP) {
            for (int64_t c = 0; c < lists; ++c) last[c] = block[g * m + j0 + c];
            for (int64_t t = 1; t < GROUP; ++t) {
                const float *row = block + (g + t) * m + j0;
                for (int64_t c = 0; c < lists; ++c) last[c] = row[c] < last[c] ? row[c] : last[c];
            }
            for (int64_t c = 0; c < lists; ++c) {
                if (limit[c] == SEEDING && last[c] < best[c * w + w - 1])
                    insert(best + c * w, best_idx + c * w, w, w, last[c], 0);
            }
        }
    }
    for (int64_t c = 0; c < lists; ++c) {
        if (limit[c] != SEEDING) continue;
        /* the list holds the smallest group minima (or nothing, when the tile had too few groups): its last value
         * is the seed; empty it again */
        limit[c] = nextafterf(best[c * w + w - 1], INFINITY);
        for (int64_t p = 0; p < w; ++p) {
            best[c * w + p] = INFINITY;
            best_idx[c * w + p] = 0;
        }
    }
    for (int64_t c = 0; c < lists; ++c) {
        const float own = best[c * w + w - 1];
        last[c] = own < limit[c] ? own : limit[c];
    }
    for (int64_t i = 0; i < n; ++i) {
        const float *row = block + i * m + j0;
        for (int64_t c0 = 0; c0 < lists; c0 += SCAN) {
            const int64_t c1 = c0 + SCAN < lists ? c0 + SCAN : lists;
            int32_t hit = 0;
            for (int64_t c = c0; c < c1; ++c) hit |= row[c] < last[c]; /* vectorised: no branch per entry */
            if (!hit) continue;
            for (int64_t k0 = c0; k0 < c1; k0 += GROUP) {
                const int64_t k1 = k0 + GROUP < c1 ? k0 + GROUP : c1;
                int32_t here = 0;
                for (int64_t c = k0; c < k1; ++c) here |= row[c] < last[c];
                if (!here) continue;
                for (int64_t c = k0; c < k1; ++c) {
                    if (row[c] < last[c]) {
                        insert(best + c * w, best_idx + c * w, w, w, row[c], r0 + i);
                        const float own = best[c * w + w - 1];
                        last[c] = own < limit[c] ? own : limit[c];
                    }
                }
            }
        }
    }
}

/* Share t of `threads` of the range [0, count). */
static inline void share(int64_t count, int threads, int t, int64_t *lo, int64_t *hi) {
    *lo = count * t / threads;
    *hi = count * (t + 1) / threads;
}

static inline int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The entry points: rows [0, n) split over `threads`; col_count is threads x m (one row of counts a thread). */
void fastndb_ball_rows(float *block, int64_t n, int64_t m, int threads, const float *a_sq, const float *a_low,
                       const float *a_high, const float *b_low, const float *b_high, uint8_t *a_any,
                       uint8_t *a_unsure, uint8_t *b_surely, uint8_t *b_maybe, int32_t *col_count) {
#pragma omp parallel num_threads(threads)
    {
        const int t = thread_index();
        int64_t lo, hi;
        share(n, threads, t, &lo, &hi);
        ball_share(block, m, lo, hi, a_sq, a_low, a_high, b_low, b_high, a_any, a_unsure, b_surely, b_maybe,
                   col_count + t * m);
    }
}

void fastndb_merge_rows(const float *block, int64_t n, int64_t m, int threads, float *best, int64_t *best_idx,
                        int64_t w, int64_t c0) {
#pragma omp parallel num_threads(threads)
    {
        int64_t lo, hi;
        share(n, threads, thread_index(), &lo, &hi);
        merge_rows_share(block, m, lo, hi, best, best_idx, w, c0);
    }
}

/* scratch: 2 m floats. */
void fastndb_merge_cols(const float *block, int64_t n, int64_t m, int threads, float *best, int64_t *best_idx,
                        int64_t w, int64_t r0, float *scratch) {
#pragma omp parallel num_threads(threads)
    {
        int64_t lo, hi;
        share(m, threads, thread_index(), &lo, &hi);
        if (hi > lo)
            merge_cols_share(block, n, m, lo, hi, best + lo * w, best_idx + lo * w, w, r0, scratch + lo,
                             scratch + m + lo);
    }
}
