/* A Tern Wasm task in C: the number below a bound whose Collatz chain is
 * the longest. Arguments: [bound]. Result: "longest <n> steps <length>".
 * Work units: the numbers tried. Copy this file and tasks/include/
 * (docs/wasm-tasks.md).
 *
 * Module:    clang-19 --target=wasm32 -O2 -nostdlib -Wl,--no-entry \
 *                -I ../../include -o task.wasm task.c
 * Reference: clang-19 -O2 -ffp-contract=off -I ../../include -o task \
 *                task.c ../../include/tern_native.c && ./task 300000
 */
#define TERN_TASK_MAIN
#include "tern_task.h"

/* Numbers tried per step: a few milliseconds of interpretation. */
#define PER_STEP 2000

/* The whole state: globals and memory, which a checkpoint holds. */
static unsigned long long bound, next, best_n, best_len;
static char result[64];

long long task_init(int argc, const char *const *argv) {
    bound = (unsigned long long)tern_arg(argc, argv, 0, 300000);
    if (bound < 2 || bound > 100000000) return -2;
    next = 1;
    best_n = best_len = 1;
    return (long long)(bound - 1);
}

long long task_step(void) {
    unsigned long long end = next + PER_STEP < bound ? next + PER_STEP : bound;
    for (unsigned long long n = next; n < end; n++) {
        unsigned long long x = n, len = 1;
        while (x != 1) {
            x = x % 2 == 0 ? x / 2 : 3 * x + 1;
            len++;
        }
        if (len > best_len) {
            best_n = n;
            best_len = len;
        }
    }
    next = end;
    return (long long)(end - 1);
}

const void *task_result(unsigned *len) {
    int n = tern_put_dec(result, "longest ", (long long)best_n);
    n += tern_put_dec(result + n, " steps ", (long long)best_len);
    *len = (unsigned)n;
    return result;
}
