/*
 * Neural retrieval through the C API: the MiniLM embedder (unit vectors, batch = single, a
 * paraphrase closer than an unrelated text), the test cross-encoder (scores in input order), the
 * dense index (f32 and int8: search, filter, save/open, delete), the rerank of dense hits (ties
 * in document id order, as in Rust and Python), a pool of two sessions shared by four threads
 * (each gets its own embedding, equal to the sequential one), and the error paths (missing model directory, NULL arguments, small buffers, bad UTF-8).
 * Models come from `make models` ($KEEL_TEST_MODELS, else .cache/models); missing ones fail.
 * Runs under AddressSanitizer (tests/c/run.sh), so every handle must be freed.
 * Under valgrind (tests/c/run_valgrind.sh sets KEEL_TEST_REDUCED=1) loading a model costs tens of
 * seconds, so the reduced run opens the embedder and the cross-encoder once and every test reuses
 * them (freed at the end); the calls made on them are the same as in the full run.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)
#define NONE NULL, 0

static char models[4096];
static bool reduced;                   /* KEEL_TEST_REDUCED=1: open each model once */
static keel_embedder *kept_embedder;   /* the shared models of a reduced run */
static keel_cross_encoder *kept_cross_encoder;

static const char *model_dir(const char *name) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", models, name);
    return path;
}

static keel_embedder *open_embedder(void) {
    if (reduced && kept_embedder != NULL) return kept_embedder;
    keel_embedder *e = NULL;
    CHECK_RC(keel_embedder_new(S(model_dir("minilm")), 2, 8, 0, &e), KEEL_OK);
    if (reduced) kept_embedder = e;
    return e;
}

static void close_embedder(keel_embedder *e) {
    if (!reduced) keel_embedder_free(e);
}

static keel_cross_encoder *open_cross_encoder(size_t batch) {
    if (reduced && kept_cross_encoder != NULL) return kept_cross_encoder;
    keel_cross_encoder *ce = NULL;
    CHECK_RC(keel_cross_encoder_new(S(model_dir("test-cross-encoder")), 2, batch, 0, &ce), KEEL_OK);
    if (reduced) kept_cross_encoder = ce;
    return ce;
}

static void close_cross_encoder(keel_cross_encoder *ce) {
    if (!reduced) keel_cross_encoder_free(ce);
}

static float dot(const float *a, const float *b, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void test_embedder(void) {
    keel_embedder *e = open_embedder();
    size_t dim = keel_embedder_dim(e);
    CHECK(dim == 384);
    const char *texts[3] = {"the lift of a wing", "aerofoil upward force",
                            "buckling of cylindrical shells"};
    const char *ptrs[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++) {
        ptrs[i] = texts[i];
        lens[i] = strlen(texts[i]);
    }
    float *out = calloc(3 * dim, sizeof(float));
    CHECK(out != NULL);
    CHECK_RC(keel_embedder_embed(e, ptrs, lens, 3, out, 3 * dim), KEEL_OK);
    for (int i = 0; i < 3; i++) CHECK(fabsf(dot(out + i * dim, out + i * dim, dim) - 1.0f) < 1e-4f);
    CHECK(dot(out, out + dim, dim) > dot(out, out + 2 * dim, dim));
    float one[384];
    CHECK_RC(keel_embedder_embed(e, ptrs, lens, 1, one, 384), KEEL_OK);
    for (size_t j = 0; j < dim; j++) CHECK(fabsf(one[j] - out[j]) < 1e-5f);

    out[0] = 42.0f;
    CHECK_RC(keel_embedder_embed(e, ptrs, lens, 3, out, 3 * dim - 1), KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK(out[0] == 42.0f);
    const char *bad[1] = {"\xff\xfe"};
    size_t bad_len[1] = {2};
    CHECK_RC(keel_embedder_embed(e, bad, bad_len, 1, out, 3 * dim), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_embedder_embed(NULL, ptrs, lens, 1, out, 3 * dim), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_embedder_embed(e, NULL, NULL, 0, NULL, 0), KEEL_OK);
    CHECK(keel_embedder_dim(NULL) == 0);
    free(out);
    close_embedder(e);
    keel_embedder_free(NULL);
}

static void test_cross_encoder(void) {
    keel_cross_encoder *ce = open_cross_encoder(4);
    const char *passages[2] = {"wing lift at incidence", "heat transfer"};
    const char *ptrs[2] = {passages[0], passages[1]};
    size_t lens[2] = {strlen(passages[0]), strlen(passages[1])};
    float both[2], first[1], second[1];
    CHECK_RC(keel_cross_encoder_score(ce, S("lift"), ptrs, lens, 2, both, 2), KEEL_OK);
    CHECK_RC(keel_cross_encoder_score(ce, S("lift"), ptrs, lens, 1, first, 1), KEEL_OK);
    CHECK_RC(keel_cross_encoder_score(ce, S("lift"), ptrs + 1, lens + 1, 1, second, 1), KEEL_OK);
    CHECK(fabsf(both[0] - first[0]) < 1e-4f && fabsf(both[1] - second[0]) < 1e-4f);
    CHECK_RC(keel_cross_encoder_score(ce, S("lift"), ptrs, lens, 2, both, 1),
             KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(keel_cross_encoder_score(ce, NULL, 3, ptrs, lens, 2, both, 2), KEEL_ERR_NULL_ARG);
    close_cross_encoder(ce);
    keel_cross_encoder_free(NULL);
}

static int hit_is(const keel_hits *hits, size_t i, const char *id) {
    const char *doc = NULL;
    size_t len = 0;
    uint32_t chunk = 0;
    double score = 0;
    keel_span span;
    if (keel_hits_get(hits, i, &doc, &len, &chunk, &score, &span) != KEEL_OK) return 0;
    return len == strlen(id) && memcmp(doc, id, len) == 0;
}

static double hit_score(const keel_hits *hits, size_t i) {
    const char *doc = NULL;
    size_t len = 0;
    uint32_t chunk = 0;
    double score = -1;
    keel_span span;
    if (keel_hits_get(hits, i, &doc, &len, &chunk, &score, &span) != KEEL_OK) return -1;
    return score;
}

static void test_dense_index(void) {
    keel_embedder *e = open_embedder();
    for (int int8 = 0; int8 <= 1; int8++) {
        keel_dense *idx = NULL;
        CHECK_RC(keel_dense_new(e, int8, &idx), KEEL_OK);
        CHECK_RC(keel_dense_add(idx, S("lift"), S("Wings"), S("the lift of a wing"), S("{\"y\": 1}")),
                 KEEL_OK);
        CHECK_RC(keel_dense_add(idx, S("heat"), S("Heat"), S("heat transfer in a slab"), NULL, 0),
                 KEEL_OK);
        CHECK_RC(keel_dense_add(idx, S("bad"), S(""), S("x"), S("[1]")),
                 KEEL_ERR_RAG_INVALID_METADATA);
        uint64_t n = 0;
        CHECK_RC(keel_dense_len(idx, &n), KEEL_OK);
        CHECK(n == 2);
        keel_hits *hits = NULL;
        CHECK_RC(keel_dense_search(idx, S("aerofoil upward force"), 2, NULL, 0, &hits), KEEL_OK);
        CHECK(keel_hits_count(hits) == 2);
        CHECK(hit_is(hits, 0, "lift"));
        keel_hits_free(hits);
        CHECK_RC(keel_dense_search(idx, S("force"), 2, S("{\"y\": 1}"), &hits), KEEL_OK);
        CHECK(keel_hits_count(hits) == 1 && hit_is(hits, 0, "lift"));
        keel_hits_free(hits);

        char path[] = "/tmp/keel-dense-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        CHECK_RC(keel_dense_save(idx, S(path)), KEEL_OK);
        keel_dense *back = NULL;
        CHECK_RC(keel_dense_open(S(path), e, &back), KEEL_OK);
        bool deleted = false;
        CHECK_RC(keel_dense_delete(back, S("lift"), &deleted), KEEL_OK);
        CHECK(deleted);
        CHECK_RC(keel_dense_delete(back, S("lift"), &deleted), KEEL_OK);
        CHECK(!deleted);
        CHECK_RC(keel_dense_search(back, S("aerofoil"), 5, NULL, 0, &hits), KEEL_OK);
        CHECK(keel_hits_count(hits) == 1 && hit_is(hits, 0, "heat"));
        keel_hits_free(hits);
        keel_dense_free(back);

        /* The last byte of the vector block, damaged, fails the checksum and names the file. */
        FILE *f = fopen(path, "r+b");
        CHECK(f != NULL);
        CHECK(fseek(f, -5, SEEK_END) == 0);
        int byte = fgetc(f);
        CHECK(byte != EOF);
        CHECK(fseek(f, -5, SEEK_END) == 0);
        CHECK(fputc(byte ^ 0x80, f) != EOF);
        fclose(f);
        back = NULL;
        CHECK_RC(keel_dense_open(S(path), e, &back), KEEL_ERR_RAG_CORRUPT_INDEX);
        CHECK(back == NULL);
        CHECK(strstr(keel_last_error_message(), path) != NULL);
        CHECK(strstr(keel_last_error_message(), "checksum mismatch") != NULL);
        unlink(path);
        CHECK_RC(keel_dense_open(S("/nonexistent/dense.idx"), e, &back), KEEL_ERR_RAG_IO);
        CHECK(strstr(keel_last_error_message(), "/nonexistent/dense.idx") != NULL);
        CHECK_RC(keel_dense_search(NULL, S("x"), 1, NULL, 0, &hits), KEEL_ERR_NULL_ARG);
        keel_dense_free(idx);
    }
    keel_dense_free(NULL);
    close_embedder(e);
}

/* Twins with the same title and text tie in dense search (the earlier-added first) and in the
 * cross-encoder, where the tie breaks by document id: the same order as tests/neural.rs and
 * tests/python/test_neural.py. */
static void test_tied_rerank_scores_in_document_id_order(void) {
    keel_embedder *e = open_embedder();
    keel_cross_encoder *ce = open_cross_encoder(8);
    keel_dense *idx = NULL;
    CHECK_RC(keel_dense_new(e, false, &idx), KEEL_OK);
    const char *twin = "the lift of a wing grows with its angle of attack";
    CHECK_RC(keel_dense_add(idx, S("twin-b"), S("Lift"), S(twin), NONE), KEEL_OK);
    CHECK_RC(keel_dense_add(idx, S("twin-a"), S("Lift"), S(twin), NONE), KEEL_OK);
    CHECK_RC(keel_dense_add(idx, S("shells"), S("Lift"),
                            S("buckling of thin cylindrical shells under axial compression"), NONE),
             KEEL_OK);
    keel_hits *hits = NULL;
    CHECK_RC(keel_dense_search(idx, S("wing lift"), 3, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 3);
    CHECK(hit_is(hits, 0, "twin-b") && hit_is(hits, 1, "twin-a") && hit_is(hits, 2, "shells"));
    keel_hits *reranked = NULL;
    CHECK_RC(keel_cross_encoder_rerank(ce, S("wing lift"), hits, SIZE_MAX, &reranked), KEEL_OK);
    CHECK(keel_hits_count(reranked) == 3);
    CHECK(hit_is(reranked, 0, "twin-a") && hit_is(reranked, 1, "twin-b") &&
          hit_is(reranked, 2, "shells"));
    CHECK(hit_score(reranked, 0) == hit_score(reranked, 1));
    /* The input is unchanged; top = 1 reranks only the head. */
    CHECK(hit_is(hits, 0, "twin-b"));
    keel_hits *head = NULL;
    CHECK_RC(keel_cross_encoder_rerank(ce, S("wing lift"), hits, 1, &head), KEEL_OK);
    CHECK(hit_is(head, 0, "twin-b") && hit_is(head, 1, "twin-a"));
    keel_hits_free(head);
    keel_hits *none = (keel_hits *)0x1;
    CHECK_RC(keel_cross_encoder_rerank(ce, S("wing lift"), NULL, 3, &none), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_cross_encoder_rerank(ce, "\xff", 1, hits, 3, &none), KEEL_ERR_INVALID_UTF8);
    CHECK(none == (keel_hits *)0x1);
    keel_hits_free(reranked);
    keel_hits_free(hits);
    keel_dense_free(idx);
    close_cross_encoder(ce);
    close_embedder(e);
}

static void test_bad_directories(void) {
    keel_embedder *e = (keel_embedder *)0x1;
    CHECK_RC(keel_embedder_new(S("/nonexistent/model"), 0, 8, 0, &e), KEEL_ERR_RAG_MODEL);
    CHECK(e == (keel_embedder *)0x1);
    CHECK(strstr(keel_last_error_message(), "does not exist") != NULL);
    CHECK_RC(keel_embedder_new(S(model_dir("minilm")), 0, 0, 0, &e), KEEL_ERR_RAG_INVALID_CONFIG);
    keel_cross_encoder *ce = NULL;
    CHECK_RC(keel_cross_encoder_new(S(models), 0, 8, 0, &ce), KEEL_ERR_RAG_MODEL);
    CHECK(strstr(keel_last_error_message(), "model.onnx") != NULL);
    CHECK_RC(keel_embedder_new(NULL, 3, 0, 8, 0, &e), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_embedder_new(S(model_dir("minilm")), 0, 8, 0, NULL), KEEL_ERR_NULL_ARG);
}

/* One caller of test_pooled: embeds its own text once the barrier releases every caller. */
struct pooled_call {
    pthread_t thread;
    pthread_barrier_t *start;
    keel_embedder *e;
    const char *text;
    float out[384];
    keel_result rc;
};

static void *pooled_caller(void *arg) {
    struct pooled_call *c = arg;
    pthread_barrier_wait(c->start);
    const char *ptrs[1] = {c->text};
    size_t lens[1] = {strlen(c->text)};
    c->rc = keel_embedder_embed(c->e, ptrs, lens, 1, c->out, 384);
    return NULL;
}

static void test_pooled(void) {
    keel_embedder *e = NULL;
    keel_cross_encoder *ce = NULL;
    /* Checked before the directory is read: cheap even under valgrind. */
    CHECK_RC(keel_embedder_new_pooled(S(model_dir("minilm")), 1, 65, 8, 0, &e),
             KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "sessions = 65") != NULL);
    CHECK_RC(keel_cross_encoder_new_pooled(S(model_dir("test-cross-encoder")), 1, 65, 4, 0, &ce),
             KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "sessions = 65") != NULL);
    CHECK(keel_embedder_sessions(NULL) == 0 && keel_cross_encoder_sessions(NULL) == 0);
    if (reduced) return; /* two more model loads would cost minutes under valgrind */
    CHECK_RC(keel_cross_encoder_new_pooled(S(model_dir("test-cross-encoder")), 1, 2, 4, 0, &ce),
             KEEL_OK);
    CHECK(keel_cross_encoder_sessions(ce) == 2);
    keel_cross_encoder_free(ce);
    CHECK_RC(keel_embedder_new_pooled(S(model_dir("minilm")), 1, 2, 8, 0, &e), KEEL_OK);
    CHECK(keel_embedder_sessions(e) == 2);
    static const char *texts[4] = {"the lift of a wing", "heat transfer in a slab",
                                   "buckling of thin shells", "a password reset"};
    float sequential[4][384];
    for (int i = 0; i < 4; i++) {
        size_t len = strlen(texts[i]);
        CHECK_RC(keel_embedder_embed(e, &texts[i], &len, 1, sequential[i], 384), KEEL_OK);
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    struct pooled_call calls[4];
    for (int i = 0; i < 4; i++) {
        calls[i] = (struct pooled_call){.start = &start, .e = e, .text = texts[i]};
        pthread_create(&calls[i].thread, NULL, pooled_caller, &calls[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(calls[i].thread, NULL);
        CHECK_RC(calls[i].rc, KEEL_OK);
        float diff = 0.0f;
        for (size_t j = 0; j < 384; j++) diff = fmaxf(diff, fabsf(calls[i].out[j] - sequential[i][j]));
        CHECK(diff < 1e-5f);
    }
    pthread_barrier_destroy(&start);
    keel_embedder_free(e);
}

int main(void) {
    const char *reduce = getenv("KEEL_TEST_REDUCED");
    reduced = reduce != NULL && strcmp(reduce, "1") == 0;
    const char *env = getenv("KEEL_TEST_MODELS");
    if (env && *env) {
        snprintf(models, sizeof models, "%s", env);
    } else {
        snprintf(models, sizeof models, "%s", ".cache/models");
    }
    char probe[4300];
    snprintf(probe, sizeof probe, "%s/minilm/model.onnx", models);
    FILE *f = fopen(probe, "rb");
    if (!f) {
        fprintf(stderr, "test models missing in %s: run `make models`\n", models);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    fclose(f);
    /* ONNX Runtime is named explicitly (tests/c/run.sh sets ORT_DYLIB_PATH to the venv's wheel):
     * the first path named is the one in effect, a second is refused. */
    const char *ort = getenv("ORT_DYLIB_PATH");
    CHECK(ort != NULL && *ort);
    if (ort && *ort) {
        CHECK_RC(keel_onnxruntime_set_path(S(ort)), KEEL_OK);
        CHECK_RC(keel_onnxruntime_set_path(S(ort)), KEEL_OK);
        CHECK_RC(keel_onnxruntime_set_path(S("/elsewhere/libonnxruntime.so")), KEEL_ERR_RAG_RUNTIME);
        CHECK(strstr(keel_last_error_message(), "/elsewhere/libonnxruntime.so") != NULL);
    }
    CHECK_RC(keel_onnxruntime_set_path(NULL, 0), KEEL_ERR_NULL_ARG);
    test_bad_directories();
    test_embedder();
    test_pooled();
    test_cross_encoder();
    test_dense_index();
    test_tied_rerank_scores_in_document_id_order();
    keel_cross_encoder_free(kept_cross_encoder);
    keel_embedder_free(kept_embedder);
    CHECK_DONE();
}
