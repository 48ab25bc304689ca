/*
 * A tiny assertion kit for the C tests. A failed check prints file:line and what failed, then
 * exits non-zero; a program that reaches CHECK_DONE() prints "N passed, 0 failed" (CI reads
 * that line). Checks are counted on the main thread only: worker threads record what they saw
 * and the main thread checks it after joining them.
 */
#ifndef KEEL_TEST_CHECK_H
#define KEEL_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "keel.h"

static int check_passed = 0;

static void check_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    fprintf(stderr, "    keel_last_error_message(): \"%s\"\n", keel_last_error_message());
    printf("%d passed, 1 failed\n", check_passed);
    exit(1);
}

#define CHECK(cond)                                     \
    do {                                                \
        if (cond) {                                     \
            check_passed++;                             \
        } else {                                        \
            check_fail(__FILE__, __LINE__, #cond);      \
        }                                               \
    } while (0)

/* Checks that `expr` returns the keel_result `expected`, naming both codes when it does not. */
#define CHECK_RC(expr, expected)                                                          \
    do {                                                                                  \
        keel_result check_rc_ = (expr);                                                   \
        if (check_rc_ == (expected)) {                                                    \
            check_passed++;                                                               \
        } else {                                                                          \
            char check_what_[512];                                                        \
            snprintf(check_what_, sizeof check_what_, "%s returned %s, expected %s", #expr, \
                     keel_result_name(check_rc_), keel_result_name(expected));            \
            check_fail(__FILE__, __LINE__, check_what_);                                  \
        }                                                                                 \
    } while (0)

#define CHECK_DONE()                                    \
    do {                                                \
        printf("%d passed, 0 failed\n", check_passed);  \
        return 0;                                       \
    } while (0)

#endif /* KEEL_TEST_CHECK_H */
