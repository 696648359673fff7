/*
 * llama2c_ref.c -- independent reference forward pass for llama2.c checkpoints.
 *
 * Plain C99, libm only. Used by the test suite as a golden reference for the
 * libtorch engine; it favours clarity and numerical tightness over speed.
 *
 * Build:  gcc -O2 -std=c99 -Wall -o llama2c_ref llama2c_ref.c -lm
 *
 * Usage:  llama2c_ref CHECKPOINT --tokens 1,403,407 [--steps N] [--logits]
 *
 *   --tokens LIST  comma-separated prompt token ids (required, at least one).
 *   --steps N      continue greedily (argmax, first maximum wins) until the
 *                  sequence holds N tokens in total (prompt included), or
 *                  seq_len tokens, whichever is smaller. N <= prompt length
 *                  means no generation.
 *   --logits       for every processed position print
 *                  "logits POS: v0 v1 ... v(V-1)" (each value %.9g).
 *
 * Processed positions: every prompt position is always run through the model
 * (so --logits without --steps gives one line per prompt token). When
 * generating to a total of T tokens, positions 0..T-2 are processed; the last
 * generated token is not fed back (its logits would not be used).
 *
 * Output: the last stdout line is "tokens: t0,t1,..." -- the whole sequence,
 * prompt included. All errors go to stderr with exit status 2.
 *
 * Checkpoint formats (little-endian, fp32 weights):
 *   legacy  : 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *             vocab_size, seq_len); vocab_size < 0 means an unshared classifier
 *             is stored at the end. Weights: token_embedding, rms_att, wq, wk,
 *             wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real,
 *             freq_cis_imag (skipped), [wcls].
 *   version 1: uint32 magic 0x616b3432, int32 version = 1, the 7 int32 params,
 *             uint8 shared_classifier, zero padding up to 256 bytes. Weights:
 *             rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv, wo,
 *             w1, w2, w3, [wcls if not shared].
 *
 * Numerics: weights are fp32 as stored; all activations, the KV cache, matmul
 * accumulations, RoPE angles, norms and softmax are computed in double.
 */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_ERR 2
#define RMS_EPS 1e-5
#define ROPE_THETA 10000.0
#define V1_MAGIC 0x616b3432u
#define V1_HEADER_BYTES 256
#define LEGACY_HEADER_BYTES 28
#define MAX_DIM_PARAM (1L << 22) /* sanity bound on dims: keeps sizes far from overflow */

static void die(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "llama2c_ref: error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_ERR);
}

static void *xcalloc(size_t n, size_t sz) {
    void *p;
    if (n == 0) n = 1;
    if (sz != 0 && n > SIZE_MAX / sz) die("allocation size overflow");
    p = calloc(n, sz);
    if (!p) die("out of memory allocating %lu x %lu bytes", (unsigned long)n, (unsigned long)sz);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Model                                                                    */

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
    int head_dim, kv_dim;
} Config;

typedef struct {
    float *token_embedding; /* (vocab, dim) */
    float *rms_att;         /* (L, dim) */
    float *wq;              /* (L, dim, dim) */
    float *wk;              /* (L, kv_dim, dim) */
    float *wv;              /* (L, kv_dim, dim) */
    float *wo;              /* (L, dim, dim) */
    float *rms_ffn;         /* (L, dim) */
    float *w1;              /* (L, hidden, dim) */
    float *w2;              /* (L, dim, hidden) */
    float *w3;              /* (L, hidden, dim) */
    float *rms_final;       /* (dim) */
    float *wcls;            /* (vocab, dim); aliases token_embedding when shared */
} Weights;

typedef struct {
    double *x, *xb, *xb2, *q, *att_out, *hb, *hb2, *att, *logits;
    double *key_cache;   /* (L, n_pos, kv_dim) */
    double *value_cache; /* (L, n_pos, kv_dim) */
    int n_pos;           /* positions the cache can hold */
} State;

/* ------------------------------------------------------------------------ */
/* Checkpoint reading                                                       */

static int host_is_little_endian(void) {
    uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint32_t le_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int32_t le_i32(const unsigned char *p) {
    uint32_t u = le_u32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

/* Checked unsigned 64-bit arithmetic for the expected-size computation. */
static uint64_t mul_u64(uint64_t a, uint64_t b) {
    if (a != 0 && b > UINT64_MAX / a) die("checkpoint size computation overflows");
    return a * b;
}
static uint64_t add_u64(uint64_t a, uint64_t b) {
    if (b > UINT64_MAX - a) die("checkpoint size computation overflows");
    return a + b;
}

static void validate_config(Config *c, const char *path) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->seq_len <= 0)
        die("%s: invalid header (non-positive parameter: dim=%d hidden_dim=%d n_layers=%d "
            "n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d); not a llama2.c checkpoint?",
            path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
            c->vocab_size, c->seq_len);
    if (c->dim > MAX_DIM_PARAM || c->hidden_dim > MAX_DIM_PARAM || c->n_layers > 65536 ||
        c->vocab_size > MAX_DIM_PARAM || c->seq_len > MAX_DIM_PARAM)
        die("%s: implausible header parameters (dim=%d hidden_dim=%d n_layers=%d vocab_size=%d "
            "seq_len=%d); not a llama2.c checkpoint?",
            path, c->dim, c->hidden_dim, c->n_layers, c->vocab_size, c->seq_len);
    if (c->dim % c->n_heads != 0)
        die("%s: dim %d is not divisible by n_heads %d", path, c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        die("%s: n_heads %d is not a multiple of n_kv_heads %d", path, c->n_heads, c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    if (c->head_dim % 2 != 0) die("%s: head_dim %d is odd (RoPE needs pairs)", path, c->head_dim);
    c->kv_dim = c->head_dim * c->n_kv_heads;
}

static void read_floats(FILE *f, const char *path, float *dst, uint64_t n, const char *what) {
    size_t got = fread(dst, sizeof(float), (size_t)n, f);
    if (got != (size_t)n) die("%s: short read of %s (%lu of %lu floats)", path, what,
                              (unsigned long)got, (unsigned long)n);
}

static float *alloc_read(FILE *f, const char *path, uint64_t n, const char *what) {
    float *p = (float *)xcalloc((size_t)n, sizeof(float));
    read_floats(f, path, p, n, what);
    return p;
}

/* Loads a checkpoint (either format). Exits with status 2 on any problem. */
static void load_checkpoint(const char *path, Config *c, Weights *w) {
    FILE *f;
    unsigned char hdr[V1_HEADER_BYTES];
    long file_size;
    size_t got;
    int versioned = 0;
    uint64_t L, dim, hid, kvd, voc, n_floats, expected, hdr_bytes;

    memset(c, 0, sizeof(*c));
    memset(w, 0, sizeof(*w));

    f = fopen(path, "rb");
    if (!f) die("cannot open checkpoint '%s': %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek: %s", path, strerror(errno));
    file_size = ftell(f);
    if (file_size < 0) die("%s: cannot determine file size", path);
    rewind(f);

    if (file_size < LEGACY_HEADER_BYTES)
        die("%s: truncated file (%ld bytes, smaller than a header)", path, file_size);
    got = fread(hdr, 1, (size_t)(file_size < V1_HEADER_BYTES ? file_size : V1_HEADER_BYTES), f);
    if (got < LEGACY_HEADER_BYTES) die("%s: cannot read header", path);

    if (memcmp(hdr, "GGUF", 4) == 0) die("%s: GGUF files are not supported (llama2.c .bin only)", path);

    if (le_u32(hdr) == V1_MAGIC) {
        int32_t version;
        if (got < 8) die("%s: truncated versioned header", path);
        version = le_i32(hdr + 4);
        if (version != 1)
            die("%s: unsupported llama2.c checkpoint version %d (only legacy and version 1 fp32 "
                "are supported)", path, (int)version);
        if (got < V1_HEADER_BYTES)
            die("%s: truncated file (%ld bytes, version-1 header needs %d)", path, file_size,
                V1_HEADER_BYTES);
        versioned = 1;
        c->dim = le_i32(hdr + 8);
        c->hidden_dim = le_i32(hdr + 12);
        c->n_layers = le_i32(hdr + 16);
        c->n_heads = le_i32(hdr + 20);
        c->n_kv_heads = le_i32(hdr + 24);
        c->vocab_size = le_i32(hdr + 28);
        c->seq_len = le_i32(hdr + 32);
        if (hdr[36] > 1) die("%s: invalid shared_classifier flag %u", path, (unsigned)hdr[36]);
        c->shared_classifier = hdr[36];
        if (c->vocab_size <= 0)
            die("%s: version-1 header has non-positive vocab_size %d", path, c->vocab_size);
        hdr_bytes = V1_HEADER_BYTES;
    } else {
        c->dim = le_i32(hdr + 0);
        c->hidden_dim = le_i32(hdr + 4);
        c->n_layers = le_i32(hdr + 8);
        c->n_heads = le_i32(hdr + 12);
        c->n_kv_heads = le_i32(hdr + 16);
        c->vocab_size = le_i32(hdr + 20);
        c->seq_len = le_i32(hdr + 24);
        if (c->vocab_size == INT32_MIN) die("%s: invalid vocab_size in legacy header", path);
        c->shared_classifier = c->vocab_size > 0;
        if (c->vocab_size < 0) c->vocab_size = -c->vocab_size;
        hdr_bytes = LEGACY_HEADER_BYTES;
    }
    validate_config(c, path);

    /* Expected size, checked before reading any weights. */
    L = (uint64_t)c->n_layers;
    dim = (uint64_t)c->dim;
    hid = (uint64_t)c->hidden_dim;
    kvd = (uint64_t)c->kv_dim;
    voc = (uint64_t)c->vocab_size;
    n_floats = mul_u64(voc, dim);                                    /* token embedding */
    n_floats = add_u64(n_floats, mul_u64(L, dim));                   /* rms_att */
    n_floats = add_u64(n_floats, mul_u64(L, mul_u64(dim, dim)));     /* wq */
    n_floats = add_u64(n_floats, mul_u64(2, mul_u64(L, mul_u64(kvd, dim)))); /* wk, wv */
    n_floats = add_u64(n_floats, mul_u64(L, mul_u64(dim, dim)));     /* wo */
    n_floats = add_u64(n_floats, mul_u64(L, dim));                   /* rms_ffn */
    n_floats = add_u64(n_floats, mul_u64(3, mul_u64(L, mul_u64(hid, dim)))); /* w1, w2, w3 */
    n_floats = add_u64(n_floats, dim);                               /* rms_final */
    if (!versioned)                                                  /* freq_cis real + imag */
        n_floats = add_u64(n_floats, mul_u64((uint64_t)c->seq_len, (uint64_t)c->head_dim));
    if (!c->shared_classifier) n_floats = add_u64(n_floats, mul_u64(voc, dim)); /* wcls */
    expected = add_u64(hdr_bytes, mul_u64(n_floats, 4));

    if ((uint64_t)file_size < expected)
        die("%s: truncated file: %ld bytes, expected %llu for dim=%d hidden_dim=%d n_layers=%d "
            "n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d shared_classifier=%d",
            path, file_size, (unsigned long long)expected, c->dim, c->hidden_dim, c->n_layers,
            c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len, c->shared_classifier);
    if ((uint64_t)file_size > expected)
        die("%s: size mismatch: %ld bytes, expected exactly %llu (wrong format or trailing data)",
            path, file_size, (unsigned long long)expected);

    if (!host_is_little_endian()) die("big-endian hosts are not supported");

    if (fseek(f, (long)hdr_bytes, SEEK_SET) != 0) die("%s: cannot seek: %s", path, strerror(errno));
    if (versioned) {
        w->rms_att = alloc_read(f, path, L * dim, "rms_att");
        w->rms_ffn = alloc_read(f, path, L * dim, "rms_ffn");
        w->rms_final = alloc_read(f, path, dim, "rms_final");
        w->token_embedding = alloc_read(f, path, voc * dim, "token_embedding");
        w->wq = alloc_read(f, path, L * dim * dim, "wq");
        w->wk = alloc_read(f, path, L * kvd * dim, "wk");
        w->wv = alloc_read(f, path, L * kvd * dim, "wv");
        w->wo = alloc_read(f, path, L * dim * dim, "wo");
        w->w1 = alloc_read(f, path, L * hid * dim, "w1");
        w->w2 = alloc_read(f, path, L * dim * hid, "w2");
        w->w3 = alloc_read(f, path, L * hid * dim, "w3");
    } else {
        uint64_t freq_bytes = mul_u64((uint64_t)c->seq_len, (uint64_t)c->head_dim) * 4;
        w->token_embedding = alloc_read(f, path, voc * dim, "token_embedding");
        w->rms_att = alloc_read(f, path, L * dim, "rms_att");
        w->wq = alloc_read(f, path, L * dim * dim, "wq");
        w->wk = alloc_read(f, path, L * kvd * dim, "wk");
        w->wv = alloc_read(f, path, L * kvd * dim, "wv");
        w->wo = alloc_read(f, path, L * dim * dim, "wo");
        w->rms_ffn = alloc_read(f, path, L * dim, "rms_ffn");
        w->w1 = alloc_read(f, path, L * hid * dim, "w1");
        w->w2 = alloc_read(f, path, L * dim * hid, "w2");
        w->w3 = alloc_read(f, path, L * hid * dim, "w3");
        w->rms_final = alloc_read(f, path, dim, "rms_final");
        /* skip freq_cis_real and freq_cis_imag (seq_len * head_dim/2 floats each) */
        if (fseek(f, (long)freq_bytes, SEEK_CUR) != 0)
            die("%s: cannot skip freq_cis tables: %s", path, strerror(errno));
    }
    if (c->shared_classifier)
        w->wcls = w->token_embedding;
    else
        w->wcls = alloc_read(f, path, voc * dim, "wcls");
    fclose(f);
}

/* ------------------------------------------------------------------------ */
/* Forward pass                                                             */

static void init_state(State *s, const Config *c, int n_pos) {
    size_t cache = (size_t)c->n_layers * (size_t)n_pos * (size_t)c->kv_dim;
    s->n_pos = n_pos;
    s->x = (double *)xcalloc((size_t)c->dim, sizeof(double));
    s->xb = (double *)xcalloc((size_t)c->dim, sizeof(double));
    s->xb2 = (double *)xcalloc((size_t)c->dim, sizeof(double));
    s->q = (double *)xcalloc((size_t)c->dim, sizeof(double));
    s->att_out = (double *)xcalloc((size_t)c->dim, sizeof(double));
    s->hb = (double *)xcalloc((size_t)c->hidden_dim, sizeof(double));
    s->hb2 = (double *)xcalloc((size_t)c->hidden_dim, sizeof(double));
    s->att = (double *)xcalloc((size_t)n_pos, sizeof(double));
    s->logits = (double *)xcalloc((size_t)c->vocab_size, sizeof(double));
    s->key_cache = (double *)xcalloc(cache, sizeof(double));
    s->value_cache = (double *)xcalloc(cache, sizeof(double));
}

/* out[i] = sum_j W[i, j] * x[j]; W is (rows, cols) row-major fp32. */
static void matmul(double *out, const float *W, const double *x, int rows, int cols) {
    int i, j;
    for (i = 0; i < rows; i++) {
        const float *row = W + (size_t)i * (size_t)cols;
        double acc = 0.0;
        for (j = 0; j < cols; j++) acc += (double)row[j] * x[j];
        out[i] = acc;
    }
}

/* out = x * w / sqrt(mean(x^2) + eps) */
static void rmsnorm(double *out, const double *x, const float *w, int n) {
    double ss = 0.0, inv;
    int i;
    for (i = 0; i < n; i++) ss += x[i] * x[i];
    inv = 1.0 / sqrt(ss / n + RMS_EPS);
    for (i = 0; i < n; i++) out[i] = (double)w[i] * (x[i] * inv);
}

static void softmax(double *x, int n) {
    double mx = x[0], sum = 0.0;
    int i;
    for (i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    for (i = 0; i < n; i++) {
        x[i] = exp(x[i] - mx);
        sum += x[i];
    }
    for (i = 0; i < n; i++) x[i] /= sum;
}

/* Interleaved RoPE: rotate pairs (v[i], v[i+1]) for i even, i < n. */
static void rope(double *v, int n, int head_dim, int pos) {
    int i;
    for (i = 0; i < n; i += 2) {
        double freq = 1.0 / pow(ROPE_THETA, (double)(i % head_dim) / (double)head_dim);
        double angle = (double)pos * freq;
        double cr = cos(angle), ci = sin(angle);
        double a = v[i], b = v[i + 1];
        v[i] = a * cr - b * ci;
        v[i + 1] = a * ci + b * cr;
    }
}

/* Runs one token at position pos; fills s->logits. */
static void forward(const Config *c, const Weights *w, State *s, int token, int pos) {
    const int dim = c->dim, kv_dim = c->kv_dim, hd = c->head_dim, hid = c->hidden_dim;
    const int group = c->n_heads / c->n_kv_heads;
    const double scale = 1.0 / sqrt((double)hd);
    const float *emb = w->token_embedding + (size_t)token * (size_t)dim;
    int l, i, h, t;

    for (i = 0; i < dim; i++) s->x[i] = (double)emb[i];

    for (l = 0; l < c->n_layers; l++) {
        const size_t ld = (size_t)l * (size_t)dim;
        double *kc = s->key_cache + ((size_t)l * (size_t)s->n_pos) * (size_t)kv_dim;
        double *vc = s->value_cache + ((size_t)l * (size_t)s->n_pos) * (size_t)kv_dim;
        double *k = kc + (size_t)pos * (size_t)kv_dim;
        double *v = vc + (size_t)pos * (size_t)kv_dim;

        /* attention */
        rmsnorm(s->xb, s->x, w->rms_att + ld, dim);
        matmul(s->q, w->wq + ld * (size_t)dim, s->xb, dim, dim);
        matmul(k, w->wk + (size_t)l * (size_t)kv_dim * (size_t)dim, s->xb, kv_dim, dim);
        matmul(v, w->wv + (size_t)l * (size_t)kv_dim * (size_t)dim, s->xb, kv_dim, dim);
        rope(s->q, dim, hd, pos);
        rope(k, kv_dim, hd, pos);

        for (h = 0; h < c->n_heads; h++) {
            const double *qh = s->q + (size_t)h * (size_t)hd;
            const size_t kv_off = (size_t)(h / group) * (size_t)hd;
            double *oh = s->att_out + (size_t)h * (size_t)hd;
            for (t = 0; t <= pos; t++) {
                const double *kt = kc + (size_t)t * (size_t)kv_dim + kv_off;
                double dot = 0.0;
                for (i = 0; i < hd; i++) dot += qh[i] * kt[i];
                s->att[t] = dot * scale;
            }
            softmax(s->att, pos + 1);
            for (i = 0; i < hd; i++) oh[i] = 0.0;
            for (t = 0; t <= pos; t++) {
                const double *vt = vc + (size_t)t * (size_t)kv_dim + kv_off;
                const double a = s->att[t];
                for (i = 0; i < hd; i++) oh[i] += a * vt[i];
            }
        }
        matmul(s->xb2, w->wo + ld * (size_t)dim, s->att_out, dim, dim);
        for (i = 0; i < dim; i++) s->x[i] += s->xb2[i];

        /* feed-forward (SwiGLU) */
        rmsnorm(s->xb, s->x, w->rms_ffn + ld, dim);
        matmul(s->hb, w->w1 + (size_t)l * (size_t)hid * (size_t)dim, s->xb, hid, dim);
        matmul(s->hb2, w->w3 + (size_t)l * (size_t)hid * (size_t)dim, s->xb, hid, dim);
        for (i = 0; i < hid; i++) {
            const double g = s->hb[i];
            s->hb[i] = (g / (1.0 + exp(-g))) * s->hb2[i];
        }
        matmul(s->xb2, w->w2 + (size_t)l * (size_t)dim * (size_t)hid, s->hb, dim, hid);
        for (i = 0; i < dim; i++) s->x[i] += s->xb2[i];
    }

    rmsnorm(s->xb, s->x, w->rms_final, dim);
    matmul(s->logits, w->wcls, s->xb, c->vocab_size, dim);
}

static void free_all(Weights *w, State *s) {
    if (w->wcls != w->token_embedding) free(w->wcls);
    free(w->token_embedding); free(w->rms_att); free(w->wq); free(w->wk); free(w->wv);
    free(w->wo); free(w->rms_ffn); free(w->w1); free(w->w2); free(w->w3); free(w->rms_final);
    free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->att_out); free(s->hb);
    free(s->hb2); free(s->att); free(s->logits); free(s->key_cache); free(s->value_cache);
}

static int argmax(const double *v, int n) {
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (v[i] > v[best]) best = i; /* strict: first maximum wins */
    return best;
}

/* ------------------------------------------------------------------------ */
/* CLI                                                                      */

static void usage(FILE *out) {
    fprintf(out,
            "usage: llama2c_ref CHECKPOINT --tokens ID[,ID...] [--steps N] [--logits]\n"
            "  --tokens  comma-separated prompt token ids (required)\n"
            "  --steps   greedy-generate until N total tokens (prompt included, capped at seq_len)\n"
            "  --logits  print 'logits POS: v0 ... v(V-1)' for every processed position\n");
}

static void bad_args(const char *msg, const char *arg) {
    fprintf(stderr, "llama2c_ref: error: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    usage(stderr);
    exit(EXIT_ERR);
}

/* Parses a non-negative decimal int; returns 0 on failure. */
static int parse_nonneg_int(const char *s, size_t len, int *out) {
    long v = 0;
    size_t i;
    if (len == 0 || len > 10) return 0;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
        if (v > INT_MAX) return 0;
    }
    *out = (int)v;
    return 1;
}

static int *parse_tokens(const char *s, int *n_out) {
    int n = 1, i = 0;
    const char *p;
    int *ids;
    for (p = s; *p; p++)
        if (*p == ',') n++;
    ids = (int *)xcalloc((size_t)n, sizeof(int));
    p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!parse_nonneg_int(p, len, &ids[i])) bad_args("invalid --tokens list", s);
        i++;
        if (!end) break;
        p = end + 1;
    }
    *n_out = n;
    return ids;
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *tokens_arg = NULL;
    int steps = -1, print_logits = 0;
    int i, n_prompt = 0, total, n_process, n_pos;
    int *prompt, *seq;
    Config c;
    Weights w;
    State s;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tokens") == 0) {
            if (++i >= argc) bad_args("--tokens needs a value", NULL);
            tokens_arg = argv[i];
        } else if (strcmp(a, "--steps") == 0) {
            if (++i >= argc) bad_args("--steps needs a value", NULL);
            if (!parse_nonneg_int(argv[i], strlen(argv[i]), &steps) || steps < 1)
                bad_args("--steps must be a positive integer", argv[i]);
        } else if (strcmp(a, "--logits") == 0) {
            print_logits = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            bad_args("unknown option", a);
        } else {
            if (ckpt) bad_args("more than one checkpoint given", a);
            ckpt = a;
        }
    }
    if (!ckpt) bad_args("missing CHECKPOINT", NULL);
    if (!tokens_arg) bad_args("missing --tokens", NULL);
    prompt = parse_tokens(tokens_arg, &n_prompt);

    load_checkpoint(ckpt, &c, &w);

    for (i = 0; i < n_prompt; i++)
        if (prompt[i] >= c.vocab_size)
            die("token id %d at prompt index %d is out of range (vocab_size %d)", prompt[i], i,
                c.vocab_size);
    if (n_prompt > c.seq_len)
        die("prompt has %d tokens, more than seq_len %d", n_prompt, c.seq_len);

    total = steps > n_prompt ? steps : n_prompt;
    if (total > c.seq_len) total = c.seq_len;
    /* all prompt positions, plus every generated token except the last */
    n_process = total > n_prompt ? total - 1 : n_prompt;
    n_pos = n_process;

    seq = (int *)xcalloc((size_t)total, sizeof(int));
    for (i = 0; i < n_prompt; i++) seq[i] = prompt[i];

    init_state(&s, &c, n_pos);
    for (i = 0; i < n_process; i++) {
        forward(&c, &w, &s, seq[i], i);
        if (print_logits) {
            int v;
            printf("logits %d:", i);
            for (v = 0; v < c.vocab_size; v++) printf(" %.9g", s.logits[v]);
            putchar('\n');
        }
        if (i + 1 >= n_prompt && i + 1 < total) seq[i + 1] = argmax(s.logits, c.vocab_size);
    }

    printf("tokens: ");
    for (i = 0; i < total; i++) printf(i ? ",%d" : "%d", seq[i]);
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout)) die("error writing to stdout");
    free_all(&w, &s);
    free(seq);
    free(prompt);
    return 0;
}
