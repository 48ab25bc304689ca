/*
 * The error and version contract of the C API: NULL arguments, untouched out-parameters,
 * result names, the per-thread error message, and the version macros against the library.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <string.h>

#include "check.h"

#define S(str) (const uint8_t *)(str), strlen(str)

/* A NULL-argument failure: the code, and a message that names the argument. */
#define CHECK_NULL_ARG(expr, arg)                                         \
    do {                                                                  \
        CHECK_RC(expr, KEEL_ERR_NULL_ARG);                                \
        CHECK(strstr(keel_last_error_message(), "`" arg "`") != NULL);   \
    } while (0)

static int32_t compute_nothing(void *user_data, const uint8_t *key, size_t key_len,
                               keel_value_sink *sink) {
    (void)user_data, (void)key, (void)key_len, (void)sink;
    return 0;
}

static void test_null_arguments(void) {
    keel_cache *cache = NULL;
    CHECK_RC(keel_cache_new(10, 0, 0, &cache), KEEL_OK);

    /* Recognisable non-NULL values that must survive every failing call. */
    keel_cache *cache_sentinel = (keel_cache *)&cache;
    keel_bytes *bytes_sentinel = (keel_bytes *)&cache;
    keel_cache *out_cache = cache_sentinel;
    keel_bytes *out_value = bytes_sentinel;
    bool found = true;
    uint64_t n = 77;
    keel_cache_stats stats = {.hits = 77};

    CHECK_NULL_ARG(keel_cache_new(10, 0, 0, NULL), "out_cache");

    CHECK_NULL_ARG(keel_cache_set(NULL, S("k"), S("v"), 0), "cache");
    CHECK_NULL_ARG(keel_cache_set(cache, NULL, 1, S("v"), 0), "key");
    CHECK_NULL_ARG(keel_cache_set(cache, S("k"), NULL, 1, 0), "value");

    CHECK_NULL_ARG(keel_cache_get(NULL, S("k"), &out_value), "cache");
    CHECK_NULL_ARG(keel_cache_get(cache, NULL, 1, &out_value), "key");
    CHECK_NULL_ARG(keel_cache_get(cache, S("k"), NULL), "out_value");

    CHECK_NULL_ARG(keel_cache_contains(NULL, S("k"), &found), "cache");
    CHECK_NULL_ARG(keel_cache_contains(cache, S("k"), NULL), "out_found");
    CHECK_NULL_ARG(keel_cache_remove(NULL, S("k")), "cache");
    CHECK_NULL_ARG(keel_cache_clear(NULL), "cache");
    CHECK_NULL_ARG(keel_cache_len(NULL, &n), "cache");
    CHECK_NULL_ARG(keel_cache_len(cache, NULL), "out_len");
    CHECK_NULL_ARG(keel_cache_purge_expired(NULL, &n), "cache");
    CHECK_NULL_ARG(keel_cache_purge_expired(cache, NULL), "out_purged");
    CHECK_NULL_ARG(keel_cache_get_stats(NULL, &stats), "cache");
    CHECK_NULL_ARG(keel_cache_get_stats(cache, NULL), "out_stats");

    CHECK_NULL_ARG(keel_cache_get_or_insert(NULL, S("k"), compute_nothing, NULL, &out_value),
                   "cache");
    CHECK_NULL_ARG(keel_cache_get_or_insert(cache, S("k"), NULL, NULL, &out_value), "compute");
    CHECK_NULL_ARG(keel_cache_get_or_insert(cache, S("k"), compute_nothing, NULL, NULL),
                   "out_value");
    CHECK_NULL_ARG(keel_value_sink_write(NULL, S("data")), "sink");

    CHECK(out_cache == cache_sentinel);
    CHECK(out_value == bytes_sentinel);
    CHECK(found);
    CHECK(n == 77);
    CHECK(stats.hits == 77);

    /* Nothing was stored by the failed calls. */
    CHECK_RC(keel_cache_len(cache, &n), KEEL_OK);
    CHECK(n == 0);

    /* Getters and destructors accept NULL. */
    CHECK(keel_bytes_data(NULL) == NULL);
    CHECK(keel_bytes_len(NULL) == 0);
    keel_bytes_free(NULL);
    keel_cache_free(NULL);
    keel_cache_free(cache);
}

static void test_result_names(void) {
    static const struct {
        keel_result code;
        const char *name;
    } table[] = {
        {KEEL_OK, "KEEL_OK"},
        {KEEL_ERR_NULL_ARG, "KEEL_ERR_NULL_ARG"},
        {KEEL_ERR_INVALID_ARGUMENT, "KEEL_ERR_INVALID_ARGUMENT"},
        {KEEL_ERR_INVALID_UTF8, "KEEL_ERR_INVALID_UTF8"},
        {KEEL_ERR_NOT_FOUND, "KEEL_ERR_NOT_FOUND"},
        {KEEL_ERR_PANIC, "KEEL_ERR_PANIC"},
        {KEEL_ERR_CALLBACK, "KEEL_ERR_CALLBACK"},
        {KEEL_ERR_INTERNAL, "KEEL_ERR_INTERNAL"},
        {KEEL_ERR_CACHE_ZERO_CAPACITY, "KEEL_ERR_CACHE_ZERO_CAPACITY"},
        {KEEL_ERR_CACHE_INVALID_TTL, "KEEL_ERR_CACHE_INVALID_TTL"},
        {KEEL_ERR_CACHE_ENTRY_TOO_LARGE, "KEEL_ERR_CACHE_ENTRY_TOO_LARGE"},
        {KEEL_ERR_CACHE_RECURSIVE_LOAD, "KEEL_ERR_CACHE_RECURSIVE_LOAD"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        CHECK(strcmp(keel_result_name(table[i].code), table[i].name) == 0);
    }
    /* Stable numbers: the ABI. */
    CHECK(KEEL_OK == 0);
    CHECK(KEEL_ERR_NULL_ARG == 1);
    CHECK(KEEL_ERR_CACHE_ZERO_CAPACITY == 100);
    CHECK(KEEL_ERR_CACHE_RECURSIVE_LOAD == 103);
    /* Unknown codes get a name too. */
    CHECK(strcmp(keel_result_name(-1), "KEEL_ERR_UNKNOWN") == 0);
    CHECK(strcmp(keel_result_name(99), "KEEL_ERR_UNKNOWN") == 0);
    CHECK(strcmp(keel_result_name(INT32_MAX), "KEEL_ERR_UNKNOWN") == 0);
}

static void test_last_error_message(void) {
    keel_cache *cache = NULL;
    CHECK(keel_last_error_message() != NULL);

    CHECK_RC(keel_cache_new(0, 0, 0, &cache), KEEL_ERR_CACHE_ZERO_CAPACITY);
    CHECK(strstr(keel_last_error_message(), "max_entries") != NULL);
    /* Functions without a keel_result leave it alone... */
    (void)keel_result_name(KEEL_ERR_CACHE_ZERO_CAPACITY);
    (void)keel_version();
    CHECK(strstr(keel_last_error_message(), "max_entries") != NULL);
    /* ...and a successful call clears it. */
    CHECK_RC(keel_cache_new(1, 0, 0, &cache), KEEL_OK);
    CHECK(strcmp(keel_last_error_message(), "") == 0);

    /* Messages never repeat key bytes. */
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_get(cache, S("SECRET-KEY"), &value), KEEL_ERR_NOT_FOUND);
    CHECK(strstr(keel_last_error_message(), "SECRET") == NULL);
    keel_cache_free(cache);
}

static void *other_thread_message(void *arg) {
    const char **seen = arg;
    /* Copy: the pointer is only valid until this thread's next keel call. */
    *seen = strdup(keel_last_error_message());
    return NULL;
}

static void test_last_error_is_per_thread(void) {
    CHECK_RC(keel_cache_new(0, 0, 0, NULL), KEEL_ERR_NULL_ARG);
    const char *seen = NULL;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, other_thread_message, &seen) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(seen != NULL && strcmp(seen, "") == 0);
    free((void *)seen);
    CHECK(strlen(keel_last_error_message()) > 0);
}

static void test_version(void) {
#if !defined(KEEL_VERSION_MAJOR) || !defined(KEEL_VERSION_MINOR) || \
    !defined(KEEL_VERSION_PATCH) || !defined(KEEL_VERSION_NUMBER)
#error "keel.h lacks its version macros"
#endif
#if KEEL_VERSION_NUMBER != KEEL_VERSION_MAJOR * 10000 + KEEL_VERSION_MINOR * 100 + KEEL_VERSION_PATCH
#error "KEEL_VERSION_NUMBER disagrees with its parts"
#endif
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", KEEL_VERSION_MAJOR, KEEL_VERSION_MINOR,
             KEEL_VERSION_PATCH);
    CHECK(strcmp(KEEL_VERSION_STRING, expected) == 0);
    CHECK(strcmp(keel_version(), KEEL_VERSION_STRING) == 0);
    CHECK(keel_version_number() == KEEL_VERSION_NUMBER);
}

int main(void) {
    test_null_arguments();
    test_result_names();
    test_last_error_message();
    test_last_error_is_per_thread();
    test_version();
    CHECK_DONE();
}
