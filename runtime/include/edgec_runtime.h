/* edgec runtime C API: run a compiled edgec model from C.
 *
 * Link the model object (which exports <name>_info and <name>_forward) and the runtime's
 * static library (libedgec_runtime.a), then:
 *
 *     edgec_session *s;
 *     if (edgec_session_new(&mymodel_info, mymodel_forward, "mymodel.weights", 0, &s) != 0) {
 *         fprintf(stderr, "%s\n", edgec_last_error());
 *         return 1;
 *     }
 *     float *logits = malloc(sizeof(float) * n * mymodel_info.vocab);
 *     if (edgec_session_forward(s, ids, n, logits) != 0)
 *         fprintf(stderr, "%s\n", edgec_session_last_error(s));
 *     edgec_session_free(s);
 *
 * Every function returns an int32_t status: EDGEC_RT_OK (0) or a negative EDGEC_ERR_* code;
 * only the two message accessors return strings. NULL pointers are rejected with
 * EDGEC_ERR_NULL_ARGUMENT, never dereferenced (edgec_session_free(NULL) is a no-op).
 *
 * Error messages: every failing call stores a message for the calling thread, read with
 * edgec_last_error(); that is the one to read when there is no session (edgec_session_new
 * failed, or the handle was NULL or dead). A failing call on a live session also stores it in
 * the session, read with edgec_session_last_error(session).
 *
 * Handles: an edgec_session * is an opaque token, never dereferenced by the runtime and never
 * reused within a process. Every call looks it up in a registry of live sessions, so a handle
 * already freed (or one that never came from edgec_session_new) is refused with
 * EDGEC_ERR_INVALID_HANDLE, a double edgec_session_free included, without touching freed
 * memory. A session may be moved between threads; calls on one session from several threads
 * are serialized (one waits for the other), and different sessions run in parallel. */
#ifndef EDGEC_RUNTIME_H
#define EDGEC_RUNTIME_H

#include "edgec_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEC_RT_OK 0
#define EDGEC_ERR_NULL_ARGUMENT (-1)     /* a required pointer is NULL */
#define EDGEC_ERR_INVALID_ARGUMENT (-2)  /* e.g. empty prompt, bad sampler params, threads > 1024 */
#define EDGEC_ERR_IO (-3)                /* the weights file cannot be opened/mapped/read */
#define EDGEC_ERR_WEIGHTS (-4)           /* bad magic/version/size/hash: not this model's file */
#define EDGEC_ERR_MODEL_INFO (-5)        /* ABI version mismatch or unusable model info */
#define EDGEC_ERR_TOKEN_ID (-6)          /* an id is negative or not below vocab */
#define EDGEC_ERR_CONTEXT_OVERFLOW (-7)  /* position + tokens would exceed max_context */
#define EDGEC_ERR_MODEL_STATUS (-8)      /* the model's forward returned a nonzero status */
#define EDGEC_ERR_OUT_OF_MEMORY (-9)     /* arena, state or weights buffer allocation failed */
#define EDGEC_ERR_PANIC (-10)            /* internal runtime error */
#define EDGEC_ERR_INVALID_HANDLE (-11)   /* the session handle is not live (freed, or made up) */

/* An open model: weights mapping, arena, KV state, thread pool, current position. */
typedef struct edgec_session edgec_session;

/* Sampling settings for edgec_session_generate. */
typedef struct edgec_sampler_params {
    float temperature; /* <= 0: greedy (argmax, first index on ties) */
    uint32_t top_k;    /* 0: no top-k limit */
    float top_p;       /* in (0, 1]; 1: no nucleus limit */
    uint32_t reserved; /* set to 0 */
    uint64_t seed;     /* same seed, same tokens */
} edgec_sampler_params;

/* Opens weights_path (mmapped read-only, validated against info: magic, ABI version, sizes,
 * content hash), allocates the arena and zeroed state, starts the thread pool and stores the
 * session in *out (NULL on failure; the message is in edgec_last_error()). threads: 0 = the
 * default, the fast cores (on big.LITTLE the cores outside the slowest cluster, workers
 * pinned to them; elsewhere every core), at most 8; 1 = no worker threads; more than 1024 is
 * refused with EDGEC_ERR_INVALID_ARGUMENT. info must outlive the session. */
int32_t edgec_session_new(const edgec_model_info *info, edgec_forward_fn forward,
                          const char *weights_path, uint32_t threads, edgec_session **out);

/* Like edgec_session_new, over weights already in memory: the model object's embedded
 * <name>_weights (compiled with --embed-weights; size = info->weights_size) or a copy of a
 * weights file. Checked like a file (magic, ABI version, size, content hash); used in place
 * when 64-byte aligned, copied otherwise. The memory must outlive the session. */
int32_t edgec_session_new_from_memory(const edgec_model_info *info, edgec_forward_fn forward,
                                      const void *weights, uint64_t size, uint32_t threads,
                                      edgec_session **out);

/* Frees the session and joins its threads. NULL is accepted; a handle freed already is
 * refused with EDGEC_ERR_INVALID_HANDLE. */
int32_t edgec_session_free(edgec_session *session);

/* Runs n ids at the current position (in chunks of max_tokens) and advances it; writes
 * n * vocab floats to logits, one row per id. Ids (0 <= id < vocab) and context room are
 * checked before the model runs. n == 0 does nothing. */
int32_t edgec_session_forward(edgec_session *session, const int32_t *ids, uint32_t n,
                              float *logits);

/* Back to position 0 with the KV state zeroed. */
int32_t edgec_session_reset(edgec_session *session);

/* *out = the current position (tokens in the KV cache). */
int32_t edgec_session_position(const edgec_session *session, uint32_t *out);

/* *out = the threads running the session's kernels, the caller's included (what threads 0
 * resolved to, or the count asked for). */
int32_t edgec_session_threads(const edgec_session *session, uint32_t *out);

/* Prefills prompt[0..n_prompt) (n_prompt >= 1) at the current position, then decodes up to
 * max_new_tokens ids one at a time through the KV cache into out_tokens and sets *out_n to
 * how many. params NULL = greedy. prompt_logits may be NULL, else it receives
 * n_prompt * vocab floats. Stops early, without error, when the context is full. The last
 * generated id is not fed back: the position ends at start + n_prompt + *out_n - 1. */
int32_t edgec_session_generate(edgec_session *session, const int32_t *prompt, uint32_t n_prompt,
                               uint32_t max_new_tokens, const edgec_sampler_params *params,
                               int32_t *out_tokens, uint32_t *out_n, float *prompt_logits);

/* The session's last error message ("" if none); valid until the next call on the session or
 * its free. A NULL or dead handle gives edgec_last_error(). */
const char *edgec_session_last_error(const edgec_session *session);

/* The calling thread's last error message ("" if none): any failing call's, and the only one
 * for failures before a session exists or with a NULL or dead handle. Valid until the next
 * failing call on this thread. */
const char *edgec_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* EDGEC_RUNTIME_H */
