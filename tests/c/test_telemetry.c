/*
 * Telemetry through the C API: turning traces and logs on from TOML (and refusing bad TOML,
 * bad values and bad OTEL_* variables with their codes), the per-thread trace context, flush and
 * shutdown (idempotent). The export itself is checked end to end by tests/telemetry_trace.rs and
 * tests/python/test_telemetry_trace.py; here spans are made and dropped (exporter "none").
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "check.h"

#define S(str) (str), strlen(str)
#define NONE NULL, 0

static void test_context_is_checked_and_cleared(void) {
    CHECK_RC(keel_trace_context_set(S("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
             KEEL_OK);
    CHECK_RC(keel_trace_context_set(S("not-a-traceparent")), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "not-a-traceparent") != NULL);
    CHECK_RC(keel_trace_context_set(S("00-00000000000000000000000000000000-b7ad6b7169203331-01")),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_trace_context_set(NULL, 3), KEEL_ERR_NULL_ARG);
    keel_trace_context_clear();
    keel_trace_context_clear();
}

static void test_bad_configuration_is_refused(void) {
    CHECK_RC(keel_telemetry_init(S("[traces]\nenabled = true\nendpiont = \"x\"\n")),
             KEEL_ERR_CONFIG_PARSE);
    CHECK(strstr(keel_last_error_message(), "endpiont") != NULL);
    CHECK_RC(keel_telemetry_init(S("[traces]\nenabled = true\nsample_ratio = 2.0\n")),
             KEEL_ERR_CONFIG_INVALID);
    CHECK_RC(keel_telemetry_init(S("[traces]\nenabled = true\nendpoint = \"collector:4318\"\n")),
             KEEL_ERR_CONFIG_INVALID);
    setenv("OTEL_TRACES_SAMPLER", "jaeger_remote", 1);
    CHECK_RC(keel_telemetry_init(S("[traces]\nenabled = true\n")), KEEL_ERR_TELEMETRY_CONFIG);
    CHECK(strstr(keel_last_error_message(), "jaeger_remote") != NULL);
    unsetenv("OTEL_TRACES_SAMPLER");
}

static void test_on_then_off(void) {
    /* Nothing configured: stays off. */
    CHECK_RC(keel_telemetry_init(NONE), KEEL_OK);
    CHECK_RC(keel_telemetry_init(S("[traces]\nenabled = true\nexporter = \"none\"\n"
                                   "[logs]\nenabled = true\nlevel = \"error\"\n")),
             KEEL_OK);
    CHECK_RC(keel_trace_context_set(S("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
             KEEL_OK);
    keel_bm25 *index = NULL;
    CHECK_RC(keel_bm25_new(1.2f, 0.75f, S("en"), true, true, &index), KEEL_OK);
    CHECK_RC(keel_bm25_add(index, S("a"), NONE, S("the lift of a wing"), NONE), KEEL_OK);
    keel_hits *hits = NULL;
    CHECK_RC(keel_bm25_search(index, S("wing"), 3, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 1);
    keel_hits_free(hits);
    keel_bm25_free(index);
    keel_trace_context_clear();
    CHECK_RC(keel_telemetry_flush(), KEEL_OK);
    CHECK_RC(keel_telemetry_shutdown(), KEEL_OK);
    CHECK_RC(keel_telemetry_shutdown(), KEEL_OK);
    CHECK_RC(keel_telemetry_flush(), KEEL_OK);
}

int main(void) {
    CHECK_RC(keel_telemetry_shutdown(), KEEL_OK); /* never on: fine */
    test_context_is_checked_and_cleared();
    test_bad_configuration_is_refused();
    test_on_then_off();
    CHECK(strcmp(keel_result_name(KEEL_ERR_TELEMETRY_EXPORTER), "KEEL_ERR_TELEMETRY_EXPORTER") == 0);
    CHECK_DONE();
}
