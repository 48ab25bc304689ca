/*
 * Numbers at the edge of what keel accepts, through the C API: a store wait that SQLite cannot
 * represent and absurd thread counts are typed errors naming the value and the maximum (before,
 * they panicked inside rusqlite, returning KEEL_ERR_PANIC with a backtrace on stderr, or
 * started as many OS threads as asked). Runs under AddressSanitizer (tests/c/run.sh).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)
#define T(str) (str), strlen(str)

static keel_keyring *generated_keyring(void) {
    char key[KEEL_GENERATED_KEY_LEN + 1];
    size_t len = 0;
    CHECK_RC(keel_keyring_generate_key(key, sizeof key, &len), KEEL_OK);
    char text[128];
    snprintf(text, sizeof text, "1:%s", key);
    keel_keyring *ring = NULL;
    CHECK_RC(keel_keyring_parse(T(text), &ring), KEEL_OK);
    return ring;
}

static void test_busy_timeout_beyond_sqlite_int_is_invalid_argument(void) {
    char db[96];
    snprintf(db, sizeof db, "/tmp/keel-test-limits-%ld.db", (long)getpid());
    keel_keyring *ring = generated_keyring();
    keel_memory_options opts;
    memset(&opts, 0, sizeof opts);
    keel_memory *mem = (keel_memory *)0x1;

    opts.busy_timeout_ms = 2147483648u; /* 2^31 ms: panicked in rusqlite before */
    CHECK_RC(keel_memory_open(T(db), ring, &opts, &mem), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(mem == (keel_memory *)0x1);
    CHECK(strstr(keel_last_error_message(), "busy_timeout of 2147483648 ms") != NULL);
    CHECK(strstr(keel_last_error_message(), "maximum of 2147483647 ms") != NULL);
    opts.busy_timeout_ms = UINT32_MAX;
    CHECK_RC(keel_memory_open(T(db), ring, &opts, &mem), KEEL_ERR_INVALID_ARGUMENT);

    /* r2d2 preallocates a slot per pooled connection: UINT32_MAX would abort on allocation. */
    opts.busy_timeout_ms = 0;
    opts.pool_size = UINT32_MAX;
    CHECK_RC(keel_memory_open(T(db), ring, &opts, &mem), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "between 1 and 1024 (got 4294967295)") != NULL);
    opts.pool_size = 0; /* 0 means the default in the C door */

    opts.busy_timeout_ms = 2147483647u; /* the maximum itself is fine */
    mem = NULL;
    CHECK_RC(keel_memory_open(T(db), ring, &opts, &mem), KEEL_OK);
    keel_memory_free(mem);
    keel_keyring_free(ring);
    char side[128];
    remove(db);
    snprintf(side, sizeof side, "%s-wal", db);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", db);
    remove(side);
}

static void test_absurd_thread_counts_are_refused_before_the_model_is_read(void) {
    keel_embedder *e = (keel_embedder *)0x1;
    CHECK_RC(keel_embedder_new(S("/nonexistent/model"), 5000, 8, 0, &e),
             KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(e == (keel_embedder *)0x1);
    CHECK(strstr(keel_last_error_message(), "threads = 5000 exceeds the maximum of 1024") != NULL);
    keel_cross_encoder *ce = (keel_cross_encoder *)0x1;
    CHECK_RC(keel_cross_encoder_new(S("/nonexistent/model"), UINT32_MAX, 8, 0, &ce),
             KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(ce == (keel_cross_encoder *)0x1);
    CHECK(strstr(keel_last_error_message(), "threads = 4294967295") != NULL);
    /* Within the maximum, the threads are fine and the missing directory is the error. */
    CHECK_RC(keel_embedder_new(S("/nonexistent/model"), 64, 8, 0, &e), KEEL_ERR_RAG_MODEL);
}

int main(void) {
    test_busy_timeout_beyond_sqlite_int_is_invalid_argument();
    test_absurd_thread_counts_are_refused_before_the_model_is_read();
    CHECK_DONE();
}
