/* tern_native.c: runs a C task natively, as a node would (init, steps until
 * the total, the result), and prints its result on standard output: the
 * reference answer of a run. Progress that goes back or past the total is
 * an error (exit 2); a task error exits 1. */
#include <stdio.h>
#include "tern_task.h"

int main(int argc, char **argv) {
    long long total = task_init(argc - 1, (const char *const *)argv + 1);
    if (total < 0) return 1;
    long long done = 0;
    while (done < total) {
        long long now = task_step();
        if (now < 0) return 1;
        if (now < done || now > total) return 2;
        done = now;
    }
    unsigned n = 0;
    const void *p = task_result(&n);
    fwrite(p, 1, n, stdout);
    return 0;
}
