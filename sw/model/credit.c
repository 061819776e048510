/* The fast model's credit service (sw/model/chip.py, _credit_service_py) as one C loop.
 *
 * Built and loaded by sw/model/credit.py with the system C compiler; every rule, and every branch, is the
 * Python loop's, so both give the same response cycles (tests/test_model_speedups.py checks them side by
 * side). All buffers come from the caller: the function allocates nothing.
 */
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

/* Python's floor division, for a positive divisor. */
static i64 floordiv(i64 a, i64 b) {
    i64 q = a / b;
    if ((a % b) != 0 && a < 0)
        q--;
    return q;
}

static i64 ceildiv(i64 a, i64 b) { return -floordiv(-a, b); }

/* Per stream, the vector whose hand-over returns the credit word j needs (-1: none): the Python's
 * [-1] * min(outstanding, words) + frees[:max(words - outstanding, 0)], frees from _vector_words. */
static i64 frees_at(i64 j, i64 words, i64 vectors, i64 outstanding) {
    i64 m = outstanding < words ? outstanding : words;
    if (m < 0)
        m = 0;
    if (j < m)
        return -1;
    i64 f = floordiv((j - m + 1) * vectors, words) - 1;
    return f < vectors - 1 ? f : vectors - 1;
}

/* Vector k's last word (_vector_words). */
static i64 last_word_of(i64 k, i64 words, i64 vectors) {
    i64 w = ceildiv((k + 1) * words, vectors) - 1;
    return w < words - 1 ? w : words - 1;
}

/* The stream's next offer after one at `offer` (the Python's due_after): a cycle later, and once the fabric
 * has taken the vector that frees the credit of its next word. Returns -1 in *bad on an index the Python
 * would not accept (the caller then runs the Python loop, which raises as it would). */
static i64 due_after(i64 offer, i64 served, i64 words, i64 vectors, i64 outstanding, const i64 *out,
                     const i64 *ready, i64 *popped, i64 *npopped, i64 read_cycles, int *bad) {
    i64 nxt = offer + 1;
    if (served >= words) {
        *bad = 1;
        return nxt;
    }
    i64 v = frees_at(served, words, vectors, outstanding);
    if (v >= 0) {
        if (v >= vectors) {
            *bad = 1;
            return nxt;
        }
        i64 k = *npopped;
        while (k <= v) {
            i64 w = last_word_of(k, words, vectors);
            if (w < 0 || w >= served) {
                *bad = 1;
                return nxt;
            }
            i64 at = out[w] + read_cycles;
            if (k && popped[k - 1] >= at)
                at = popped[k - 1] + 1;
            if (ready[k] > at)
                at = ready[k];
            popped[k] = at;
            k++;
        }
        *npopped = k;
        if (popped[v] >= nxt)
            nxt = popped[v] + 1;
    }
    return nxt;
}

/* The soonest of `n` >= 1 offers. */
static i64 least(const i64 *dues, i64 n) {
    i64 t = dues[0];
    for (i64 a = 1; a < n; a++)
        if (dues[a] < t)
            t = dues[a];
    return t;
}

/* Response cycles of `n` read streams on one tier under the AGCUs' credits.
 *
 * words, vectors, held: per stream (n); ready: every stream's vectors' readiness, stream after stream;
 * out: per stream max(words, held) cycles, stream after stream (written); popped: as ready (scratch);
 * issued: one per word served (scratch); state: 6 * n (scratch). The tier: queue `depth`, `latency`, token
 * bucket `gain` and `cost` (TierModel). Returns 0, or -1 where the Python loop would fail (nothing to trust
 * in `out` then).
 */
int credit_service(i64 n, const i64 *words, const i64 *vectors, const i64 *held, const i64 *ready,
                   i64 outstanding, i64 depth, i64 latency, i64 gain, i64 cost, i64 start_cycles,
                   i64 read_cycles, i64 queue_cycles, i64 *out, i64 *popped, i64 *issued, i64 *state) {
    /* Live streams in stream order (removed as they finish, the others keeping their order), their next
     * offer, their words served (held ones included) and their vectors handed over. */
    i64 *live = state, *dues = state + n, *served = state + 2 * n, *npopped = state + 3 * n;
    /* Per stream, where its responses, and its readiness and hand-overs, start in out and ready, popped. */
    i64 *offsets_out = state + 4 * n, *offsets_ready = state + 5 * n;
    i64 out_at = 0, ready_at = 0, alive = 0;
    int bad = 0;
    if (gain <= 0)
        return -1;
    for (i64 s = 0; s < n; s++) {
        i64 len = words[s] > held[s] ? words[s] : held[s];
        for (i64 j = 0; j < held[s]; j++)
            out[out_at + j] = -read_cycles;
        served[s] = held[s] > 0 ? held[s] : 0;
        npopped[s] = 0;
        if (words[s] > held[s])
            live[alive++] = s;
        offsets_out[s] = out_at;
        offsets_ready[s] = ready_at;
        out_at += len;
        ready_at += vectors[s];
    }
    for (i64 a = 0; a < alive; a++) {
        i64 s = live[a];
        dues[a] = due_after(start_cycles - 1, served[s], words[s], vectors[s], outstanding, out + offsets_out[s],
                            ready + offsets_ready[s], popped + offsets_ready[s], &npopped[s], read_cycles, &bad);
        if (bad)
            return -1;
    }

    i64 tokens = cost, time = -1, last_issue = -1, count = 0, rr = 0;
    while (alive) {
        i64 i = rr < alive ? rr : 0, t, free;
        /* The tier takes the first stream from rr on that has offered by max(soonest offer, the queue's free
         * slot), as the Python loop does. */
        if (count >= depth) {
            free = issued[count - depth];
            if (dues[i] > free) {
                i64 j = i + 1 < alive ? i + 1 : 0;
                while (j != i && dues[j] > free)
                    j = j + 1 < alive ? j + 1 : 0;
                if (j != i) {
                    i = j;
                } else {
                    t = least(dues, alive);
                    while (dues[i] > t)
                        i = i + 1 < alive ? i + 1 : 0;
                }
            }
        } else {
            free = t = least(dues, alive);
            while (dues[i] > t)
                i = i + 1 < alive ? i + 1 : 0;
        }
        i64 offer = dues[i];
        i64 issue = (offer > free ? offer : free) + queue_cycles;
        if (issue <= last_issue)
            issue = last_issue + 1;
        i64 have = tokens;
        if (tokens < cost) {
            i64 need = ceildiv(cost - tokens, gain);
            if (issue > time)
                have = tokens + gain * (issue - time < need ? issue - time : need);
            if (have < cost) {
                issue += ceildiv(cost - have, gain);
                have = issue > time ? tokens + gain * (issue - time < need ? issue - time : need) : tokens;
            }
        }
        tokens = have + gain - cost;
        time = issue + 1;
        last_issue = issue;
        issued[count++] = issue;
        i64 s = live[i];
        i64 *o = out + offsets_out[s];
        o[served[s]++] = issue + latency;
        if (served[s] == words[s]) {
            memmove(live + i, live + i + 1, (size_t)(alive - i - 1) * sizeof(i64));
            memmove(dues + i, dues + i + 1, (size_t)(alive - i - 1) * sizeof(i64));
            alive--;
            rr = i;
            continue;
        }
        rr = i + 1;
        dues[i] = due_after(offer, served[s], words[s], vectors[s], outstanding, o, ready + offsets_ready[s],
                            popped + offsets_ready[s], &npopped[s], read_cycles, &bad);
        if (bad)
            return -1;
    }
    return 0;
}
