/* maze: carves a W x H maze with a seeded depth-first search, then finds the
 * shortest path from the top-left to the bottom-right corner by breadth-first
 * search. Arguments: [cells across] [cells down] [seed]. Result:
 * "path <length> explored <cells>". Work units: each cell carved, then each
 * cell the search takes from its queue (the rest when it reaches the goal). */
#define TERN_TASK_MAIN
#include "tern_task.h"

#define CARVE_PER_STEP 2000
#define SEARCH_PER_STEP 4000

static int cw, ch, w, h;        /* cells, and grid size (2c+1) */
static unsigned char *grid;     /* 1 = open */
static int *stack, top;         /* carving stack (grid indices) */
static int *queue, *dist, qhead, qtail;
static unsigned long long rng;
static long long carved, searched, cells, total, found = -1;
static char result[64];

static unsigned next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 32);
}

long long task_init(int argc, const char *const *argv) {
    cw = (int)tern_arg(argc, argv, 0, 300);
    ch = (int)tern_arg(argc, argv, 1, 300);
    rng = (unsigned long long)tern_arg(argc, argv, 2, 1) * 0x9e3779b97f4a7c15ull | 1;
    if (cw < 2 || ch < 2 || cw > 2000 || ch > 2000) return -2;
    w = 2 * cw + 1;
    h = 2 * ch + 1;
    cells = (long long)cw * ch;
    grid = tern_alloc((unsigned long)w * h);
    stack = tern_alloc(sizeof(int) * (unsigned long)cells);
    queue = tern_alloc(sizeof(int) * (unsigned long)w * h);
    dist = tern_alloc(sizeof(int) * (unsigned long)w * h);
    if (!grid || !stack || !queue || !dist) return -3;
    int start = w + 1;
    grid[start] = 1;
    stack[top++] = start;
    carved = 1;
    /* Carving opens every cell and the walls between them: 2 cells - 1. */
    total = cells + 2 * cells - 1;
    return total;
}

static void carve(void) {
    static const int dx[4] = {2, -2, 0, 0}, dy[4] = {0, 0, 2, -2};
    for (int n = 0; n < CARVE_PER_STEP && top > 0; n++) {
        int at = stack[top - 1], x = at % w, y = at / w;
        int options[4], k = 0;
        for (int d = 0; d < 4; d++) {
            int nx = x + dx[d], ny = y + dy[d];
            if (nx > 0 && ny > 0 && nx < w - 1 && ny < h - 1 && !grid[ny * w + nx]) options[k++] = d;
        }
        if (!k) {
            top--;
            continue;
        }
        int d = options[next_random() % k];
        int nx = x + dx[d], ny = y + dy[d];
        grid[(y + ny) / 2 * w + (x + nx) / 2] = 1;
        grid[ny * w + nx] = 1;
        stack[top++] = ny * w + nx;
        carved++;
    }
    if (top == 0) {
        int start = w + 1;
        for (long long i = 0; i < (long long)w * h; i++) dist[i] = -1;
        dist[start] = 0;
        queue[qtail++] = start;
    }
}

static void search(void) {
    int goal = (h - 2) * w + (w - 2);
    for (int n = 0; n < SEARCH_PER_STEP && qhead < qtail; n++) {
        int at = queue[qhead++];
        searched++;
        if (at == goal) {
            found = dist[at];
            return;
        }
        int next[4] = {at + 1, at - 1, at + w, at - w};
        for (int d = 0; d < 4; d++) {
            int to = next[d];
            if (grid[to] && dist[to] < 0) {
                dist[to] = dist[at] + 1;
                queue[qtail++] = to;
            }
        }
    }
}

long long task_step(void) {
    if (top > 0) {
        carve();
        return carved;
    }
    if (found < 0 && qhead < qtail) search();
    if (found >= 0 || qhead == qtail) return total;
    return cells + searched;
}

const void *task_result(unsigned *len) {
    int n = tern_put_dec(result, "path ", found);
    n += tern_put_dec(result + n, " explored ", searched);
    *len = (unsigned)n;
    return result;
}
