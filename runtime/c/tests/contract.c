/* The runtime's C API contract, called from C: every error path returns its EDGEC_ERR_* code
 * and the exact message, through edgec_last_error() (no session yet, or a NULL or dead
 * handle) and edgec_session_last_error() (a live session); a failed call changes nothing.
 *
 * Linked with fake_model.c (the fake "compiled model": fake_info, fake_forward) and the Rust
 * runtime's static library; built and run by runtime/tests/contract.rs (natively, and under
 * valgrind when it is installed: dead handles must be refused without reading freed memory).
 *
 * Usage: contract SCRATCH_DIR   (weights files are written there)
 * Prints one line per failed check and "contract.c: N checks passed" at the end; exit 0 only
 * when every check passed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgec_runtime.h"

extern const edgec_model_info fake_info;
int32_t fake_forward(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens, uint32_t pos,
                     float *logits);

#define VOCAB 37u
#define MAX_CONTEXT 64u
#define WEIGHTS_SIZE 128u
#define SALT 5u

static int checks, failures;

static void fail_at(int line, const char *what) {
    failures++;
    printf("contract.c:%d: FAILED: %s\n", line, what);
}

/* `got` must be `want`, and `msg` (the message accessor's result) exactly `want_msg`. */
static void expect_at(int line, const char *call, int32_t got, int32_t want, const char *msg,
                      const char *want_msg) {
    checks++;
    if (got != want) {
        printf("contract.c:%d: FAILED: %s returned %d, expected %d (message: \"%s\")\n", line, call,
               (int)got, (int)want, msg ? msg : "(null)");
        failures++;
        return;
    }
    if (want_msg && (!msg || strcmp(msg, want_msg) != 0)) {
        printf("contract.c:%d: FAILED: %s: message\n  got      \"%s\"\n  expected \"%s\"\n", line, call,
               msg ? msg : "(null)", want_msg);
        failures++;
    }
}

/* A call failing with code `want` and thread message `want_msg` (no live session involved);
 * NULL: the message is not checked. The message is read after the call has returned. */
static void expect_global_at(int line, const char *call, int32_t got, int32_t want, const char *want_msg) {
    expect_at(line, call, got, want, edgec_last_error(), want_msg);
}
#define EXPECT_GLOBAL(call, want, want_msg) expect_global_at(__LINE__, #call, (call), (want), (want_msg))
/* A call on session `s` failing with `want`; the session's message and the thread's are both
 * `want_msg` (NULL: not checked, for calls expected to succeed). */
static void expect_session_at(int line, const char *call, int32_t got, int32_t want, const edgec_session *s,
                              const char *want_msg) {
    expect_at(line, call, got, want, edgec_session_last_error(s), want_msg);
    if (want_msg) expect_at(line, call, got, want, edgec_last_error(), want_msg);
}
#define EXPECT_SESSION(s, call, want, want_msg) expect_session_at(__LINE__, #call, (call), (want), (s), (want_msg))
#define CHECK(cond)                                     \
    do {                                                \
        checks++;                                       \
        if (!(cond)) fail_at(__LINE__, #cond);          \
    } while (0)

/* The fake model's logits row (see fake_model.c). */
static void expected_row(uint32_t id, uint32_t pos, uint32_t prev, float *row) {
    uint32_t j, target = (id * 7u + pos * 3u + prev + SALT) % VOCAB;
    for (j = 0; j < VOCAB; j++)
        row[j] = j == target ? 10.0f : (float)((id * 31u + pos * 17u + j * 13u) % 101u) / 101.0f;
}

/* Logits of `ids` run from position 0 equal the formula, row by row. */
static int logits_match(const int32_t *ids, uint32_t n, const float *logits) {
    float row[VOCAB];
    uint32_t t, prev = 0;
    for (t = 0; t < n; t++) {
        expected_row((uint32_t)ids[t], t, prev, row);
        if (memcmp(row, logits + (size_t)t * VOCAB, sizeof row) != 0) return 0;
        prev += (uint32_t)ids[t];
    }
    return 1;
}

static int32_t failing_forward(const edgec_context *ctx, const int32_t *ids, uint32_t n, uint32_t pos,
                               float *logits) {
    (void)ctx; (void)ids; (void)n; (void)pos; (void)logits;
    return 7;
}

/* A valid weights file image for fake_info: the 64-byte header, then SALT. */
static void good_weights(uint8_t *b) {
    static const uint8_t magic[8] = {'E', 'D', 'G', 'E', 'C', 'W', 'T', 0};
    uint32_t v;
    uint64_t size = WEIGHTS_SIZE;
    int i;
    memset(b, 0, WEIGHTS_SIZE);
    memcpy(b, magic, 8);
    v = EDGEC_ABI_VERSION;
    for (i = 0; i < 4; i++) b[8 + i] = (uint8_t)(v >> (8 * i));
    v = EDGEC_WEIGHTS_HEADER_SIZE;
    for (i = 0; i < 4; i++) b[12 + i] = (uint8_t)(v >> (8 * i));
    for (i = 0; i < 32; i++) b[16 + i] = (uint8_t)i; /* fake_info's content hash */
    for (i = 0; i < 8; i++) b[48 + i] = (uint8_t)(size >> (8 * i));
    for (i = 0; i < 4; i++) b[64 + i] = (uint8_t)(SALT >> (8 * i));
}

static const char *g_dir;

/* Writes `n` bytes to SCRATCH_DIR/name; returns the path (static buffer per slot). */
static const char *write_file(int slot, const char *name, const uint8_t *b, size_t n) {
    static char paths[16][1024];
    FILE *f;
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", g_dir, name);
    f = fopen(paths[slot], "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        printf("cannot write %s\n", paths[slot]);
        exit(2);
    }
    return paths[slot];
}

static void weights_file_errors(void) {
    uint8_t good[WEIGHTS_SIZE], b[WEIGHTS_SIZE + 64];
    char want[1024];
    edgec_session *s = NULL;
    const char *p;

    /* Not there. */
    snprintf(want, sizeof want, "%s/missing.weights: No such file or directory (os error 2)", g_dir);
    {
        char missing[1024];
        snprintf(missing, sizeof missing, "%s/missing.weights", g_dir);
        EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, missing, 1, &s), EDGEC_ERR_IO, want);
    }
    CHECK(s == NULL);

    good_weights(good);
    /* Empty, and shorter than the header. */
    p = write_file(1, "empty.weights", good, 0);
    snprintf(want, sizeof want, "weights file %s: file is 0 bytes, shorter than the 64-byte header", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    p = write_file(2, "short.weights", good, 10);
    snprintf(want, sizeof want, "weights file %s: file is 10 bytes, shorter than the 64-byte header", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    /* Truncated and padded. */
    p = write_file(3, "truncated.weights", good, 100);
    snprintf(want, sizeof want, "weights file %s: truncated: header says 128 bytes but the file is 100 bytes", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    memcpy(b, good, WEIGHTS_SIZE);
    memset(b + WEIGHTS_SIZE, 0, 8);
    p = write_file(4, "padded.weights", b, WEIGHTS_SIZE + 8);
    snprintf(want, sizeof want, "weights file %s: padded: header says 128 bytes but the file is 136 bytes", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    /* Magic, ABI version, header size. */
    memcpy(b, good, WEIGHTS_SIZE);
    b[0] = 'X';
    p = write_file(5, "magic.weights", b, WEIGHTS_SIZE);
    snprintf(want, sizeof want,
             "weights file %s: bad magic \"XDGECWT\\x00\" (expected \"EDGECWT\\x00\"); not an edgec weights file", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    memcpy(b, good, WEIGHTS_SIZE);
    b[8] = EDGEC_ABI_VERSION + 1;
    p = write_file(6, "version.weights", b, WEIGHTS_SIZE);
    snprintf(want, sizeof want, "weights file %s: ABI version %u (this runtime implements %u)", p,
             EDGEC_ABI_VERSION + 1, EDGEC_ABI_VERSION);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    memcpy(b, good, WEIGHTS_SIZE);
    b[12] = 128;
    p = write_file(7, "hsize.weights", b, WEIGHTS_SIZE);
    snprintf(want, sizeof want, "weights file %s: header size 128 (expected 64)", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    /* A consistent file of another size than the model's. */
    memcpy(b, good, WEIGHTS_SIZE);
    memset(b + WEIGHTS_SIZE, 0, 64);
    b[48] = 192;
    p = write_file(8, "size.weights", b, WEIGHTS_SIZE + 64);
    snprintf(want, sizeof want,
             "weights file %s: file is 192 bytes but the model was compiled with a 128-byte weights file", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    /* Another build's weights: the content hash differs in its last byte. */
    memcpy(b, good, WEIGHTS_SIZE);
    b[16 + 31] = 0xee;
    p = write_file(9, "hash.weights", b, WEIGHTS_SIZE);
    snprintf(want, sizeof want,
             "weights file %s: content hash 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eee "
             "does not match the model's 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f; "
             "the weights belong to another build", p);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, p, 1, &s), EDGEC_ERR_WEIGHTS, want);
    CHECK(s == NULL);

    /* The same checks on weights in memory (--embed-weights). */
    EXPECT_GLOBAL(edgec_session_new_from_memory(&fake_info, fake_forward, NULL, WEIGHTS_SIZE, 1, &s),
                  EDGEC_ERR_NULL_ARGUMENT, "invalid argument: weights is NULL");
    EXPECT_GLOBAL(edgec_session_new_from_memory(&fake_info, fake_forward, good, WEIGHTS_SIZE - 1, 1, &s),
                  EDGEC_ERR_WEIGHTS,
                  "weights file embedded weights: truncated: header says 128 bytes but the file is 127 bytes");
    EXPECT_GLOBAL(edgec_session_new_from_memory(&fake_info, fake_forward, good, UINT64_MAX, 1, &s),
                  EDGEC_ERR_INVALID_ARGUMENT, "invalid argument: weights size 18446744073709551615 does not fit in memory");
    memcpy(b, good, WEIGHTS_SIZE);
    b[16] = 0xaa;
    EXPECT_GLOBAL(edgec_session_new_from_memory(&fake_info, fake_forward, b, WEIGHTS_SIZE, 1, &s), EDGEC_ERR_WEIGHTS,
                  "weights file embedded weights: content hash aa0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f "
                  "does not match the model's 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f; "
                  "the weights belong to another build");
    CHECK(s == NULL);
}

static void creation_errors(const char *path) {
    edgec_session *s = (edgec_session *)(uintptr_t)1; /* garbage: reset to NULL on failure */
    edgec_model_info bad = fake_info;

    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 1, NULL), EDGEC_ERR_NULL_ARGUMENT,
                  "invalid argument: out is NULL");
    EXPECT_GLOBAL(edgec_session_new(NULL, fake_forward, path, 1, &s), EDGEC_ERR_NULL_ARGUMENT,
                  "invalid argument: info is NULL");
    CHECK(s == NULL);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, NULL, path, 1, &s), EDGEC_ERR_NULL_ARGUMENT,
                  "invalid argument: forward is NULL");
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, NULL, 1, &s), EDGEC_ERR_NULL_ARGUMENT,
                  "invalid argument: weights_path is NULL");
    /* The model object's info. */
    bad.abi_version = 99;
    EXPECT_GLOBAL(edgec_session_new(&bad, fake_forward, path, 1, &s), EDGEC_ERR_MODEL_INFO,
                  "model object has ABI version 99, this runtime implements version 1");
    bad = fake_info;
    bad.vocab = 0;
    EXPECT_GLOBAL(edgec_session_new(&bad, fake_forward, path, 1, &s), EDGEC_ERR_MODEL_INFO,
                  "invalid model info: vocab 0 is not in 1..=2^31-1");
    /* Absurd thread counts are refused before anything is opened. */
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 1025, &s), EDGEC_ERR_INVALID_ARGUMENT,
                  "invalid argument: 1025 threads is more than the limit of 1024 "
                  "(0 = the default: the fast cores, at most 8)");
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, UINT32_MAX, &s), EDGEC_ERR_INVALID_ARGUMENT,
                  "invalid argument: 4294967295 threads is more than the limit of 1024 "
                  "(0 = the default: the fast cores, at most 8)");
    CHECK(s == NULL);
}

static void threads(const char *path) {
    edgec_session *s = NULL;
    uint32_t n = 0;
    /* 0: the default, 1..=8 threads. */
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 0, &s), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_threads(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n >= 1 && n <= 8);
    EXPECT_SESSION(s, edgec_session_threads(s, NULL), EDGEC_ERR_NULL_ARGUMENT, "invalid argument: out is NULL");
    CHECK(edgec_session_free(s) == EDGEC_RT_OK);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 3, &s), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_threads(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n == 3);
    CHECK(edgec_session_free(s) == EDGEC_RT_OK);
}

static void null_session(void) {
    int32_t ids[2] = {1, 2}, out[4];
    float logits[2 * VOCAB];
    uint32_t n;
    EXPECT_GLOBAL(edgec_session_forward(NULL, ids, 2, logits), EDGEC_ERR_NULL_ARGUMENT, "session is NULL");
    EXPECT_GLOBAL(edgec_session_reset(NULL), EDGEC_ERR_NULL_ARGUMENT, "session is NULL");
    EXPECT_GLOBAL(edgec_session_position(NULL, &n), EDGEC_ERR_NULL_ARGUMENT, "session is NULL");
    EXPECT_GLOBAL(edgec_session_threads(NULL, &n), EDGEC_ERR_NULL_ARGUMENT, "session is NULL");
    EXPECT_GLOBAL(edgec_session_generate(NULL, ids, 2, 4, NULL, out, &n, NULL), EDGEC_ERR_NULL_ARGUMENT,
                  "session is NULL");
    CHECK(strcmp(edgec_session_last_error(NULL), "session is NULL") == 0);
    CHECK(edgec_session_free(NULL) == EDGEC_RT_OK);
}

static void session_errors(const char *path) {
    edgec_session *s = NULL;
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], many[65];
    float logits[65 * VOCAB], before[8 * VOCAB];
    uint32_t n = 0, i;
    edgec_sampler_params params = {1.0f, 0, 1.0f, 0, 42};

    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 2, &s), EDGEC_RT_OK, NULL);
    CHECK(s != NULL);
    CHECK(strcmp(edgec_session_last_error(s), "") == 0);
    for (i = 0; i < 65; i++) many[i] = 1;

    /* NULL arguments. */
    EXPECT_SESSION(s, edgec_session_forward(s, NULL, 2, logits), EDGEC_ERR_NULL_ARGUMENT,
                   "invalid argument: ids is NULL");
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 2, NULL), EDGEC_ERR_NULL_ARGUMENT,
                   "invalid argument: logits is NULL");
    EXPECT_SESSION(s, edgec_session_position(s, NULL), EDGEC_ERR_NULL_ARGUMENT, "invalid argument: out is NULL");
    EXPECT_SESSION(s, edgec_session_generate(s, NULL, 2, 4, NULL, out, &n, NULL), EDGEC_ERR_NULL_ARGUMENT,
                   "invalid argument: prompt is NULL");
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 2, 4, NULL, out, NULL, NULL), EDGEC_ERR_NULL_ARGUMENT,
                   "invalid argument: out_n is NULL");
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 2, 4, NULL, NULL, &n, NULL), EDGEC_ERR_NULL_ARGUMENT,
                   "invalid argument: out_tokens is NULL");

    /* Token ids: at or above vocab, negative, INT32_MIN. Nothing runs, logits untouched. */
    for (i = 0; i < 8 * VOCAB; i++) logits[i] = before[i] = -3.0f;
    ids[2] = (int32_t)VOCAB;
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 8, logits), EDGEC_ERR_TOKEN_ID,
                   "token id 37 at index 2 is out of range (vocab 37)");
    ids[2] = -1;
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 8, logits), EDGEC_ERR_TOKEN_ID,
                   "token id -1 at index 2 is out of range (vocab 37)");
    ids[2] = INT32_MIN;
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 8, logits), EDGEC_ERR_TOKEN_ID,
                   "token id -2147483648 at index 2 is out of range (vocab 37)");
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 8, 4, NULL, out, &n, NULL), EDGEC_ERR_TOKEN_ID,
                   "token id -2147483648 at index 2 is out of range (vocab 37)");
    ids[2] = 3;
    CHECK(memcmp(logits, before, sizeof before) == 0);
    EXPECT_SESSION(s, edgec_session_position(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n == 0);

    /* Context: 60 tokens fit, 8 more do not; the position stays at 60. */
    EXPECT_SESSION(s, edgec_session_forward(s, many, 60, logits), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 8, logits), EDGEC_ERR_CONTEXT_OVERFLOW,
                   "context overflow: position 60 + 8 tokens > max context 64");
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 5, 1, NULL, out, &n, NULL), EDGEC_ERR_CONTEXT_OVERFLOW,
                   "context overflow: position 60 + 5 tokens > max context 64");
    EXPECT_SESSION(s, edgec_session_position(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n == 60);
    EXPECT_SESSION(s, edgec_session_reset(s), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_forward(s, many, 65, logits), EDGEC_ERR_CONTEXT_OVERFLOW,
                   "context overflow: position 0 + 65 tokens > max context 64");

    /* Generate's own arguments. */
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 0, 4, NULL, out, &n, NULL), EDGEC_ERR_INVALID_ARGUMENT,
                   "generate needs a non-empty prompt");
    params.top_p = 2.0f;
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 2, 4, &params, out, &n, NULL), EDGEC_ERR_INVALID_ARGUMENT,
                   "invalid argument: sampler top_p 2 is not in (0, 1]");
    params.top_p = 1.0f;
    params.temperature = (float)NAN;
    EXPECT_SESSION(s, edgec_session_generate(s, ids, 2, 4, &params, out, &n, NULL), EDGEC_ERR_INVALID_ARGUMENT,
                   "invalid argument: sampler temperature NaN is not finite");

    /* After all that, the session still computes the right thing from position 0. */
    EXPECT_SESSION(s, edgec_session_position(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n == 0);
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 8, logits), EDGEC_RT_OK, NULL);
    CHECK(logits_match(ids, 8, logits));
    /* The last message stays until the next failure. */
    CHECK(strcmp(edgec_session_last_error(s), "invalid argument: sampler temperature NaN is not finite") == 0);
    CHECK(edgec_session_free(s) == EDGEC_RT_OK);
}

static void model_status(const char *path) {
    edgec_session *s = NULL;
    int32_t ids[2] = {1, 2};
    float logits[2 * VOCAB];
    uint32_t n = 9;
    EXPECT_GLOBAL(edgec_session_new(&fake_info, failing_forward, path, 1, &s), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 2, logits), EDGEC_ERR_MODEL_STATUS,
                   "model forward returned status 7 (unknown status) for 2 tokens at position 0");
    EXPECT_SESSION(s, edgec_session_position(s, &n), EDGEC_RT_OK, NULL);
    CHECK(n == 0);
    CHECK(edgec_session_free(s) == EDGEC_RT_OK);
}

/* Messages belong to their session; the thread's is the latest failure's. */
static void messages_are_per_session(const char *path) {
    edgec_session *a = NULL, *b = NULL;
    int32_t big[1] = {100}, neg[1] = {-5};
    float logits[VOCAB];
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 1, &a), EDGEC_RT_OK, NULL);
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 1, &b), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(a, edgec_session_forward(a, big, 1, logits), EDGEC_ERR_TOKEN_ID,
                   "token id 100 at index 0 is out of range (vocab 37)");
    EXPECT_SESSION(b, edgec_session_forward(b, neg, 1, logits), EDGEC_ERR_TOKEN_ID,
                   "token id -5 at index 0 is out of range (vocab 37)");
    CHECK(strcmp(edgec_session_last_error(a), "token id 100 at index 0 is out of range (vocab 37)") == 0);
    EXPECT_GLOBAL(edgec_session_new(NULL, fake_forward, path, 1, &b), EDGEC_ERR_NULL_ARGUMENT,
                  "invalid argument: info is NULL");
    CHECK(b == NULL);
    CHECK(strcmp(edgec_session_last_error(a), "token id 100 at index 0 is out of range (vocab 37)") == 0);
    CHECK(edgec_session_free(a) == EDGEC_RT_OK);
}

/* A freed handle, a double free and made-up handles: refused, never dereferenced. */
static void dead_handles(const char *path) {
    edgec_session *s = NULL, *t = NULL;
    int32_t ids[2] = {1, 2}, out[2];
    float logits[2 * VOCAB];
    uint32_t n;
    char want[256];
    int on_stack = 0;
    edgec_session *made_up[2];

    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 2, &s), EDGEC_RT_OK, NULL);
    EXPECT_SESSION(s, edgec_session_forward(s, ids, 2, logits), EDGEC_RT_OK, NULL);
    CHECK(edgec_session_free(s) == EDGEC_RT_OK);
    snprintf(want, sizeof want,
             "session handle %p is not a live session (already freed, or not from edgec_session_new)", (void *)s);
    EXPECT_GLOBAL(edgec_session_forward(s, ids, 2, logits), EDGEC_ERR_INVALID_HANDLE, want);
    CHECK(strcmp(edgec_session_last_error(s), want) == 0);
    EXPECT_GLOBAL(edgec_session_reset(s), EDGEC_ERR_INVALID_HANDLE, want);
    EXPECT_GLOBAL(edgec_session_position(s, &n), EDGEC_ERR_INVALID_HANDLE, want);
    EXPECT_GLOBAL(edgec_session_threads(s, &n), EDGEC_ERR_INVALID_HANDLE, want);
    EXPECT_GLOBAL(edgec_session_generate(s, ids, 2, 2, NULL, out, &n, NULL), EDGEC_ERR_INVALID_HANDLE, want);
    EXPECT_GLOBAL(edgec_session_free(s), EDGEC_ERR_INVALID_HANDLE, want); /* double free */

    /* A new session never gets the old handle back, and the old one stays dead. */
    EXPECT_GLOBAL(edgec_session_new(&fake_info, fake_forward, path, 1, &t), EDGEC_RT_OK, NULL);
    CHECK(t != s);
    EXPECT_GLOBAL(edgec_session_reset(s), EDGEC_ERR_INVALID_HANDLE, want);
    EXPECT_SESSION(t, edgec_session_forward(t, ids, 2, logits), EDGEC_RT_OK, NULL);
    CHECK(logits_match(ids, 2, logits));

    /* Pointers that never were handles: a stack address, an odd integer. */
    made_up[0] = (edgec_session *)(void *)&on_stack;
    made_up[1] = (edgec_session *)(uintptr_t)0x1235;
    for (n = 0; n < 2; n++) {
        snprintf(want, sizeof want,
                 "session handle %p is not a live session (already freed, or not from edgec_session_new)",
                 (void *)made_up[n]);
        EXPECT_GLOBAL(edgec_session_forward(made_up[n], ids, 2, logits), EDGEC_ERR_INVALID_HANDLE, want);
        EXPECT_GLOBAL(edgec_session_free(made_up[n]), EDGEC_ERR_INVALID_HANDLE, want);
    }
    CHECK(on_stack == 0);
    CHECK(edgec_session_free(t) == EDGEC_RT_OK);
}

int main(int argc, char **argv) {
    uint8_t good[WEIGHTS_SIZE];
    const char *path;
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    good_weights(good);
    path = write_file(15, "good.weights", good, WEIGHTS_SIZE);

    weights_file_errors();
    creation_errors(path);
    threads(path);
    null_session();
    session_errors(path);
    model_status(path);
    messages_are_per_session(path);
    dead_handles(path);

    if (failures) {
        printf("contract.c: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    printf("contract.c: %d checks passed\n", checks);
    return 0;
}
