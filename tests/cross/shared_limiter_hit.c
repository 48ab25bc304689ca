/*
 * One request through the C door against a host-shared rate limiter opened with the C door's
 * defaults (max_keys 0 = the core's default): policy "default", 10 per hour, GCRA, key "k".
 * Prints the decision's `remaining`. Driven by tests/python/test_shared_limiter_doors.py, which
 * opens the same file from Python and Rust: the three must count against one budget.
 *
 * Usage: shared_limiter_hit PATH
 */
#include <stdio.h>
#include <string.h>

#include "keel.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    keel_ratelimiter *limiter = NULL;
    keel_result rc = keel_ratelimiter_new_shared(path, strlen(path), "default", 7, 10, 3600000,
                                                 KEEL_ALGORITHM_GCRA, 0, &limiter);
    if (rc != KEEL_OK) {
        fprintf(stderr, "%s: %s\n", keel_result_name(rc), keel_last_error_message());
        return 1;
    }
    keel_decision d;
    rc = keel_ratelimiter_check(limiter, "k", 1, 1, &d);
    if (rc != KEEL_OK) {
        fprintf(stderr, "%s: %s\n", keel_result_name(rc), keel_last_error_message());
        keel_ratelimiter_free(limiter);
        return 1;
    }
    printf("%d %llu\n", d.allowed ? 1 : 0, (unsigned long long)d.remaining);
    keel_ratelimiter_free(limiter);
    return 0;
}
