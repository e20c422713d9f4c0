/* huffman: Huffman-codes N bytes of seeded, skewed pseudo-text, then decodes
 * the bits and checks that they give the text back. Arguments: [N] [seed].
 * Result: "bits <encoded length> fnv <FNV-1a of the encoded bytes>". Work
 * units: each byte generated, encoded and decoded. */
#define TERN_TASK_MAIN
#include "tern_task.h"

#define BYTES_PER_STEP 16384

static unsigned char *text, *bits;
static long long n, generated, encoded, decoded, nbits, cursor;
static unsigned long long freq[256], rng;
static unsigned code[256];
static int codelen[256];
/* The tree: leaves 0..255, inner nodes from 256. */
static int child[512][2], nodes;
static unsigned long long fnv = 0xcbf29ce484222325ull;
static char result[80];

long long task_init(int argc, const char *const *argv) {
    n = tern_arg(argc, argv, 0, 300000);
    rng = (unsigned long long)tern_arg(argc, argv, 1, 5) * 0x9e3779b97f4a7c15ull | 1;
    if (n < 1 || n > 20000000) return -2;
    text = tern_alloc((unsigned long)n);
    /* No code is longer than 255 bits; these bytes are plenty for skewed text. */
    bits = tern_alloc((unsigned long)n * 2 + 64);
    if (!text || !bits) return -3;
    return 3 * n;
}

static unsigned next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 32);
}

/* Builds the tree and the codes from the frequencies. */
static int build(void) {
    unsigned long long weight[512];
    int alive[512], count = 0;
    for (int s = 0; s < 256; s++) {
        weight[s] = freq[s];
        if (freq[s]) alive[count++] = s;
    }
    nodes = 256;
    if (count == 1) alive[count++] = alive[0] == 0 ? 1 : 0;
    while (count > 1) {
        /* The two lightest (lowest index on ties: deterministic). */
        int m[2];
        for (int k = 0; k < 2; k++) {
            int best = 0;
            for (int i = 1; i < count; i++)
                if (weight[alive[i]] < weight[alive[best]] ||
                    (weight[alive[i]] == weight[alive[best]] && alive[i] < alive[best]))
                    best = i;
            m[k] = alive[best];
            alive[best] = alive[--count];
        }
        child[nodes][0] = m[0];
        child[nodes][1] = m[1];
        weight[nodes] = weight[m[0]] + weight[m[1]];
        alive[count++] = nodes++;
    }
    /* Codes by walking the tree from the root. */
    int stack[512], depth[512];
    unsigned path[512];
    int top = 0;
    stack[top] = nodes - 1, depth[top] = 0, path[top++] = 0;
    while (top) {
        top--;
        int v = stack[top], d = depth[top];
        unsigned p = path[top];
        if (v < 256) {
            if (d > 32) return -5;
            code[v] = p;
            codelen[v] = d;
            continue;
        }
        for (int c = 0; c < 2; c++) {
            stack[top] = child[v][c], depth[top] = d + 1, path[top++] = (p << 1) | (unsigned)c;
        }
    }
    return 0;
}

long long task_step(void) {
    if (generated < n) {
        long long end = generated + BYTES_PER_STEP < n ? generated + BYTES_PER_STEP : n;
        for (; generated < end; generated++) {
            /* Skewed: small letters often, the rest of the bytes rarely. */
            unsigned r = next_random();
            unsigned char c = (r & 7) ? (unsigned char)('a' + (r >> 8) % ((r >> 20) % 26 + 1))
                                      : (unsigned char)(r >> 24);
            text[generated] = c;
            freq[c]++;
        }
        if (generated == n && build() < 0) return -5;
        return generated;
    }
    if (encoded < n) {
        long long end = encoded + BYTES_PER_STEP < n ? encoded + BYTES_PER_STEP : n;
        for (; encoded < end; encoded++) {
            unsigned c = text[encoded];
            for (int i = codelen[c] - 1; i >= 0; i--, nbits++)
                if ((code[c] >> i) & 1) bits[nbits >> 3] |= (unsigned char)(0x80 >> (nbits & 7));
        }
        if (encoded == n)
            /* Hash the code now: tern_result must be cheap. */
            for (long long i = 0; i < (nbits + 7) / 8; i++) {
                fnv ^= bits[i];
                fnv *= 0x100000001b3ull;
            }
        return n + encoded;
    }
    long long end = decoded + BYTES_PER_STEP < n ? decoded + BYTES_PER_STEP : n;
    for (; decoded < end; decoded++) {
        int v = nodes - 1;
        while (v >= 256) {
            int bit = (bits[cursor >> 3] >> (7 - (cursor & 7))) & 1;
            cursor++;
            v = child[v][bit];
        }
        if (text[decoded] != v) return -6;
    }
    return 2 * n + decoded;
}

const void *task_result(unsigned *len) {
    int k = tern_put_dec(result, "bits ", nbits);
    k += tern_put_hex(result + k, " fnv ", fnv);
    *len = (unsigned)k;
    return result;
}
