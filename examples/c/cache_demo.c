/*
 * keel's cache from C: create it, store and read values, compute a missing value once with
 * get_or_insert, read the statistics, and handle errors.
 *
 * Build and run: examples/c/build_and_run.sh (or `make demo`).
 */
#include <stdio.h>
#include <string.h>

#include "keel.h"

/* Prints what went wrong and returns 1 when `rc` is not KEEL_OK. */
static int failed(const char *what, keel_result rc) {
    if (rc == KEEL_OK) {
        return 0;
    }
    fprintf(stderr, "%s: %s: %s\n", what, keel_result_name(rc), keel_last_error_message());
    return 1;
}

static void print_value(const char *label, const keel_bytes *value) {
    printf("%s = \"%.*s\"\n", label, (int)keel_bytes_len(value),
           (const char *)keel_bytes_data(value));
}

/* Computes a value the first time a key is missing; keel stores it. */
static int32_t build_answer(void *user_data, const uint8_t *key, size_t key_len,
                            keel_value_sink *sink) {
    int *calls = user_data;
    (*calls)++;
    const char *prefix = "answer for ";
    if (keel_value_sink_write(sink, (const uint8_t *)prefix, strlen(prefix)) != KEEL_OK ||
        keel_value_sink_write(sink, key, key_len) != KEEL_OK) {
        return 1; /* any non-zero return: nothing is stored */
    }
    return 0;
}

int main(void) {
    printf("keel %s (header %s)\n", keel_version(), KEEL_VERSION_STRING);

    /* At most 1000 entries, at most 1 MiB of keys + values, entries live 60 s. */
    keel_cache *cache = NULL;
    if (failed("keel_cache_new", keel_cache_new(1000, 1 << 20, 60 * 1000, &cache))) {
        return 1;
    }

    const char *key = "user:42:name";
    const char *name = "Ada";
    if (failed("keel_cache_set", keel_cache_set(cache, (const uint8_t *)key, strlen(key),
                                                (const uint8_t *)name, strlen(name), 0))) {
        return 1;
    }

    keel_bytes *value = NULL;
    if (failed("keel_cache_get", keel_cache_get(cache, (const uint8_t *)key, strlen(key), &value))) {
        return 1;
    }
    print_value(key, value);
    keel_bytes_free(value); /* every keel_bytes is freed by its owner */

    /* A miss is a result code, not a crash. */
    const char *absent = "user:7:name";
    keel_result rc = keel_cache_get(cache, (const uint8_t *)absent, strlen(absent), &value);
    printf("%s -> %s\n", absent, keel_result_name(rc));

    /* get_or_insert: computed on the first call, served from the cache afterwards. */
    int calls = 0;
    const char *question = "what is keel?";
    for (int i = 0; i < 3; i++) {
        rc = keel_cache_get_or_insert(cache, (const uint8_t *)question, strlen(question),
                                      build_answer, &calls, &value);
        if (failed("keel_cache_get_or_insert", rc)) {
            return 1;
        }
        print_value(question, value);
        keel_bytes_free(value);
    }
    printf("build_answer ran %d time(s)\n", calls);

    keel_cache_stats stats;
    if (failed("keel_cache_get_stats", keel_cache_get_stats(cache, &stats))) {
        return 1;
    }
    printf("stats: hits=%llu misses=%llu inserts=%llu entries=%llu weight=%llu\n",
           (unsigned long long)stats.hits, (unsigned long long)stats.misses,
           (unsigned long long)stats.inserts, (unsigned long long)stats.entries,
           (unsigned long long)stats.weight);

    /* Errors carry a stable code and a message for this thread. */
    keel_cache *bad = NULL;
    rc = keel_cache_new(0, 0, 0, &bad);
    printf("keel_cache_new(max_entries = 0) -> %s: %s\n", keel_result_name(rc),
           keel_last_error_message());
    rc = keel_cache_get(NULL, (const uint8_t *)key, strlen(key), &value);
    printf("keel_cache_get(NULL, ...) -> %s: %s\n", keel_result_name(rc),
           keel_last_error_message());

    keel_cache_free(cache);
    return 0;
}
