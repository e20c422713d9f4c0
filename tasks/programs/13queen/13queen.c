/* 13queen: counts the ways to place N queens on an N x N board so that no
 * two attack each other (N = 13: 73712), by backtracking over bit masks
 * with an explicit stack. A board and its mirror image count alike, so only
 * first-row queens in the left half are searched (counted twice) and the
 * middle column once. Arguments: [N]. Result: "solutions <count>". Work
 * units: the placements of the first two rows, each searched whole. */
#define TERN_TASK_MAIN
#include "tern_task.h"

#define NODES_PER_STEP 20000
#define MAX_N 20

static int n;
static unsigned full;
static int *starts, nstarts, next_start; /* (col0 << 8) | col1 */
static long long solutions;
/* The search of one start: per row, the columns still to try, and the
 * attacked columns and diagonals. */
static unsigned todo[MAX_N], cols[MAX_N], left[MAX_N], right[MAX_N];
static int row = -1;
static char result[48];

long long task_init(int argc, const char *const *argv) {
    n = (int)tern_arg(argc, argv, 0, 13);
    if (n < 4 || n > MAX_N) return -2;
    full = (1u << n) - 1;
    starts = tern_alloc(sizeof(int) * (unsigned long)n * n);
    if (!starts) return -3;
    for (int a = 0; a < (n + 1) / 2; a++)
        for (int b = 0; b < n; b++)
            if (b < a - 1 || b > a + 1) starts[nstarts++] = (a << 8) | b;
    return nstarts;
}

/* Opens row 2 of start `s`. */
static void open_start(int s) {
    unsigned a = 1u << (s >> 8), b = 1u << (s & 255);
    cols[2] = a | b;
    left[2] = ((a << 1) | b) << 1;
    right[2] = ((a >> 1) | b) >> 1;
    todo[2] = full & ~(cols[2] | left[2] | right[2]);
    row = 2;
}

long long task_step(void) {
    /* Scalars in locals for the loop (wasm locals are cheaper than memory). */
    int r = row, start = next_start;
    long long found = solutions;
    unsigned last = (unsigned)n - 1;
    for (int nodes = 0; nodes < NODES_PER_STEP; nodes++) {
        if (r < 2) {
            if (start == nstarts) break;
            open_start(starts[start]);
            r = 2;
        }
        unsigned t = todo[r];
        if (!t) {
            if (--r < 2) start++;
            continue;
        }
        unsigned bit = t & (0u - t);
        todo[r] = t ^ bit;
        if ((unsigned)r == last) {
            /* Its mirror image too, unless the first queen is in the middle. */
            found += 2 * (starts[start] >> 8) + 1 == n ? 1 : 2;
            continue;
        }
        unsigned c = cols[r] | bit, lf = (left[r] | bit) << 1, rt = (right[r] | bit) >> 1;
        r++;
        cols[r] = c;
        left[r] = lf;
        right[r] = rt;
        todo[r] = full & ~(c | lf | rt);
    }
    row = r;
    next_start = start;
    solutions = found;
    return next_start;
}

const void *task_result(unsigned *len) {
    *len = (unsigned)tern_put_dec(result, "solutions ", solutions);
    return result;
}
