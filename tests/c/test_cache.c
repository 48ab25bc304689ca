/*
 * The cache through the C API: storage, misses, TTLs, bounds, statistics and single-flight
 * get_or_insert, including from several threads. Runs under AddressSanitizer (tests/c/run.sh),
 * so every keel_bytes and keel_cache must be freed.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "check.h"

/* A C string as a (pointer, length) buffer argument. */
#define S(str) (const uint8_t *)(str), strlen(str)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int bytes_equal(const keel_bytes *bytes, const char *expected) {
    size_t len = strlen(expected);
    return keel_bytes_len(bytes) == len && memcmp(keel_bytes_data(bytes), expected, len) == 0;
}

static keel_cache *new_cache(uint64_t max_entries, uint64_t max_weight, uint64_t ttl_ms) {
    keel_cache *cache = NULL;
    CHECK_RC(keel_cache_new(max_entries, max_weight, ttl_ms, &cache), KEEL_OK);
    CHECK(cache != NULL);
    return cache;
}

static void test_create_and_free(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    uint64_t len = 99;
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len == 0);
    keel_cache_free(cache);
    keel_cache_free(NULL);
    keel_bytes_free(NULL);
}

static void test_set_get_and_miss(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    CHECK_RC(keel_cache_set(cache, S("greeting"), S("hello"), 0), KEEL_OK);

    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_get(cache, S("greeting"), &value), KEEL_OK);
    CHECK(bytes_equal(value, "hello"));
    keel_bytes_free(value);

    keel_bytes *untouched = (keel_bytes *)&value; /* any recognisable non-NULL value */
    keel_bytes *out = untouched;
    CHECK_RC(keel_cache_get(cache, S("absent"), &out), KEEL_ERR_NOT_FOUND);
    CHECK(out == untouched);
    CHECK(strlen(keel_last_error_message()) > 0);

    /* Replace, then remove. */
    CHECK_RC(keel_cache_set(cache, S("greeting"), S("bonjour"), 0), KEEL_OK);
    CHECK_RC(keel_cache_get(cache, S("greeting"), &value), KEEL_OK);
    CHECK(bytes_equal(value, "bonjour"));
    keel_bytes_free(value);

    bool found = false;
    CHECK_RC(keel_cache_contains(cache, S("greeting"), &found), KEEL_OK);
    CHECK(found);
    CHECK_RC(keel_cache_remove(cache, S("greeting")), KEEL_OK);
    CHECK_RC(keel_cache_remove(cache, S("greeting")), KEEL_ERR_NOT_FOUND);
    CHECK_RC(keel_cache_contains(cache, S("greeting"), &found), KEEL_OK);
    CHECK(!found);

    /* Binary keys and values, including NUL bytes and the empty key. */
    const uint8_t key[] = {0, 1, 2, 0};
    const uint8_t val[] = {0xff, 0, 0xfe};
    CHECK_RC(keel_cache_set(cache, key, sizeof key, val, sizeof val, 0), KEEL_OK);
    CHECK_RC(keel_cache_get(cache, key, sizeof key, &value), KEEL_OK);
    CHECK(keel_bytes_len(value) == sizeof val);
    CHECK(memcmp(keel_bytes_data(value), val, sizeof val) == 0);
    keel_bytes_free(value);
    CHECK_RC(keel_cache_set(cache, NULL, 0, S("empty key"), 0), KEEL_OK);
    CHECK_RC(keel_cache_get(cache, NULL, 0, &value), KEEL_OK);
    CHECK(bytes_equal(value, "empty key"));
    keel_bytes_free(value);

    uint64_t len = 0;
    CHECK_RC(keel_cache_clear(cache), KEEL_OK);
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len == 0);
    keel_cache_free(cache);
}

static void test_values_outlive_the_cache(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_set(cache, S("k"), S("kept"), 0), KEEL_OK);
    CHECK_RC(keel_cache_get(cache, S("k"), &value), KEEL_OK);
    CHECK_RC(keel_cache_set(cache, S("k"), S("replaced"), 0), KEEL_OK);
    keel_cache_free(cache);
    CHECK(bytes_equal(value, "kept"));
    keel_bytes_free(value);
}

static void test_invalid_configuration(void) {
    keel_cache *cache = NULL;
    CHECK_RC(keel_cache_new(0, 0, 0, &cache), KEEL_ERR_CACHE_ZERO_CAPACITY);
    CHECK(cache == NULL);
    CHECK(strstr(keel_last_error_message(), "max_entries = 0") != NULL);

    /* TTLs above 100 years are rejected, at creation and per entry. */
    CHECK_RC(keel_cache_new(10, 0, UINT64_MAX, &cache), KEEL_ERR_CACHE_INVALID_TTL);
    CHECK(cache == NULL);
    CHECK(strstr(keel_last_error_message(), "at most 100 years") != NULL);
    const uint64_t hundred_years_ms = 100ULL * 365 * 24 * 3600 * 1000;
    CHECK_RC(keel_cache_new(10, 0, hundred_years_ms + 1, &cache), KEEL_ERR_CACHE_INVALID_TTL);
    CHECK_RC(keel_cache_new(10, 0, hundred_years_ms, &cache), KEEL_OK);
    CHECK_RC(keel_cache_set(cache, S("k"), S("v"), UINT64_MAX), KEEL_ERR_CACHE_INVALID_TTL);
    bool found = true;
    CHECK_RC(keel_cache_contains(cache, S("k"), &found), KEEL_OK);
    CHECK(!found);
    keel_cache_free(cache);

    /* One entry heavier than the whole weight bound. */
    cache = new_cache(1, 10, 0);
    CHECK_RC(keel_cache_set(cache, S("k"), S("0123456789"), 0), KEEL_ERR_CACHE_ENTRY_TOO_LARGE);
    CHECK_RC(keel_cache_set(cache, S("k"), S("012345678"), 0), KEEL_OK);
    keel_cache_free(cache);
}

static void test_ttl_expiry(void) {
    keel_cache *cache = new_cache(10, 0, 30);
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_set(cache, S("short"), S("v"), 0), KEEL_OK);      /* default: 30 ms */
    CHECK_RC(keel_cache_set(cache, S("long"), S("v"), 3600000), KEEL_OK); /* one hour */
    CHECK_RC(keel_cache_get(cache, S("short"), &value), KEEL_OK);
    keel_bytes_free(value);

    sleep_ms(120);
    CHECK_RC(keel_cache_get(cache, S("short"), &value), KEEL_ERR_NOT_FOUND);
    CHECK_RC(keel_cache_get(cache, S("long"), &value), KEEL_OK);
    keel_bytes_free(value);

    CHECK_RC(keel_cache_set(cache, S("a"), S("v"), 0), KEEL_OK);
    CHECK_RC(keel_cache_set(cache, S("b"), S("v"), 0), KEEL_OK);
    sleep_ms(120);
    uint64_t purged = 0, len = 0;
    CHECK_RC(keel_cache_purge_expired(cache, &purged), KEEL_OK);
    CHECK(purged == 2);
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len == 1);

    keel_cache_stats stats;
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.expirations == 3);
    keel_cache_free(cache);
}

static void test_stats(void) {
    keel_cache *cache = new_cache(100, 0, 0);
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_set(cache, S("a"), S("1"), 0), KEEL_OK);
    CHECK_RC(keel_cache_set(cache, S("b"), S("2"), 0), KEEL_OK);
    CHECK_RC(keel_cache_get(cache, S("a"), &value), KEEL_OK);
    keel_bytes_free(value);
    CHECK_RC(keel_cache_get(cache, S("b"), &value), KEEL_OK);
    keel_bytes_free(value);
    CHECK_RC(keel_cache_get(cache, S("c"), &value), KEEL_ERR_NOT_FOUND);
    bool found;
    CHECK_RC(keel_cache_contains(cache, S("a"), &found), KEEL_OK); /* not counted */

    keel_cache_stats stats;
    memset(&stats, 0xff, sizeof stats);
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.hits == 2);
    CHECK(stats.misses == 1);
    CHECK(stats.inserts == 2);
    CHECK(stats.evictions == 0);
    CHECK(stats.expirations == 0);
    CHECK(stats.entries == 2);
    CHECK(stats.weight == 2); /* no weight bound: each entry weighs 1 */
    keel_cache_free(cache);

    /* With a weight bound an entry weighs key + value bytes. */
    cache = new_cache(1000, 1000, 0);
    CHECK_RC(keel_cache_set(cache, S("key"), S("seven!!"), 0), KEEL_OK);
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.weight == 10);
    keel_cache_free(cache);
}

static void test_bounds(void) {
    keel_cache *cache = new_cache(100, 0, 0);
    char key[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        CHECK_RC(keel_cache_set(cache, S(key), S("value"), 0), KEEL_OK);
    }
    uint64_t len = 0;
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len > 0 && len <= 100);
    keel_cache_stats stats;
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.inserts == 10000);
    CHECK(stats.evictions >= 10000 - 100);
    keel_cache_free(cache);

    /* The weight bound holds too: 100-byte values into 2000 bytes. */
    cache = new_cache(1000, 2000, 0);
    char value[101];
    memset(value, 'x', 100);
    value[100] = '\0';
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "%04d", i);
        CHECK_RC(keel_cache_set(cache, S(key), S(value), 0), KEEL_OK);
    }
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.weight <= 2000);
    CHECK(stats.entries <= 2000 / 104);
    keel_cache_free(cache);
}

/* get_or_insert callbacks. `user_data` is a struct compute_state. */
struct compute_state {
    atomic_int calls;
    int32_t return_code; /* what the callback returns */
    long delay_ms;       /* how long it takes */
    keel_cache *cache;   /* for the recursive test */
    keel_result nested_rc;
};

static int32_t compute_greeting(void *user_data, const uint8_t *key, size_t key_len,
                                keel_value_sink *sink) {
    struct compute_state *state = user_data;
    atomic_fetch_add(&state->calls, 1);
    if (state->delay_ms > 0) {
        sleep_ms(state->delay_ms);
    }
    if (state->return_code != 0) {
        return state->return_code;
    }
    /* Written in pieces: the value is the concatenation. */
    if (keel_value_sink_write(sink, S("hello, ")) != KEEL_OK ||
        keel_value_sink_write(sink, key, key_len) != KEEL_OK) {
        return -1;
    }
    return 0;
}

static void test_get_or_insert(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    struct compute_state state = {.calls = 0};
    keel_bytes *value = NULL;

    CHECK_RC(keel_cache_get_or_insert(cache, S("world"), compute_greeting, &state, &value), KEEL_OK);
    CHECK(bytes_equal(value, "hello, world"));
    keel_bytes_free(value);
    CHECK_RC(keel_cache_get_or_insert(cache, S("world"), compute_greeting, &state, &value), KEEL_OK);
    CHECK(bytes_equal(value, "hello, world"));
    keel_bytes_free(value);
    CHECK(atomic_load(&state.calls) == 1);

    /* The computed value is an ordinary entry. */
    CHECK_RC(keel_cache_get(cache, S("world"), &value), KEEL_OK);
    CHECK(bytes_equal(value, "hello, world"));
    keel_bytes_free(value);
    keel_cache_free(cache);
}

static void test_get_or_insert_failure(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    struct compute_state state = {.calls = 0, .return_code = 42};
    keel_bytes *untouched = (keel_bytes *)&state;
    keel_bytes *value = untouched;

    CHECK_RC(keel_cache_get_or_insert(cache, S("k"), compute_greeting, &state, &value),
             KEEL_ERR_CALLBACK);
    CHECK(value == untouched);
    CHECK(strstr(keel_last_error_message(), "42") != NULL);
    bool found = true;
    CHECK_RC(keel_cache_contains(cache, S("k"), &found), KEEL_OK);
    CHECK(!found);
    uint64_t len = 1;
    CHECK_RC(keel_cache_len(cache, &len), KEEL_OK);
    CHECK(len == 0);

    /* A later call computes again, and succeeds. */
    state.return_code = 0;
    CHECK_RC(keel_cache_get_or_insert(cache, S("k"), compute_greeting, &state, &value), KEEL_OK);
    CHECK(bytes_equal(value, "hello, k"));
    keel_bytes_free(value);
    CHECK(atomic_load(&state.calls) == 2);
    keel_cache_free(cache);
}

static int32_t compute_recursively(void *user_data, const uint8_t *key, size_t key_len,
                                   keel_value_sink *sink) {
    struct compute_state *state = user_data;
    keel_bytes *inner = NULL;
    state->nested_rc =
        keel_cache_get_or_insert(state->cache, key, key_len, compute_recursively, state, &inner);
    keel_bytes_free(inner);
    return keel_value_sink_write(sink, S("outer"));
}

static void test_get_or_insert_recursive(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    struct compute_state state = {.calls = 0, .cache = cache};
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_get_or_insert(cache, S("k"), compute_recursively, &state, &value), KEEL_OK);
    CHECK(state.nested_rc == KEEL_ERR_CACHE_RECURSIVE_LOAD);
    CHECK(bytes_equal(value, "outer"));
    keel_bytes_free(value);
    keel_cache_free(cache);
}

#define THREADS 8

struct worker {
    pthread_t thread;
    pthread_barrier_t *start;
    keel_cache *cache;
    struct compute_state *state;
    keel_result rc;
    int value_ok;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    keel_bytes *value = NULL;
    pthread_barrier_wait(w->start);
    w->rc = keel_cache_get_or_insert(w->cache, S("shared"), compute_greeting, w->state, &value);
    w->value_ok = w->rc == KEEL_OK && bytes_equal(value, "hello, shared");
    keel_bytes_free(value);
    return NULL;
}

static void test_get_or_insert_single_flight(void) {
    keel_cache *cache = new_cache(10, 0, 0);
    /* Slow enough that every thread misses while the first one computes. */
    struct compute_state state = {.calls = 0, .delay_ms = 100};
    pthread_barrier_t start;
    struct worker workers[THREADS];
    CHECK(pthread_barrier_init(&start, NULL, THREADS) == 0);
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.start = &start, .cache = cache, .state = &state};
        CHECK(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(workers[i].thread, NULL) == 0);
        CHECK_RC(workers[i].rc, KEEL_OK);
        CHECK(workers[i].value_ok);
    }
    pthread_barrier_destroy(&start);
    CHECK(atomic_load(&state.calls) == 1);

    keel_cache_stats stats;
    CHECK_RC(keel_cache_get_stats(cache, &stats), KEEL_OK);
    CHECK(stats.inserts == 1);
    CHECK(stats.hits + stats.misses == THREADS);
    keel_cache_free(cache);
}

int main(void) {
    test_create_and_free();
    test_set_get_and_miss();
    test_values_outlive_the_cache();
    test_invalid_configuration();
    test_ttl_expiry();
    test_stats();
    test_bounds();
    test_get_or_insert();
    test_get_or_insert_failure();
    test_get_or_insert_recursive();
    test_get_or_insert_single_flight();
    CHECK_DONE();
}
