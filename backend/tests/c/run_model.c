/* Test driver for an edgec object built for another ISA (run under qemu-user).
 * Usage: run_model WEIGHTS OUT POS:ID,ID,... [POS:ID,...]...
 * Loads the weights file, checks its header against model_info, runs each call in order on one
 * session (state persists) with a serial parallel_for, and appends every call's logits to OUT
 * as raw little-endian floats. With RUN_MODEL_STATE set, the final state block is written to
 * that file. Exit status: 0, or 10 + the forward status, or 2 on bad usage. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void serial_parallel_for(void *pool, edgec_kernel_fn kernel, const uint8_t *args, uint64_t n) {
    (void)pool;
    kernel(args, 0, n);
}

static void *zalloc64(uint64_t n) {
    uint64_t sz = (n + 63) / 64 * 64;
    if (sz == 0) sz = 64;
    void *p = aligned_alloc(64, sz);
    if (p) memset(p, 0, sz);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const edgec_model_info *info = &model_info;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    uint8_t *weights = zalloc64(info->weights_size);
    if (fread(weights, 1, info->weights_size, f) != info->weights_size) return 3;
    fclose(f);
    const edgec_weights_header *h = (const edgec_weights_header *)weights;
    if (memcmp(h->magic, EDGEC_WEIGHTS_MAGIC, 8) != 0 || h->abi_version != info->abi_version ||
        memcmp(h->content_hash, info->content_hash, 32) != 0 || h->file_size != info->weights_size)
        return 4;
    edgec_context ctx = {weights, zalloc64(info->arena_size), zalloc64(info->state_size), NULL,
                         serial_parallel_for};
    FILE *out = fopen(argv[2], "wb");
    if (!out) return 2;
    int32_t *ids = malloc(sizeof(int32_t) * (info->max_tokens + 1));
    float *logits = malloc(sizeof(float) * (size_t)info->vocab * info->max_tokens);
    for (int a = 3; a < argc; a++) {
        char *s = argv[a];
        uint32_t pos = (uint32_t)strtoul(s, &s, 10);
        if (*s++ != ':') return 2;
        uint32_t n = 0;
        while (*s && n <= info->max_tokens) {
            ids[n++] = (int32_t)strtol(s, &s, 10);
            if (*s == ',') s++;
        }
        int32_t st = model_forward(&ctx, ids, n, pos, logits);
        if (st != EDGEC_STATUS_OK) return 10 + st;
        fwrite(logits, sizeof(float), (size_t)n * info->vocab, out);
    }
    fclose(out);
    const char *state_path = getenv("RUN_MODEL_STATE");
    if (state_path) {
        FILE *sf = fopen(state_path, "wb");
        if (!sf || fwrite(ctx.state, 1, info->state_size, sf) != info->state_size) return 2;
        fclose(sf);
    }
    return 0;
}
