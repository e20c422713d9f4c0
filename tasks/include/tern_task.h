/* tern_task.h: Tern's Wasm task ABI for tasks written in C (docs/wasm-tasks.md).
 *
 * A task defines three functions and includes this header once, in one
 * file, after defining TERN_TASK_MAIN:
 *
 *   long long task_init(int argc, const char *const *argv);
 *       parse the arguments, set up (cheaply); return the total work
 *       units, or a negative error code
 *   long long task_step(void);
 *       do a bounded amount of work (a few ms of interpretation); return
 *       the work units done so far (never fewer than before), or a
 *       negative error code; the task is done when they reach the total
 *   const void *task_result(unsigned *len);
 *       the result, once done (what a run is verified by)
 *
 * The header exports the ABI (tern_args, tern_init, tern_step, tern_result,
 * with the module's memory) and gives tern_log(), tern_alloc() (zeroed
 * memory that is never freed) and the few C library functions the compiler
 * may call (memcpy, memmove, memset, memcmp).
 *
 * Build a module with Debian's clang and lld:
 *   clang-19 --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o task.wasm task.c
 * The same source builds natively (with tern_native.c providing main) for
 * the reference answer:
 *   clang-19 -O2 -ffp-contract=off -o task task.c tern_native.c
 */
#ifndef TERN_TASK_H
#define TERN_TASK_H

#include <stddef.h>

#define TERN_MAX_ARGS 16

long long task_init(int argc, const char *const *argv);
long long task_step(void);
const void *task_result(unsigned *len);

/* A line for the node's log of the task (natively: standard error). */
void tern_log(const char *text);
/* `n` bytes of zeroed memory, or 0 when the memory limit is reached. */
void *tern_alloc(unsigned long n);
/* A decimal argument, or `fallback` when absent or not a number. */
long long tern_arg(int argc, const char *const *argv, int i, long long fallback);
/* Appends `text`, then `v` in decimal, at `out`; returns the bytes written. */
int tern_put_dec(char *out, const char *text, long long v);
/* Appends `text`, then `v` as 16 hex digits, at `out`; returns the bytes written. */
int tern_put_hex(char *out, const char *text, unsigned long long v);

#ifdef TERN_TASK_MAIN

#ifdef __wasm__
#define TERN_EXPORT(name) __attribute__((export_name(name)))

__attribute__((import_module("tern"), import_name("log")))
void tern_log_import(const char *text, int len);

void tern_log(const char *text) {
    int n = 0;
    while (text[n]) n++;
    tern_log_import(text, n);
}

extern unsigned char __heap_base;
static unsigned long tern_brk;

void *tern_alloc(unsigned long n) {
    if (!tern_brk) tern_brk = (unsigned long)&__heap_base;
    unsigned long start = (tern_brk + 15) & ~15ul;
    unsigned long end = start + n;
    unsigned long have = __builtin_wasm_memory_size(0) * 65536ul;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) < 0)
        return 0;
    tern_brk = end;
    return (void *)start;
}

void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *a = d;
    const unsigned char *b = s;
    while (n--) *a++ = *b++;
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    unsigned char *a = d;
    const unsigned char *b = s;
    if (a < b) {
        while (n--) *a++ = *b++;
    } else {
        while (n--) a[n] = b[n];
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    unsigned char *a = d;
    while (n--) *a++ = (unsigned char)c;
    return d;
}

int memcmp(const void *x, const void *y, size_t n) {
    const unsigned char *a = x, *b = y;
    for (; n; n--, a++, b++)
        if (*a != *b) return *a - *b;
    return 0;
}
#else
#include <stdio.h>
#include <stdlib.h>
#define TERN_EXPORT(name)
void tern_log(const char *text) { fprintf(stderr, "log: %s\n", text); }
void *tern_alloc(unsigned long n) { return calloc(1, n ? n : 1); }
#endif

long long tern_arg(int argc, const char *const *argv, int i, long long fallback) {
    if (i >= argc) return fallback;
    long long v = 0;
    const char *p = argv[i];
    if (!*p) return fallback;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return fallback;
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int tern_put_text(char *out, const char *text) {
    int n = 0;
    while (*text) out[n++] = *text++;
    return n;
}

int tern_put_dec(char *out, const char *text, long long v) {
    int n = tern_put_text(out, text);
    char digits[24];
    int k = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    if (v < 0) out[n++] = '-';
    do digits[k++] = (char)('0' + u % 10); while ((u /= 10));
    while (k) out[n++] = digits[--k];
    return n;
}

int tern_put_hex(char *out, const char *text, unsigned long long v) {
    int n = tern_put_text(out, text);
    for (int i = 15; i >= 0; i--) out[n++] = "0123456789abcdef"[(v >> (4 * i)) & 15];
    return n;
}

/* The ABI's transport (wasm32 only: natively tern_native.c calls the
 * task's functions directly). */
#ifdef __wasm__
static char tern_args_buf[1024];

TERN_EXPORT("tern_args") int tern_args(int len) {
    return len <= (int)sizeof tern_args_buf - 1 ? (int)(size_t)tern_args_buf : 0;
}

TERN_EXPORT("tern_init") long long tern_init(int len) {
    const char *argv[TERN_MAX_ARGS];
    int argc = 0;
    if (len < 0 || len > (int)sizeof tern_args_buf - 1) return -1;
    tern_args_buf[len] = 0;
    int start = 0;
    for (int i = 0; i <= len && argc < TERN_MAX_ARGS; i++) {
        if (i == len || tern_args_buf[i] == 0) {
            tern_args_buf[i] = 0;
            if (i > start) argv[argc++] = tern_args_buf + start;
            start = i + 1;
        }
    }
    return task_init(argc, argv);
}

TERN_EXPORT("tern_step") long long tern_step(void) { return task_step(); }

TERN_EXPORT("tern_result") long long tern_result(void) {
    unsigned len = 0;
    const void *p = task_result(&len);
    return (long long)(unsigned long)p | ((long long)len << 32);
}
#endif

#endif /* TERN_TASK_MAIN */
#endif /* TERN_TASK_H */
