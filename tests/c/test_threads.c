/*
 * The C ABI from several threads at once: THREADS pthreads hammer shared handles (one keel_cache,
 * one in-process and one host-shared keel_ratelimiter, one keel_memory on a temporary file,
 * keel_apikeys verifying one created key, one keel_bm25 searched while documents are added),
 * then the main thread checks exact totals: a limiter with limit LIMIT hit THREADS x ATTEMPTS
 * times allowed exactly LIMIT, every message appended is in the history, every document added is
 * indexed, every cached value reads back.
 *
 * keel_last_error_message is per thread: in each round every thread fails a call naming its own
 * path, waits at a barrier until all have, then half of them succeed at a call (which clears only
 * their own message) and, after a second barrier, the other half check their message still names
 * their own path.
 *
 * Worker threads never call CHECK (check.h counts on the main thread): they record their first
 * failure in their `struct worker`, and the main thread checks it after joining.
 * Runs under AddressSanitizer (tests/c/run.sh) and valgrind memcheck (tests/c/run_valgrind.sh),
 * so every handle and result must be freed.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)

#define THREADS 8
#define ATTEMPTS 40          /* rate limiter checks per thread and limiter */
#define LIMIT 100            /* < THREADS * ATTEMPTS, so some are denied */
#define CACHE_KEYS 32        /* cache entries each thread writes and reads back */
#define MESSAGES 4           /* messages each thread appends to its own and to the shared session */
#define DOCS 6               /* documents each thread adds to the shared index */
#define ROUNDS 3             /* per-thread error message rounds */
#define BASE_DOCS 3

/* A window far longer than the test: GCRA refills one unit per window / LIMIT (~3.5 days). */
#define WINDOW_MS (350ULL * 24 * 3600 * 1000)

static char dir[] = "/tmp/keel-c-threads-XXXXXX";

static keel_cache *cache;
static keel_ratelimiter *local_limiter;
static keel_ratelimiter *shared_limiter;
static keel_memory *memory;
static keel_apikeys *keys;
static keel_bm25 *bm25;
static char api_key[KEEL_API_KEY_BUFFER_SIZE];
static size_t api_key_len;
static int64_t api_key_id;
static pthread_barrier_t barrier;

struct worker {
    pthread_t thread;
    int index;
    uint64_t allowed_local;
    uint64_t allowed_shared;
    uint64_t denied_local;
    uint64_t denied_shared;
    int verified;
    int searched;
    int message_checks;
    char failure[512]; /* empty when every step in the thread went as expected */
};

static void fail(struct worker *w, const char *fmt, ...) {
    if (w->failure[0] != '\0') return; /* keep the first */
    va_list args;
    va_start(args, fmt);
    vsnprintf(w->failure, sizeof w->failure, fmt, args);
    va_end(args);
}

#define EXPECT_RC(w, expr, expected)                                                     \
    do {                                                                                 \
        keel_result rc_ = (expr);                                                        \
        if (rc_ != (expected))                                                           \
            fail((w), "line %d: %s returned %s, expected %s (message: %s)", __LINE__, #expr, \
                 keel_result_name(rc_), keel_result_name(expected), keel_last_error_message()); \
    } while (0)

static void wait_all(void) {
    int rc = pthread_barrier_wait(&barrier);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD) abort();
}

static bool str_equal(const char *s, size_t len, const char *expected) {
    return len == strlen(expected) && memcmp(s, expected, len) == 0;
}

static keel_session_ref ref(const char *session) {
    keel_session_ref r = {"acme", 4, "alice", 5, session, strlen(session)};
    return r;
}

/* Each thread fails with a message naming its own path; others' calls must not change it. */
static void error_message_round(struct worker *w, int round) {
    char path[128], needle[64];
    snprintf(needle, sizeof needle, "keel-no-such-dir-t%d-r%d", w->index, round);
    snprintf(path, sizeof path, "%s/%s/index.bm25", dir, needle);
    keel_bm25 *never = NULL;
    EXPECT_RC(w, keel_bm25_open(S(path), &never), KEEL_ERR_RAG_IO);
    if (never != NULL) fail(w, "keel_bm25_open wrote *out_index on failure");
    wait_all(); /* every thread has failed with its own path */
    if (strstr(keel_last_error_message(), needle) == NULL)
        fail(w, "round %d: message \"%s\" does not name this thread's path %s", round,
             keel_last_error_message(), needle);
    w->message_checks++;
    if (w->index % 2 == 0) {
        /* A success clears this thread's message only. */
        uint64_t len = 0;
        EXPECT_RC(w, keel_cache_len(cache, &len), KEEL_OK);
        if (keel_last_error_message()[0] != '\0')
            fail(w, "a success left the message \"%s\"", keel_last_error_message());
        w->message_checks++;
    }
    wait_all(); /* the even threads have succeeded */
    if (w->index % 2 == 1) {
        if (strstr(keel_last_error_message(), needle) == NULL)
            fail(w, "round %d: after other threads' successes, message \"%s\" does not name %s",
                 round, keel_last_error_message(), needle);
        w->message_checks++;
    }
    wait_all();
}

static void hammer_limiters(struct worker *w) {
    for (int i = 0; i < ATTEMPTS; i++) {
        keel_decision d;
        memset(&d, 0, sizeof d);
        EXPECT_RC(w, keel_ratelimiter_check(local_limiter, S("tenant-acme"), 1, &d), KEEL_OK);
        if (d.allowed) w->allowed_local++; else w->denied_local++;
        memset(&d, 0, sizeof d);
        EXPECT_RC(w, keel_ratelimiter_check(shared_limiter, S("tenant-acme"), 1, &d), KEEL_OK);
        if (d.allowed) w->allowed_shared++; else w->denied_shared++;
        if (i == ATTEMPTS / 2) {
            /* An error on this thread in the middle of the others' checks. */
            EXPECT_RC(w, keel_ratelimiter_check(local_limiter, S("tenant-acme"), 0, &d),
                      KEEL_ERR_RATELIMIT_INVALID_COST);
        }
    }
}

static void hammer_cache(struct worker *w) {
    char key[64], value[64];
    for (int i = 0; i < CACHE_KEYS; i++) {
        snprintf(key, sizeof key, "t%d-k%d", w->index, i);
        snprintf(value, sizeof value, "value of thread %d, key %d", w->index, i);
        EXPECT_RC(w, keel_cache_set(cache, (const uint8_t *)key, strlen(key),
                                    (const uint8_t *)value, strlen(value), 0),
                  KEEL_OK);
        /* Everyone also overwrites and reads one shared key. */
        EXPECT_RC(w, keel_cache_set(cache, (const uint8_t *)"shared", 6, (const uint8_t *)value,
                                    strlen(value), 0),
                  KEEL_OK);
        keel_bytes *got = NULL;
        EXPECT_RC(w, keel_cache_get(cache, (const uint8_t *)"shared", 6, &got), KEEL_OK);
        if (got != NULL && strncmp((const char *)keel_bytes_data(got), "value of thread ", 16) != 0)
            fail(w, "shared cache entry holds a torn value");
        keel_bytes_free(got);
    }
    for (int i = 0; i < CACHE_KEYS; i++) {
        snprintf(key, sizeof key, "t%d-k%d", w->index, i);
        snprintf(value, sizeof value, "value of thread %d, key %d", w->index, i);
        keel_bytes *got = NULL;
        EXPECT_RC(w, keel_cache_get(cache, (const uint8_t *)key, strlen(key), &got), KEEL_OK);
        if (got != NULL &&
            !str_equal((const char *)keel_bytes_data(got), keel_bytes_len(got), value))
            fail(w, "cache key %s does not read back its value", key);
        keel_bytes_free(got);
    }
}

static void hammer_memory(struct worker *w) {
    char own[32], content[64];
    snprintf(own, sizeof own, "own-%d", w->index);
    keel_session_ref mine = ref(own), shared = ref("shared");
    for (int i = 0; i < MESSAGES; i++) {
        int64_t id = 0;
        snprintf(content, sizeof content, "thread %d message %d", w->index, i);
        EXPECT_RC(w, keel_memory_append(memory, &mine, S("user"), S(content), NULL, 0, -1, &id),
                  KEEL_OK);
        EXPECT_RC(w, keel_memory_append(memory, &shared, S("user"), S(content), NULL, 0, -1, &id),
                  KEEL_OK);
    }
    keel_messages *history = NULL;
    EXPECT_RC(w, keel_memory_history(memory, &mine, 1000, 0, &history), KEEL_OK);
    if (history != NULL && keel_messages_count(history) != MESSAGES)
        fail(w, "session %s has %zu messages, expected %d", own, keel_messages_count(history),
             MESSAGES);
    /* Newest first: the last message this thread appended. */
    if (history != NULL && keel_messages_count(history) > 0) {
        int64_t id = 0;
        const char *role, *text, *meta;
        size_t role_len, text_len, meta_len;
        uint32_t tokens = 0;
        int64_t created = 0;
        EXPECT_RC(w, keel_messages_get(history, 0, &id, &role, &role_len, &text, &text_len, &meta,
                                       &meta_len, &tokens, &created),
                  KEEL_OK);
        snprintf(content, sizeof content, "thread %d message %d", w->index, MESSAGES - 1);
        if (!str_equal(text, text_len, content)) fail(w, "newest message of %s is wrong", own);
    }
    keel_messages_free(history);
}

static void hammer_apikeys(struct worker *w) {
    for (int i = 0; i < 10; i++) {
        keel_identity *id = NULL;
        EXPECT_RC(w, keel_apikeys_verify(keys, api_key, api_key_len, &id), KEEL_OK);
        if (id != NULL && keel_identity_key_id(id) == api_key_id) w->verified++;
        keel_identity_free(id);
        id = NULL;
        EXPECT_RC(w, keel_apikeys_verify(keys, S("keel_live_not-a-key"), &id),
                  KEEL_ERR_AUTH_MALFORMED);
        if (id != NULL) fail(w, "a refused key wrote *out_identity");
    }
}

static void hammer_bm25(struct worker *w) {
    char id[32], text[128];
    for (int i = 0; i < DOCS; i++) {
        snprintf(id, sizeof id, "t%d-d%d", w->index, i);
        snprintf(text, sizeof text, "thread %d writes about turbine blades number %d", w->index, i);
        EXPECT_RC(w, keel_bm25_add(bm25, S(id), S("blades"), S(text), NULL, 0), KEEL_OK);
        keel_hits *hits = NULL;
        EXPECT_RC(w, keel_bm25_search(bm25, S("aerofoil lift wing"), 3, NULL, 0, &hits), KEEL_OK);
        if (hits != NULL && keel_hits_count(hits) > 0) {
            const char *doc = NULL;
            size_t doc_len = 0;
            uint32_t chunk = 0;
            double score = 0;
            keel_span span;
            EXPECT_RC(w, keel_hits_get(hits, 0, &doc, &doc_len, &chunk, &score, &span), KEEL_OK);
            if (!str_equal(doc, doc_len, "wing")) fail(w, "bm25 top hit is not \"wing\"");
            else w->searched++;
        } else {
            fail(w, "bm25 search found nothing");
        }
        keel_hits_free(hits);
    }
    /* A duplicate is refused on this thread while the others add. */
    snprintf(id, sizeof id, "t%d-d0", w->index);
    EXPECT_RC(w, keel_bm25_add(bm25, S(id), S("again"), S("again"), NULL, 0),
              KEEL_ERR_RAG_DUPLICATE_DOCUMENT);
}

static void *run(void *arg) {
    struct worker *w = arg;
    wait_all(); /* start together */
    for (int round = 0; round < ROUNDS; round++) {
        error_message_round(w, round);
        if (round == 0) hammer_limiters(w);
        if (round == 0) hammer_cache(w);
        if (round == 1) hammer_memory(w);
        if (round == 1) hammer_apikeys(w);
        if (round == 2) hammer_bm25(w);
    }
    return NULL;
}

static void remove_dir(void) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int main(void) {
    CHECK(mkdtemp(dir) != NULL);
    char path[256];

    CHECK_RC(keel_cache_new(10000, 0, 0, &cache), KEEL_OK);
    CHECK_RC(keel_ratelimiter_new(S("api"), LIMIT, WINDOW_MS, KEEL_ALGORITHM_GCRA, 0,
                                  &local_limiter),
             KEEL_OK);
    snprintf(path, sizeof path, "%s/limiter", dir);
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), LIMIT, WINDOW_MS, KEEL_ALGORITHM_GCRA,
                                         0, &shared_limiter),
             KEEL_OK);

    char ring_text[KEEL_GENERATED_KEY_LEN + 8] = "1:";
    size_t ring_len = 0;
    CHECK_RC(keel_keyring_generate_key(ring_text + 2, sizeof ring_text - 2, &ring_len), KEEL_OK);
    keel_keyring *ring = NULL;
    CHECK_RC(keel_keyring_parse(ring_text, ring_len + 2, &ring), KEEL_OK);
    memset(ring_text, 0, sizeof ring_text);

    snprintf(path, sizeof path, "%s/memory.db", dir);
    CHECK_RC(keel_memory_open(S(path), ring, NULL, &memory), KEEL_OK);
    snprintf(path, sizeof path, "%s/keys.db", dir);
    CHECK_RC(keel_apikeys_open(S(path), ring, 0, false, &keys), KEEL_OK);
    keel_keyring_free(ring);
    CHECK_RC(keel_apikeys_create(keys, S("admin"), S("acme"), S("ci"), S("live"), S("read"), 0,
                                 api_key, sizeof api_key, &api_key_len, &api_key_id),
             KEEL_OK);

    CHECK_RC(keel_bm25_new(1.2f, 0.75f, S("en"), true, true, &bm25), KEEL_OK);
    CHECK_RC(keel_bm25_add(bm25, S("wing"), S("Wings"), S("the lift of a wing and its aerofoil"),
                           NULL, 0),
             KEEL_OK);
    CHECK_RC(keel_bm25_add(bm25, S("shell"), S("Shells"), S("buckling of cylindrical shells"),
                           NULL, 0),
             KEEL_OK);
    CHECK_RC(keel_bm25_add(bm25, S("heat"), S("Heat"), S("heat transfer in fins"), NULL, 0),
             KEEL_OK);

    CHECK(pthread_barrier_init(&barrier, NULL, THREADS) == 0);
    struct worker workers[THREADS];
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < THREADS; i++) {
        workers[i].index = i;
        CHECK(pthread_create(&workers[i].thread, NULL, run, &workers[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(workers[i].thread, NULL) == 0);
    CHECK(pthread_barrier_destroy(&barrier) == 0);

    uint64_t allowed_local = 0, allowed_shared = 0, denied_local = 0, denied_shared = 0;
    for (int i = 0; i < THREADS; i++) {
        struct worker *w = &workers[i];
        if (w->failure[0] != '\0') fprintf(stderr, "thread %d: %s\n", i, w->failure);
        CHECK(w->failure[0] == '\0');
        CHECK(w->message_checks == ROUNDS * 2);
        CHECK(w->verified == 10);
        CHECK(w->searched == DOCS);
        allowed_local += w->allowed_local;
        allowed_shared += w->allowed_shared;
        denied_local += w->denied_local;
        denied_shared += w->denied_shared;
    }
    /* Exact totals: the limit, not one more, however the checks interleaved. */
    CHECK(allowed_local == LIMIT);
    CHECK(allowed_shared == LIMIT);
    CHECK(denied_local == (uint64_t)THREADS * ATTEMPTS - LIMIT);
    CHECK(denied_shared == (uint64_t)THREADS * ATTEMPTS - LIMIT);

    uint64_t len = 0;
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len == (uint64_t)THREADS * CACHE_KEYS + 1);

    keel_session_ref shared = ref("shared");
    keel_messages *history = NULL;
    CHECK_RC(keel_memory_history(memory, &shared, 1000, 0, &history), KEEL_OK);
    CHECK(keel_messages_count(history) == (size_t)THREADS * MESSAGES);
    keel_messages_free(history);

    CHECK_RC(keel_bm25_len(bm25, &len), KEEL_OK);
    CHECK(len == BASE_DOCS + (uint64_t)THREADS * DOCS);
    keel_hits *hits = NULL;
    CHECK_RC(keel_bm25_search(bm25, S("turbine blades"), 1000, NULL, 0, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == (size_t)THREADS * DOCS);
    keel_hits_free(hits);

    /* The main thread's own message was never touched by the workers' failures. */
    CHECK(keel_last_error_message()[0] == '\0');

    keel_bm25_free(bm25);
    keel_apikeys_free(keys);
    keel_memory_free(memory);
    keel_ratelimiter_free(shared_limiter);
    keel_ratelimiter_free(local_limiter);
    keel_cache_free(cache);
    remove_dir();
    CHECK_DONE();
}
