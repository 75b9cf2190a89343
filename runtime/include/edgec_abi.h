/* edgec ABI: the contract between a compiled model object and its runtime.
 * Mirrors runtime/src/abi.rs (ABI version 1); a test checks that the two agree. */
#ifndef EDGEC_ABI_H
#define EDGEC_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEC_ABI_VERSION 1u
#define EDGEC_ALIGN 64u
#define EDGEC_WEIGHTS_HEADER_SIZE 64u
#define EDGEC_WEIGHTS_MAGIC "EDGECWT" /* 8 bytes with the terminating NUL */

/* Status codes returned by a model's forward entry point. */
#define EDGEC_STATUS_OK 0
#define EDGEC_STATUS_BAD_TOKEN_COUNT 1  /* n_tokens is 0 or above max_tokens */
#define EDGEC_STATUS_CONTEXT_OVERFLOW 2 /* pos + n_tokens is above max_context */
#define EDGEC_STATUS_BAD_TOKEN_ID 3     /* an id is negative or not below vocab */
#define EDGEC_STATUS_NULL_ARGUMENT 4    /* a pointer argument is NULL */

/* Processes tasks [begin, end) of one kernel call. */
typedef void (*edgec_kernel_fn)(const uint8_t *args, uint64_t begin, uint64_t end);

/* Runs kernel over a partition of [0, n_tasks) and returns when every task is done. */
typedef void (*edgec_parallel_for_fn)(void *pool, edgec_kernel_fn kernel, const uint8_t *args,
                                      uint64_t n_tasks);

/* Everything a compiled model needs from its host; the object imports no symbols. */
typedef struct edgec_context {
    const uint8_t *weights; /* the mapped weights file, header included; 64-byte aligned */
    uint8_t *arena;         /* arena_size bytes, 64-byte aligned */
    uint8_t *state;         /* state_size bytes (KV cache), 64-byte aligned, zeroed at start */
    void *pool;             /* handed back to parallel_for */
    edgec_parallel_for_fn parallel_for;
} edgec_context;

/* Static facts about a compiled model: the object's data symbol <name>_info. */
typedef struct edgec_model_info {
    uint32_t abi_version;
    uint32_t vocab;       /* ids must be below it; a logits row has vocab floats */
    uint32_t max_tokens;  /* most tokens per forward call */
    uint32_t max_context; /* pos + n_tokens must not exceed it */
    uint64_t arena_size;
    uint64_t state_size;
    uint64_t weights_size;    /* exact size of the matching weights file */
    uint8_t content_hash[32]; /* equal to the weights file header's */
} edgec_model_info;

/* The first 64 bytes of a weights file (little-endian). */
typedef struct edgec_weights_header {
    uint8_t magic[8]; /* "EDGECWT\0" */
    uint32_t abi_version;
    uint32_t header_size; /* 64 */
    uint8_t content_hash[32];
    uint64_t file_size; /* the whole file, header included */
    uint64_t reserved;
} edgec_weights_header;

/* int32_t <name>_forward(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens,
 *                        uint32_t pos, float *logits);
 * Runs n_tokens tokens at positions pos..pos+n_tokens, appends their keys and values to the
 * state and writes n_tokens * vocab logits. Returns EDGEC_STATUS_OK or a status code, having
 * done nothing. */
typedef int32_t (*edgec_forward_fn)(const edgec_context *ctx, const int32_t *ids,
                                    uint32_t n_tokens, uint32_t pos, float *logits);

/* int32_t <name>_run(const edgec_context *ctx, const void *const *inputs,
 *                    void *const *outputs, const int64_t *dims);
 * The entry point of a general graph (not the decoder signature; no _forward): one pointer per
 * graph input/output in graph order, one int64 per symbol in dims (NULL if none). Returns
 * EDGEC_STATUS_BAD_TOKEN_COUNT for a symbol value outside 1..=max, EDGEC_STATUS_BAD_TOKEN_ID
 * for an out-of-range gather index, EDGEC_STATUS_NULL_ARGUMENT, having done nothing. */
typedef int32_t (*edgec_run_fn)(const edgec_context *ctx, const void *const *inputs,
                                void *const *outputs, const int64_t *dims);

#ifdef __cplusplus
}
#endif
#endif /* EDGEC_ABI_H */
