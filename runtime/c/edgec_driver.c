/* edgec_driver.c: run a compiled edgec model without the Rust runtime (e.g. an aarch64 object
 * under qemu-user, where Rust cannot be built). Self-contained C99 + POSIX (posix_memalign).
 *
 * Build:  cc -O2 -static -DEDGEC_MODEL=<name> -I runtime/include runtime/c/edgec_driver.c \
 *            model.o -o prog -lm
 * Usage:  prog WEIGHTS_FILE IDS MAX_NEW_TOKENS MODE OUT_FILE
 *   IDS             comma-separated prompt ids, e.g. 1,2,3 (at least one)
 *   MAX_NEW_TOKENS  greedy tokens to generate after the prompt (argmax, first max on ties)
 *   MODE            prefill  : the prompt in chunks of max_tokens
 *                   stepwise : one token per forward call
 *
 * OUT_FILE (written to OUT_FILE.tmp, then renamed; binary, little-endian):
 *   offset 0   8 bytes  magic "EDGECOUT"
 *   offset 8   u32      n_prompt
 *   offset 12  u32      vocab
 *   offset 16  u32      n_generated
 *   offset 20  u32      variant that ran: 0 baseline (<name>_forward), 1 dotprod, 2 avxvnni,
 *                       3 avx512vnni
 *   offset 24  f32      logits[n_prompt * vocab]   (one row per prompt token)
 *   then       i32      generated[n_generated]
 * The Rust reader is edgec_runtime::driver_output::parse_driver_output.
 *
 * The weights header is validated exactly as the Rust runtime does; any error prints a
 * message on stderr and exits with status 1. The serial parallel_for runs each region inline.
 *
 * Variants: with -DEDGEC_DOTPROD_VARIANT (aarch64 objects export <name>_forward_dotprod too)
 * the driver asks the CPU for FEAT_DotProd (Linux/Android: getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
 * Apple: sysctlbyname("hw.optional.arm.FEAT_DotProd")) and calls the dotprod entry point when
 * it is there, else the baseline one. With -DEDGEC_X86_VNNI_VARIANTS (x86_64 objects export
 * <name>_forward_avxvnni and <name>_forward_avx512vnni) it asks cpuid, and xgetbv for the OS's
 * register state, for AVX-VNNI (leaf 7 subleaf 1, EAX bit 4), else AVX512F + AVX512VL +
 * AVX512_VNNI (leaf 7: EBX bits 16 and 31, ECX bit 11). EDGEC_VARIANT=baseline in the
 * environment forces the baseline. It prints "edgec_driver: variant NAME" on stderr and records
 * it at offset 20. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgec_abi.h"

#if defined(EDGEC_DOTPROD_VARIANT) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#elif defined(EDGEC_DOTPROD_VARIANT) && defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif
#ifdef EDGEC_X86_VNNI_VARIANTS
#include <cpuid.h>
#endif

#ifndef EDGEC_MODEL
#error "define EDGEC_MODEL=<name> (the object's symbols are <name>_info and <name>_forward)"
#endif
#define EDGEC_PASTE2(a, b) a##b
#define EDGEC_PASTE(a, b) EDGEC_PASTE2(a, b)
#define EDGEC_STR2(a) #a
#define EDGEC_STR(a) EDGEC_STR2(a)
#define MODEL_INFO EDGEC_PASTE(EDGEC_MODEL, _info)
#define MODEL_FORWARD EDGEC_PASTE(EDGEC_MODEL, _forward)

extern const edgec_model_info MODEL_INFO;
int32_t MODEL_FORWARD(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens,
                      uint32_t pos, float *logits);
typedef int32_t (*forward_fn)(const edgec_context *, const int32_t *, uint32_t, uint32_t, float *);

#ifdef EDGEC_DOTPROD_VARIANT
#define MODEL_FORWARD_DOTPROD EDGEC_PASTE(EDGEC_MODEL, _forward_dotprod)
int32_t MODEL_FORWARD_DOTPROD(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens,
                              uint32_t pos, float *logits);

/* Whether this CPU has FEAT_DotProd (sdot/udot). */
static int cpu_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v != 0;
#else
    return 0;
#endif
}
#endif

#ifdef EDGEC_X86_VNNI_VARIANTS
#define MODEL_FORWARD_AVXVNNI EDGEC_PASTE(EDGEC_MODEL, _forward_avxvnni)
#define MODEL_FORWARD_AVX512VNNI EDGEC_PASTE(EDGEC_MODEL, _forward_avx512vnni)
int32_t MODEL_FORWARD_AVXVNNI(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens,
                              uint32_t pos, float *logits);
int32_t MODEL_FORWARD_AVX512VNNI(const edgec_context *ctx, const int32_t *ids, uint32_t n_tokens,
                                 uint32_t pos, float *logits);

/* 2 for AVX-VNNI, 3 for AVX512-VNNI on xmm (with AVX512F, AVX512VL), else 0; each only when
 * the OS saves the registers it needs (XCR0). */
static uint32_t cpu_x86_vnni(void) {
    unsigned a, b, c, d, lo, hi;
    unsigned long long xcr0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = ((unsigned long long)hi << 32) | lo;
    if ((xcr0 & 0x6) != 0x6) return 0; /* SSE and AVX state */
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4))) return 2;
    if ((xcr0 & 0xe0) == 0xe0 && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 16)) &&
        (b & (1u << 31)) && (c & (1u << 11)))
        return 3;
    return 0;
}
#endif

static const char *const VARIANT_NAMES[] = {"baseline", "dotprod", "avxvnni", "avx512vnni"};

/* The entry point for this CPU; *variant indexes VARIANT_NAMES. */
static forward_fn pick_forward(uint32_t *variant) {
    const char *force = getenv("EDGEC_VARIANT");
    int baseline = force && strcmp(force, "baseline") == 0;
    (void)baseline;
#ifdef EDGEC_DOTPROD_VARIANT
    if (!baseline && cpu_has_dotprod()) {
        *variant = 1;
        return MODEL_FORWARD_DOTPROD;
    }
#endif
#ifdef EDGEC_X86_VNNI_VARIANTS
    *variant = baseline ? 0 : cpu_x86_vnni();
    if (*variant == 2) return MODEL_FORWARD_AVXVNNI;
    if (*variant == 3) return MODEL_FORWARD_AVX512VNNI;
#endif
    *variant = 0;
    return MODEL_FORWARD;
}

static const char *g_tmp_path; /* removed on failure */

static void fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "edgec_driver: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (g_tmp_path) remove(g_tmp_path);
    exit(1);
}

static void *aligned_zalloc(uint64_t size, const char *what) {
    void *p = NULL;
    size_t n;
    if (size > (uint64_t)SIZE_MAX - EDGEC_ALIGN) fail("%s of %llu bytes does not fit in memory", what, (unsigned long long)size);
    n = (size_t)size;
    if (n < EDGEC_ALIGN) n = EDGEC_ALIGN;
    if (posix_memalign(&p, EDGEC_ALIGN, n) != 0 || p == NULL)
        fail("out of memory allocating %llu bytes for the %s", (unsigned long long)size, what);
    memset(p, 0, n);
    return p;
}

static uint32_t rd_u32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t rd_u64(const uint8_t *b) { return (uint64_t)rd_u32(b) | (uint64_t)rd_u32(b + 4) << 32; }

static void hex(const uint8_t *h, char *out) {
    static const char d[] = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        out[2 * i] = d[h[i] >> 4];
        out[2 * i + 1] = d[h[i] & 15];
    }
    out[64] = 0;
}

/* Reads the whole file into 64-byte aligned memory; *size_out = its real size (the number of
 * bytes actually read, so a file shorter or longer than its header says is caught by the
 * header check). */
static uint8_t *read_weights(const char *path, uint64_t *size_out) {
    FILE *f = fopen(path, "rb");
    long hint;
    size_t cap, got;
    uint8_t *buf;
    if (!f) fail("%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (hint = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        fail("%s: cannot measure the file: %s", path, strerror(errno));
    if ((unsigned long)hint >= (unsigned long)SIZE_MAX - EDGEC_ALIGN) fail("%s: file too large", path);
    cap = (size_t)hint + 1; /* one spare byte detects a file that grew */
    buf = (uint8_t *)aligned_zalloc(cap, "weights");
    got = fread(buf, 1, cap, f);
    if (ferror(f)) fail("%s: read error: %s", path, strerror(errno));
    if (got == cap) fail("%s: the file grew while it was read", path);
    fclose(f);
    *size_out = got;
    return buf;
}

/* The same checks, in the same order and with the same wording, as weights.rs. */
static void validate_weights(const uint8_t *b, uint64_t real, const edgec_model_info *info,
                             const char *path) {
    static const uint8_t magic[8] = {'E', 'D', 'G', 'E', 'C', 'W', 'T', 0};
    uint32_t version, header_size;
    uint64_t file_size;
    if (real < EDGEC_WEIGHTS_HEADER_SIZE)
        fail("weights file %s: file is %llu bytes, shorter than the %u-byte header", path,
             (unsigned long long)real, EDGEC_WEIGHTS_HEADER_SIZE);
    if (memcmp(b, magic, 8) != 0) fail("weights file %s: bad magic; not an edgec weights file", path);
    version = rd_u32(b + 8);
    header_size = rd_u32(b + 12);
    file_size = rd_u64(b + 48);
    if (version != EDGEC_ABI_VERSION)
        fail("weights file %s: ABI version %u (this runtime implements %u)", path, version, EDGEC_ABI_VERSION);
    if (header_size != EDGEC_WEIGHTS_HEADER_SIZE)
        fail("weights file %s: header size %u (expected %u)", path, header_size, EDGEC_WEIGHTS_HEADER_SIZE);
    if (file_size != real)
        fail("weights file %s: %s: header says %llu bytes but the file is %llu bytes", path,
             real < file_size ? "truncated" : "padded", (unsigned long long)file_size,
             (unsigned long long)real);
    if (file_size != info->weights_size)
        fail("weights file %s: file is %llu bytes but the model was compiled with a %llu-byte weights file",
             path, (unsigned long long)real, (unsigned long long)info->weights_size);
    if (memcmp(b + 16, info->content_hash, 32) != 0) {
        char a[65], m[65];
        hex(b + 16, a);
        hex(info->content_hash, m);
        fail("weights file %s: content hash %s does not match the model's %s; the weights belong to another build",
             path, a, m);
    }
}

static void serial_parallel_for(void *pool, edgec_kernel_fn kernel, const uint8_t *args,
                                 uint64_t n_tasks) {
    (void)pool;
    if (n_tasks > 0) kernel(args, 0, n_tasks);
}

static const char *status_name(int32_t s) {
    switch (s) {
    case EDGEC_STATUS_OK: return "ok";
    case EDGEC_STATUS_BAD_TOKEN_COUNT: return "bad token count";
    case EDGEC_STATUS_CONTEXT_OVERFLOW: return "context overflow";
    case EDGEC_STATUS_BAD_TOKEN_ID: return "bad token id";
    case EDGEC_STATUS_NULL_ARGUMENT: return "null argument";
    default: return "unknown status";
    }
}

static uint32_t parse_u32(const char *s, const char *what) {
    char *end;
    unsigned long long v;
    errno = 0;
    if (*s < '0' || *s > '9') fail("%s \"%s\" is not a non-negative integer", what, s);
    v = strtoull(s, &end, 10);
    if (errno || *end != 0 || v > UINT32_MAX) fail("%s \"%s\" is not a 32-bit non-negative integer", what, s);
    return (uint32_t)v;
}

/* Parses "1,2,3" into a fresh array. */
static int32_t *parse_ids(const char *s, uint32_t vocab, uint32_t *n_out) {
    size_t n = 1, i = 0;
    const char *p;
    int32_t *ids;
    for (p = s; *p; p++) n += *p == ',';
    ids = (int32_t *)malloc(n * sizeof *ids);
    if (!ids) fail("out of memory");
    p = s;
    while (i < n) {
        char *end;
        long long v;
        errno = 0;
        if ((*p < '0' || *p > '9') && *p != '-') fail("IDS \"%s\": expected an integer at index %lu", s, (unsigned long)i);
        v = strtoll(p, &end, 10);
        if (errno || (*end != ',' && *end != 0)) fail("IDS \"%s\": bad integer at index %lu", s, (unsigned long)i);
        if (v < 0 || v >= (long long)vocab)
            fail("token id %lld at index %lu is out of range (vocab %u)", v, (unsigned long)i, vocab);
        ids[i++] = (int32_t)v;
        p = end + (*end == ',');
    }
    if (n > UINT32_MAX) fail("too many ids");
    *n_out = (uint32_t)n;
    return ids;
}

static void put_u32(FILE *f, uint32_t v, const char *path) {
    uint8_t b[4];
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
    if (fwrite(b, 1, 4, f) != 4) fail("%s: write error: %s", path, strerror(errno));
}

static uint32_t argmax(const float *row, uint32_t n) {
    uint32_t i, best = 0;
    for (i = 0; i < n; i++) {
        if (row[i] != row[i]) return i; /* NaN counts as the largest, like torch.argmax */
        if (row[i] > row[best]) best = i;
    }
    return best;
}

int main(int argc, char **argv) {
    const edgec_model_info *info = &MODEL_INFO;
    const char *wpath, *mode, *out_path;
    uint8_t *weights;
    uint64_t wsize;
    uint32_t n_prompt, max_new, vocab, chunk, pos = 0, i, n_gen = 0;
    int32_t *ids, *gen;
    float *prompt_logits, *step_logits;
    edgec_context ctx;
    forward_fn forward;
    uint32_t variant;
    char *tmp;
    FILE *f;

    if (argc != 6) {
        fprintf(stderr, "usage: %s WEIGHTS_FILE IDS MAX_NEW_TOKENS prefill|stepwise OUT_FILE\n"
                        "  model: %s\n", argv[0], EDGEC_STR(EDGEC_MODEL));
        return 1;
    }
    wpath = argv[1];
    mode = argv[4];
    out_path = argv[5];
    if (info->abi_version != EDGEC_ABI_VERSION)
        fail("model object has ABI version %u, this driver implements version %u", info->abi_version, EDGEC_ABI_VERSION);
    vocab = info->vocab;
    if (vocab == 0 || vocab > (uint32_t)INT32_MAX || info->max_tokens == 0 || info->max_context == 0)
        fail("invalid model info: vocab %u, max_tokens %u, max_context %u", vocab, info->max_tokens, info->max_context);
    if (strcmp(mode, "prefill") == 0) chunk = info->max_tokens;
    else if (strcmp(mode, "stepwise") == 0) chunk = 1;
    else fail("MODE \"%s\" is neither prefill nor stepwise", mode);
    max_new = parse_u32(argv[3], "MAX_NEW_TOKENS");
    ids = parse_ids(argv[2], vocab, &n_prompt);
    /* Every prompt token and every generated token but the last goes through the cache. */
    if ((uint64_t)n_prompt + (max_new ? max_new - 1 : 0) > info->max_context)
        fail("context overflow: position 0 + %llu tokens > max context %u",
             (unsigned long long)n_prompt + (max_new ? max_new - 1 : 0), info->max_context);
    if ((uint64_t)n_prompt * vocab > SIZE_MAX / sizeof(float)) fail("prompt logits do not fit in memory");

    forward = pick_forward(&variant);
    fprintf(stderr, "edgec_driver: variant %s\n", VARIANT_NAMES[variant]);
    weights = read_weights(wpath, &wsize);
    validate_weights(weights, wsize, info, wpath);
    ctx.weights = weights;
    ctx.arena = (uint8_t *)aligned_zalloc(info->arena_size, "arena");
    ctx.state = (uint8_t *)aligned_zalloc(info->state_size, "state");
    ctx.pool = NULL;
    ctx.parallel_for = serial_parallel_for;

    prompt_logits = (float *)aligned_zalloc((uint64_t)n_prompt * vocab * sizeof(float), "prompt logits");
    step_logits = (float *)aligned_zalloc((uint64_t)vocab * sizeof(float), "step logits");
    gen = (int32_t *)malloc(((size_t)max_new + 1) * sizeof *gen);
    if (!gen) fail("out of memory");

    /* Prompt. */
    while (pos < n_prompt) {
        uint32_t n = n_prompt - pos < chunk ? n_prompt - pos : chunk;
        int32_t st;
        if ((uint64_t)pos + n > info->max_context)
            fail("context overflow: position %u + %u tokens > max context %u", pos, n, info->max_context);
        st = forward(&ctx, ids + pos, n, pos, prompt_logits + (size_t)pos * vocab);
        if (st != EDGEC_STATUS_OK)
            fail("model forward returned status %d (%s) for %u tokens at position %u", st, status_name(st), n, pos);
        pos += n;
    }
    /* Greedy decode. */
    {
        const float *row = prompt_logits + (size_t)(n_prompt - 1) * vocab;
        for (i = 0; i < max_new; i++) {
            int32_t tok = (int32_t)argmax(row, vocab), st;
            gen[n_gen++] = tok;
            if (i + 1 == max_new) break;
            if (pos + 1 > info->max_context)
                fail("context overflow: position %u + 1 tokens > max context %u", pos, info->max_context);
            st = forward(&ctx, &tok, 1, pos, step_logits);
            if (st != EDGEC_STATUS_OK)
                fail("model forward returned status %d (%s) for 1 tokens at position %u", st, status_name(st), pos);
            pos += 1;
            row = step_logits;
        }
    }

    /* Output: OUT_FILE.tmp, then rename. */
    tmp = (char *)malloc(strlen(out_path) + 5);
    if (!tmp) fail("out of memory");
    strcpy(tmp, out_path);
    strcat(tmp, ".tmp");
    f = fopen(tmp, "wb");
    if (!f) fail("%s: cannot create: %s", tmp, strerror(errno));
    g_tmp_path = tmp;
    if (fwrite("EDGECOUT", 1, 8, f) != 8) fail("%s: write error: %s", tmp, strerror(errno));
    put_u32(f, n_prompt, tmp);
    put_u32(f, vocab, tmp);
    put_u32(f, n_gen, tmp);
    put_u32(f, variant, tmp);
    {
        size_t k, n = (size_t)n_prompt * vocab;
        for (k = 0; k < n; k++) {
            uint32_t bits;
            memcpy(&bits, &prompt_logits[k], 4);
            put_u32(f, bits, tmp);
        }
        for (k = 0; k < n_gen; k++) put_u32(f, (uint32_t)gen[k], tmp);
    }
    if (fclose(f) != 0) fail("%s: write error: %s", tmp, strerror(errno));
    if (rename(tmp, out_path) != 0) fail("cannot rename %s to %s: %s", tmp, out_path, strerror(errno));
    g_tmp_path = NULL;
    return 0;
}
