/* 13queen: counts the ways to place N queens on an N x N board so that no
 * two attack each other (N = 13: 73712), by backtracking over bit masks
 * with an explicit stack. Arguments: [N]. Result: "solutions <count>".
 * Work units: the placements of the first two rows, each searched whole. */
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
    for (int a = 0; a < n; a++)
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
    for (int nodes = 0; nodes < NODES_PER_STEP; nodes++) {
        if (row < 2) {
            if (next_start == nstarts) break;
            open_start(starts[next_start]);
        }
        if (!todo[row]) {
            if (--row < 2) next_start++;
            continue;
        }
        unsigned bit = todo[row] & (0u - todo[row]);
        todo[row] ^= bit;
        if (row == n - 1) {
            solutions++;
            continue;
        }
        int r = row + 1;
        cols[r] = cols[row] | bit;
        left[r] = (left[row] | bit) << 1;
        right[r] = (right[row] | bit) >> 1;
        todo[r] = full & ~(cols[r] | left[r] | right[r]);
        row = r;
    }
    return next_start;
}

const void *task_result(unsigned *len) {
    *len = (unsigned)tern_put_dec(result, "solutions ", solutions);
    return result;
}
