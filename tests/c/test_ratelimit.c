/*
 * Rate limiting from C: policies, decisions, all-or-nothing combination, header rendering,
 * bad input, and exactness under concurrent threads.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)

static keel_ratelimiter *make(const char *name, uint64_t limit, uint64_t window_ms, int32_t algo) {
    keel_ratelimiter *l = NULL;
    CHECK_RC(keel_ratelimiter_new(S(name), limit, window_ms, algo, 0, &l), KEEL_OK);
    CHECK(l != NULL);
    return l;
}

static void test_bad_policies(void) {
    keel_ratelimiter *l = (keel_ratelimiter *)&l; /* sentinel: must stay untouched */
    keel_ratelimiter *const sentinel = l;
    CHECK_RC(keel_ratelimiter_new(S("api"), 0, 1000, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_RATELIMIT_INVALID_POLICY);
    CHECK_RC(keel_ratelimiter_new(S("api"), 10, 0, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_RATELIMIT_INVALID_POLICY);
    CHECK_RC(keel_ratelimiter_new(S("bad name"), 10, 1000, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_RATELIMIT_INVALID_POLICY);
    CHECK_RC(keel_ratelimiter_new(S("api"), 10, 1000, 42, 0, &l), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_ratelimiter_new("\xff\xfe", 2, 10, 1000, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_ratelimiter_new(S("api"), 10, 1000, KEEL_ALGORITHM_GCRA, 0, NULL),
             KEEL_ERR_NULL_ARG);
    CHECK(l == sentinel);
    keel_ratelimiter_free(NULL);
}

static void test_limit_then_deny(int32_t algo) {
    keel_ratelimiter *l = make("api", 3, 60000, algo);
    keel_decision d;
    for (uint64_t i = 0; i < 3; i++) {
        CHECK_RC(keel_ratelimiter_check(l, S("10.0.0.1"), 1, &d), KEEL_OK);
        CHECK(d.allowed);
        CHECK(d.remaining == 2 - i);
        CHECK(d.limit == 3);
        CHECK(!d.has_retry_after);
    }
    CHECK_RC(keel_ratelimiter_check(l, S("10.0.0.1"), 1, &d), KEEL_OK);
    CHECK(!d.allowed);
    /* GCRA: within the window; sliding window: up to the rest of this window plus the next. */
    CHECK(d.has_retry_after && d.retry_after_ms > 0 && d.retry_after_ms <= 120000);
    CHECK(strcmp(d.policy, "api") == 0);
    CHECK(d.window_ms == 60000);

    char buf[512];
    size_t len = 0;
    CHECK_RC(keel_decision_format_headers(&d, buf, sizeof buf, &len), KEEL_OK);
    CHECK(len > 0 && len < sizeof buf);
    buf[len] = '\0';
    CHECK(strstr(buf, "RateLimit-Policy: \"api\";q=3;w=60\r\n") != NULL);
    CHECK(strstr(buf, "X-RateLimit-Remaining: 0\r\n") != NULL);
    CHECK(strstr(buf, "Retry-After: ") != NULL);

    size_t small_len = 99;
    CHECK_RC(keel_decision_format_headers(&d, buf, 10, &small_len), KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK(small_len == 99);
    CHECK(strstr(keel_last_error_message(), "need") != NULL);

    /* Other keys are independent. */
    CHECK_RC(keel_ratelimiter_check(l, S("10.0.0.2"), 1, &d), KEEL_OK);
    CHECK(d.allowed);
    keel_ratelimiter_free(l);
}

static void test_bad_checks(void) {
    keel_ratelimiter *l = make("api", 5, 1000, KEEL_ALGORITHM_GCRA);
    keel_decision d = {.limit = 77};
    CHECK_RC(keel_ratelimiter_check(l, S("k"), 0, &d), KEEL_ERR_RATELIMIT_INVALID_COST);
    CHECK_RC(keel_ratelimiter_check(l, S("k"), 6, &d), KEEL_ERR_RATELIMIT_INVALID_COST);
    CHECK_RC(keel_ratelimiter_check(l, "\xc3", 1, 1, &d), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_ratelimiter_check(NULL, S("k"), 1, &d), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_ratelimiter_check(l, S("k"), 1, NULL), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_ratelimiter_check(l, NULL, 3, 1, &d), KEEL_ERR_NULL_ARG);
    CHECK(d.limit == 77);
    keel_ratelimiter_free(l);
}

static void test_check_all(void) {
    keel_ratelimiter *per_key = make("per-key", 1, 60000, KEEL_ALGORITHM_GCRA);
    keel_ratelimiter *per_ip = make("per-ip", 5, 60000, KEEL_ALGORITHM_SLIDING_WINDOW);
    const keel_ratelimiter *limiters[2] = {per_ip, per_key};
    const char *keys[2] = {"10.0.0.9", "key-a"};
    size_t lens[2] = {8, 5};
    keel_decision d;
    CHECK_RC(keel_ratelimiter_check_all(limiters, keys, lens, 2, 1, &d), KEEL_OK);
    CHECK(d.allowed && strcmp(d.policy, "per-key") == 0 && d.remaining == 0);
    CHECK_RC(keel_ratelimiter_check_all(limiters, keys, lens, 2, 1, &d), KEEL_OK);
    CHECK(!d.allowed && strcmp(d.policy, "per-key") == 0);
    /* The IP was refunded for the denied request: 1 of 5 used. */
    CHECK_RC(keel_ratelimiter_check(per_ip, S("10.0.0.9"), 1, &d), KEEL_OK);
    CHECK(d.allowed && d.remaining == 3);
    CHECK_RC(keel_ratelimiter_check_all(limiters, keys, lens, 0, 1, &d),
             KEEL_ERR_INVALID_ARGUMENT);
    const keel_ratelimiter *with_null[2] = {per_ip, NULL};
    CHECK_RC(keel_ratelimiter_check_all(with_null, keys, lens, 2, 1, &d), KEEL_ERR_NULL_ARG);
    keel_ratelimiter_free(per_key);
    keel_ratelimiter_free(per_ip);
}

enum { THREADS = 16, PER_THREAD = 50 };

struct worker {
    keel_ratelimiter *limiter;
    int allowed;
    int errors;
};

static void *hammer(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        keel_decision d;
        if (keel_ratelimiter_check(w->limiter, S("shared"), 1, &d) != KEEL_OK) {
            w->errors++;
        } else if (d.allowed) {
            w->allowed++;
        }
    }
    return NULL;
}

static void test_threads_allow_exactly_the_limit(void) {
    keel_ratelimiter *l = make("api", 100, 3600000, KEEL_ALGORITHM_GCRA);
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.limiter = l};
        CHECK(pthread_create(&threads[i], NULL, hammer, &workers[i]) == 0);
    }
    int allowed = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        allowed += workers[i].allowed;
        errors += workers[i].errors;
    }
    CHECK(errors == 0);
    CHECK(allowed == 100);
    keel_ratelimiter_free(l);
}

static void test_host_shared(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/keel-c-rl-%d", (int)getpid());
    unlink(path);
    keel_ratelimiter *a = NULL, *b = NULL, *c = NULL;
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), 2, 60000, KEEL_ALGORITHM_GCRA, 100, &a),
             KEEL_OK);
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), 2, 60000, KEEL_ALGORITHM_GCRA, 100, &b),
             KEEL_OK);
    keel_decision d;
    CHECK_RC(keel_ratelimiter_check(a, S("k"), 1, &d), KEEL_OK);
    CHECK(d.allowed);
    CHECK_RC(keel_ratelimiter_check(b, S("k"), 1, &d), KEEL_OK);
    CHECK(d.allowed && d.remaining == 0);
    CHECK_RC(keel_ratelimiter_check(a, S("k"), 1, &d), KEEL_OK);
    CHECK(!d.allowed);
    /* Another limit (a rolling redeploy) gets its own state file instead of an error. */
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), 3, 60000, KEEL_ALGORITHM_GCRA, 100, &c),
             KEEL_OK);
    CHECK_RC(keel_ratelimiter_check(c, S("k"), 1, &d), KEEL_OK);
    CHECK(d.allowed && d.remaining == 2);
    keel_ratelimiter_free(c);
    c = NULL;
    /* A folder that does not exist: the message names the file and the folder. */
    CHECK_RC(keel_ratelimiter_new_shared(S("/nonexistent-dir/x"), S("api"), 3, 60000,
                                         KEEL_ALGORITHM_GCRA, 100, &c),
             KEEL_ERR_RATELIMIT_SHARED_STATE);
    CHECK(c == NULL);
    CHECK(strstr(keel_last_error_message(), "/nonexistent-dir/x.v2.gcra.3per60s.4096keys") != NULL);
    CHECK(strstr(keel_last_error_message(), "does the folder /nonexistent-dir exist") != NULL);
    /* The state file truncated under live limiters: decisions go on, the process survives. */
    char file[192];
    snprintf(file, sizeof file, "%s.v2.gcra.2per60s.4096keys", path);
    CHECK(truncate(file, 0) == 0);
    for (int i = 0; i < 100; i++) {
        char key[16];
        int n = snprintf(key, sizeof key, "key-%d", i);
        CHECK_RC(keel_ratelimiter_check(a, key, (size_t)n, 1, &d), KEEL_OK);
    }
    keel_ratelimiter_free(a);
    keel_ratelimiter_free(b);
    unlink(file);
    snprintf(file, sizeof file, "%s.v2.gcra.3per60s.4096keys", path);
    unlink(file);
}

/* Numbers that used to reach arithmetic unchecked: typed errors naming the value. */
static void test_numeric_extremes(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/keel-c-rl-num-%d", (int)getpid());
    keel_ratelimiter *l = NULL;
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), 2, 60000, KEEL_ALGORITHM_GCRA,
                                         UINT64_MAX, &l),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "18446744073709551615") != NULL);
    CHECK_RC(keel_ratelimiter_new_shared(S(path), S("api"), 2, 60000, KEEL_ALGORITHM_GCRA,
                                         (uint64_t)1 << 40, &l),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "1099511627776") != NULL);
    CHECK_RC(keel_ratelimiter_new(S("api"), UINT64_MAX, 60000, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_RATELIMIT_INVALID_POLICY);
    CHECK(strstr(keel_last_error_message(), "18446744073709551615") != NULL);
    CHECK_RC(keel_ratelimiter_new(S("api"), 5, UINT64_MAX, KEEL_ALGORITHM_GCRA, 0, &l),
             KEEL_ERR_RATELIMIT_INVALID_POLICY);
    CHECK(strstr(keel_last_error_message(), "one year") != NULL);
    CHECK(l == NULL);
    CHECK_RC(keel_ratelimiter_new(S("api"), 5, 60000, KEEL_ALGORITHM_GCRA, UINT64_MAX, &l), KEEL_OK);
    keel_decision d;
    CHECK_RC(keel_ratelimiter_check(l, S("k"), UINT64_MAX, &d), KEEL_ERR_RATELIMIT_INVALID_COST);
    CHECK(strstr(keel_last_error_message(), "18446744073709551615") != NULL);
    keel_ratelimiter_free(l);
    CHECK(strcmp(keel_result_name(KEEL_ERR_RATELIMIT_SHARED_BUSY), "KEEL_ERR_RATELIMIT_SHARED_BUSY") == 0);
}

int main(void) {
    test_bad_policies();
    test_limit_then_deny(KEEL_ALGORITHM_GCRA);
    test_limit_then_deny(KEEL_ALGORITHM_SLIDING_WINDOW);
    test_bad_checks();
    test_check_all();
    test_threads_allow_exactly_the_limit();
    test_host_shared();
    test_numeric_extremes();
    CHECK_DONE();
}
