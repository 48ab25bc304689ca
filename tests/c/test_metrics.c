/*
 * The metrics registry through the C API: the exposition in both formats, a named cache and a
 * rate limiter read at scrape time, bad arguments. Runs under AddressSanitizer (tests/c/run.sh),
 * so every keel_bytes must be freed.
 */
#define _POSIX_C_SOURCE 200809L

#include <string.h>

#include "check.h"

#define S(str) (const uint8_t *)(str), strlen(str)

/* The exposition as a NUL-terminated copy (free it). */
static char *metrics_text(uint32_t format) {
    keel_bytes *text = NULL;
    CHECK_RC(keel_metrics_text(format, &text), KEEL_OK);
    size_t len = keel_bytes_len(text);
    char *copy = malloc(len + 1);
    CHECK(copy != NULL);
    memcpy(copy, keel_bytes_data(text), len);
    copy[len] = '\0';
    keel_bytes_free(text);
    return copy;
}

/* The value of the sample whose name and labels are exactly `series`; -1 when absent. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            return strtod(line + n + 1, NULL);
        }
    }
    return -1;
}

int main(void) {
    keel_cache *cache = NULL;
    CHECK_RC(keel_cache_new(100, 0, 0, &cache), KEEL_OK);
    CHECK_RC(keel_cache_register_metrics(cache, "c_answers", strlen("c_answers")), KEEL_OK);
    CHECK_RC(keel_cache_set(cache, S("k"), S("v"), 0), KEEL_OK);
    keel_bytes *value = NULL;
    CHECK_RC(keel_cache_get(cache, S("k"), &value), KEEL_OK);
    keel_bytes_free(value);
    CHECK_RC(keel_cache_get(cache, S("absent"), &value), KEEL_ERR_NOT_FOUND);

    keel_ratelimiter *limiter = NULL;
    CHECK_RC(keel_ratelimiter_new("c_api", strlen("c_api"), 1, 60000, KEEL_ALGORITHM_GCRA, 0, &limiter),
             KEEL_OK);
    keel_decision decision;
    CHECK_RC(keel_ratelimiter_check(limiter, "ip-1", 4, 1, &decision), KEEL_OK);
    CHECK_RC(keel_ratelimiter_check(limiter, "ip-1", 4, 1, &decision), KEEL_OK);

    char *text = metrics_text(KEEL_METRICS_PROMETHEUS);
    CHECK(strstr(text, "# TYPE keel_operations_total counter\n") != NULL);
    CHECK(sample(text, "keel_cache_hits_total{cache=\"c_answers\"}") == 1);
    CHECK(sample(text, "keel_cache_misses_total{cache=\"c_answers\"}") == 1);
    CHECK(sample(text, "keel_cache_entries{cache=\"c_answers\"}") == 1);
    CHECK(sample(text, "keel_ratelimit_decisions_total{limiter=\"c_api\",decision=\"allowed\"}") == 1);
    CHECK(sample(text, "keel_ratelimit_decisions_total{limiter=\"c_api\",decision=\"denied\"}") == 1);
    CHECK(sample(text, "process_resident_memory_bytes") > 0);
    CHECK(strstr(text, "ip-1") == NULL); /* a key is never a label */
    CHECK(strstr(text, "# EOF") == NULL);
    free(text);

    text = metrics_text(KEEL_METRICS_OPENMETRICS);
    size_t len = strlen(text);
    CHECK(len > 6 && strcmp(text + len - 6, "# EOF\n") == 0);
    CHECK(strstr(text, "# UNIT keel_operation_duration_seconds seconds\n") != NULL);
    free(text);

    CHECK(strcmp(keel_metrics_content_type(KEEL_METRICS_PROMETHEUS),
                 "text/plain; version=0.0.4; charset=utf-8") == 0);
    CHECK(strncmp(keel_metrics_content_type(KEEL_METRICS_OPENMETRICS), "application/openmetrics-text", 28) == 0);
    CHECK(keel_metrics_content_type(7) == NULL);

    /* Bad arguments: a typed error, the out-parameter untouched. */
    keel_bytes *untouched = NULL;
    CHECK_RC(keel_metrics_text(7, &untouched), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(untouched == NULL);
    CHECK(strstr(keel_last_error_message(), "7") != NULL);
    CHECK_RC(keel_metrics_text(KEEL_METRICS_PROMETHEUS, NULL), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_cache_register_metrics(cache, "", 0), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_cache_register_metrics(NULL, "x", 1), KEEL_ERR_NULL_ARG);

    /* A freed cache leaves the exposition. */
    keel_cache_free(cache);
    keel_ratelimiter_free(limiter);
    text = metrics_text(KEEL_METRICS_PROMETHEUS);
    CHECK(strstr(text, "c_answers") == NULL);
    CHECK(strstr(text, "c_api") == NULL);
    free(text);

    keel_metrics_set_enabled(false);
    keel_metrics_set_enabled(true);
    CHECK_DONE();
}
