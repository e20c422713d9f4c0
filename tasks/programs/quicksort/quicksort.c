/* quicksort: sorts N seeded pseudo-random 32-bit numbers with an iterative
 * quicksort (median of three, insertion sort below 16 elements), then
 * checks the order. Arguments: [N] [seed]. Result: "sorted <N> fnv
 * <FNV-1a of the sorted numbers>". Work units: each number generated, then
 * each number in its final place. */
#define TERN_TASK_MAIN
#include "tern_task.h"

#define WORK_PER_STEP 20000
#define SMALL 16

static unsigned *a;
static long long n, generated, placed;
static long long *stack_lo, *stack_hi;
static int top;
static unsigned long long rng;
static unsigned long long fnv = 0xcbf29ce484222325ull;
static char result[64];

long long task_init(int argc, const char *const *argv) {
    n = tern_arg(argc, argv, 0, 200000);
    rng = (unsigned long long)tern_arg(argc, argv, 1, 3) * 0x9e3779b97f4a7c15ull | 1;
    if (n < 1 || n > 10000000) return -2;
    a = tern_alloc(sizeof(unsigned) * (unsigned long)n);
    /* Ranges pushed: at most 2 log2(n) + 2 with the smaller side first. */
    stack_lo = tern_alloc(sizeof(long long) * 128);
    stack_hi = tern_alloc(sizeof(long long) * 128);
    if (!a || !stack_lo || !stack_hi) return -3;
    stack_lo[0] = 0;
    stack_hi[0] = n - 1;
    top = 1;
    return 2 * n;
}

static void swap(long long i, long long j) {
    unsigned t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Sorts range lo..hi a bit further; returns the work it did. */
static long long sort_some(void) {
    long long lo = stack_lo[top - 1], hi = stack_hi[top - 1];
    top--;
    if (hi - lo < SMALL) {
        for (long long i = lo + 1; i <= hi; i++) {
            unsigned v = a[i];
            long long j = i - 1;
            while (j >= lo && a[j] > v) {
                a[j + 1] = a[j];
                j--;
            }
            a[j + 1] = v;
        }
        placed += hi - lo + 1;
        return (hi - lo + 1) * 4;
    }
    long long mid = lo + (hi - lo) / 2;
    if (a[mid] < a[lo]) swap(mid, lo);
    if (a[hi] < a[lo]) swap(hi, lo);
    if (a[hi] < a[mid]) swap(hi, mid);
    swap(mid, hi - 1);
    unsigned pivot = a[hi - 1];
    long long i = lo, j = hi - 1;
    for (;;) {
        while (a[++i] < pivot) {}
        while (pivot < a[--j]) {}
        if (i >= j) break;
        swap(i, j);
    }
    swap(i, hi - 1);
    placed++;
    /* The larger side first, so the smaller is sorted next. */
    if (i - lo > hi - i) {
        stack_lo[top] = lo, stack_hi[top++] = i - 1;
        stack_lo[top] = i + 1, stack_hi[top++] = hi;
    } else {
        stack_lo[top] = i + 1, stack_hi[top++] = hi;
        stack_lo[top] = lo, stack_hi[top++] = i - 1;
    }
    /* Empty ranges are placed already. */
    if (stack_lo[top - 1] > stack_hi[top - 1]) top--;
    if (top && stack_lo[top - 1] > stack_hi[top - 1]) top--;
    return hi - lo + 1;
}

long long task_step(void) {
    if (generated < n) {
        long long end = generated + WORK_PER_STEP < n ? generated + WORK_PER_STEP : n;
        for (; generated < end; generated++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            a[generated] = (unsigned)(rng >> 32);
        }
        return generated;
    }
    long long work = 0;
    while (top && work < WORK_PER_STEP) work += sort_some();
    if (!top) {
        /* Done: check the order and hash the numbers (tern_result must be cheap). */
        for (long long i = 0; i < n; i++) {
            if (i && a[i - 1] > a[i]) return -4;
            for (int b = 0; b < 4; b++) {
                fnv ^= (a[i] >> (8 * b)) & 255;
                fnv *= 0x100000001b3ull;
            }
        }
        placed = n;
    }
    return n + placed;
}

const void *task_result(unsigned *len) {
    int k = tern_put_dec(result, "sorted ", n);
    k += tern_put_hex(result + k, " fnv ", fnv);
    *len = (unsigned)k;
    return result;
}
