/* A fake "compiled model" for testing edgec_driver.c; the same logic as the Rust fake in
 * runtime/tests/common/mod.rs (keep them in step).
 *
 * The weights file is the 64-byte header followed by 64 bytes whose first u32 (LE) is SALT.
 * The state holds one int32 per position: the id seen there. For a token `id` at position
 * `pos`, with `prev` = the sum of the ids stored at positions < pos:
 *   target   = (id * 7 + pos * 3 + prev + salt) % vocab
 *   logit[j] = 10                                      if j == target
 *            = ((id * 31 + pos * 17 + j * 13) % 101) / 101   otherwise
 * Logits are computed by a kernel run through ctx->parallel_for over j. */
#include <stddef.h>
#include "edgec_abi.h"

#define FAKE_VOCAB 37u
#define FAKE_MAX_TOKENS 4u
#define FAKE_MAX_CONTEXT 64u

const edgec_model_info fake_info = {
    EDGEC_ABI_VERSION, FAKE_VOCAB, FAKE_MAX_TOKENS, FAKE_MAX_CONTEXT,
    256u,                        /* arena_size */
    FAKE_MAX_CONTEXT * 4u,       /* state_size */
    128u,                        /* weights_size */
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
     16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}};

typedef struct {
    uint32_t id, pos, target;
    float *row;
} row_args;

static void row_kernel(const uint8_t *args, uint64_t begin, uint64_t end) {
    const row_args *a = (const row_args *)(const void *)args;
    uint64_t j;
    for (j = begin; j < end; j++)
        a->row[j] = j == a->target ? 10.0f
                                   : (float)((a->id * 31u + a->pos * 17u + (uint32_t)j * 13u) % 101u) / 101.0f;
}

int32_t fake_forward(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens, uint32_t pos,
                     float *logits) {
    uint32_t t, k;
    int32_t *state;
    const uint8_t *w;
    uint32_t salt;
    if (!ctx || !ids || !logits) return EDGEC_STATUS_NULL_ARGUMENT;
    if (n_tokens == 0 || n_tokens > FAKE_MAX_TOKENS) return EDGEC_STATUS_BAD_TOKEN_COUNT;
    if ((uint64_t)pos + n_tokens > FAKE_MAX_CONTEXT) return EDGEC_STATUS_CONTEXT_OVERFLOW;
    for (t = 0; t < n_tokens; t++)
        if (ids[t] < 0 || (uint32_t)ids[t] >= FAKE_VOCAB) return EDGEC_STATUS_BAD_TOKEN_ID;
    if (((uintptr_t)ctx->weights | (uintptr_t)ctx->arena | (uintptr_t)ctx->state) % EDGEC_ALIGN) return 99;
    w = ctx->weights;
    salt = (uint32_t)w[64] | (uint32_t)w[65] << 8 | (uint32_t)w[66] << 16 | (uint32_t)w[67] << 24;
    state = (int32_t *)(void *)ctx->state;
    for (k = 0; k < 256u; k++) ctx->arena[k] = (uint8_t)k; /* touch the whole arena */
    for (t = 0; t < n_tokens; t++) {
        uint32_t p = pos + t, prev = 0, id = (uint32_t)ids[t];
        row_args a;
        for (k = 0; k < p; k++) prev += (uint32_t)state[k];
        state[p] = (int32_t)id;
        a.id = id;
        a.pos = p;
        a.target = (id * 7u + p * 3u + prev + salt) % FAKE_VOCAB;
        a.row = logits + (size_t)t * FAKE_VOCAB;
        ctx->parallel_for(ctx->pool, row_kernel, (const uint8_t *)&a, FAKE_VOCAB);
    }
    return EDGEC_STATUS_OK;
}
