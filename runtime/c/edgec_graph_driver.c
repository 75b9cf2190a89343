/* edgec general-graph driver: runs one call of a general graph's <name>_run on a foreign target
 * (aarch64 under qemu), with a serial parallel_for. Standalone C99 + POSIX; no edgec runtime.
 *
 * Build:  cc -O2 -static -DEDGEC_MODEL=<name> -I runtime/include runtime/c/edgec_graph_driver.c \
 *             <name>.o -o <name>
 * Run:    <name> WEIGHTS IN.bin OUT.bin
 *
 * IN.bin (little-endian): i64 symbol value (ignored when the graph has no symbol), u32 number of
 * inputs, per input u64 byte length then the bytes, u32 number of outputs, per output u64 byte
 * length. OUT.bin: i32 status of <name>_run, u32 number of outputs, per output u64 byte length
 * then the bytes (only when the status is 0). Exit status 0 when OUT.bin was written. */
#define _POSIX_C_SOURCE 200809L
#include "edgec_abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EDGEC_MODEL
#error "define EDGEC_MODEL=<name> (the object's symbols are <name>_info and <name>_run)"
#endif
#define EDGEC_PASTE2(a, b) a##b
#define EDGEC_PASTE(a, b) EDGEC_PASTE2(a, b)
#define MODEL_INFO EDGEC_PASTE(EDGEC_MODEL, _info)
#define MODEL_RUN EDGEC_PASTE(EDGEC_MODEL, _run)

extern const edgec_model_info MODEL_INFO;
int32_t MODEL_RUN(const edgec_context *ctx, const void *const *inputs, void *const *outputs,
                  const int64_t *dims);

static void die(const char *what) {
    fprintf(stderr, "edgec_graph_driver: %s\n", what);
    exit(2);
}

static void serial_for(void *pool, edgec_kernel_fn kernel, const uint8_t *args, uint64_t n) {
    (void)pool;
    if (n > 0) kernel(args, 0, n);
}

static void *aligned(uint64_t n) {
    void *p = NULL;
    if (posix_memalign(&p, EDGEC_ALIGN, n ? (size_t)n : EDGEC_ALIGN) != 0) die("out of memory");
    memset(p, 0, n ? (size_t)n : EDGEC_ALIGN);
    return p;
}

static void get(void *dst, size_t n, FILE *f) {
    if (fread(dst, 1, n, f) != n) die("IN.bin is truncated");
}

int main(int argc, char **argv) {
    const edgec_model_info *info = &MODEL_INFO;
    if (argc != 4) die("usage: DRIVER WEIGHTS IN.bin OUT.bin");
    if (info->abi_version != EDGEC_ABI_VERSION) die("object ABI version mismatch");

    FILE *wf = fopen(argv[1], "rb");
    if (!wf) die("cannot open the weights file");
    uint8_t *weights = aligned(info->weights_size);
    if (fread(weights, 1, (size_t)info->weights_size, wf) != info->weights_size || fgetc(wf) != EOF)
        die("the weights file does not have the model's size");
    fclose(wf);
    if (info->weights_size < EDGEC_WEIGHTS_HEADER_SIZE) die("weights file too small");
    const edgec_weights_header *h = (const edgec_weights_header *)weights;
    if (memcmp(h->magic, EDGEC_WEIGHTS_MAGIC, 8) != 0 || h->abi_version != EDGEC_ABI_VERSION ||
        h->file_size != info->weights_size || memcmp(h->content_hash, info->content_hash, 32) != 0)
        die("the weights file does not belong to this object");

    FILE *in = fopen(argv[2], "rb");
    if (!in) die("cannot open IN.bin");
    int64_t dim;
    uint32_t n_in, n_out;
    get(&dim, 8, in);
    get(&n_in, 4, in);
    if (n_in > 4096) die("too many inputs");
    void **inputs = calloc(n_in + 1, sizeof(void *));
    for (uint32_t i = 0; i < n_in; i++) {
        uint64_t len;
        get(&len, 8, in);
        if (len > (1ull << 34)) die("input too large");
        inputs[i] = aligned(len);
        get(inputs[i], (size_t)len, in);
    }
    get(&n_out, 4, in);
    if (n_out > 4096) die("too many outputs");
    void **outputs = calloc(n_out + 1, sizeof(void *));
    uint64_t *out_len = calloc(n_out + 1, sizeof(uint64_t));
    for (uint32_t i = 0; i < n_out; i++) {
        get(&out_len[i], 8, in);
        if (out_len[i] > (1ull << 34)) die("output too large");
        outputs[i] = aligned(out_len[i]);
    }
    fclose(in);

    edgec_context ctx;
    ctx.weights = weights;
    ctx.arena = aligned(info->arena_size);
    ctx.state = aligned(info->state_size);
    ctx.pool = NULL;
    ctx.parallel_for = serial_for;
    int32_t status = MODEL_RUN(&ctx, (const void *const *)inputs, outputs, &dim);

    FILE *out = fopen(argv[3], "wb");
    if (!out) die("cannot create OUT.bin");
    fwrite(&status, 4, 1, out);
    fwrite(&n_out, 4, 1, out);
    for (uint32_t i = 0; status == EDGEC_STATUS_OK && i < n_out; i++) {
        fwrite(&out_len[i], 8, 1, out);
        fwrite(outputs[i], 1, (size_t)out_len[i], out);
    }
    if (fclose(out) != 0) die("cannot write OUT.bin");
    return 0;
}
