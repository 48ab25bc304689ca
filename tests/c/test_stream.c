/*
 * Streaming through the C API: the sentence segmenter (tokens split anywhere, even inside a
 * UTF-8 character; bad UTF-8; options), the SSE encoder and comment, and the incremental SSE
 * parser (split reads, the size limit and recovery), with every error path. Runs under
 * AddressSanitizer (tests/c/run.sh), so every handle must be freed.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define S(str) (str), strlen(str)

static int str_equal(const char *data, size_t len, const char *expected) {
    return len == strlen(expected) && memcmp(data, expected, len) == 0;
}

/* Appends every sentence of `list` to `out` (a buffer of `cap` bytes, NUL-terminated, with
 * "|" after each sentence), frees the list, returns how many there were. */
static size_t drain(keel_sentences *list, char *out, size_t cap) {
    size_t n = keel_sentences_count(list);
    for (size_t i = 0; i < n; i++) {
        const char *text = NULL;
        size_t len = 0;
        CHECK_RC(keel_sentences_get(list, i, &text, &len), KEEL_OK);
        size_t used = strlen(out);
        CHECK(used + len + 2 <= cap);
        memcpy(out + used, text, len);
        out[used + len] = '|';
        out[used + len + 1] = '\0';
    }
    keel_sentences_free(list);
    return n;
}

static void test_segmenter_splits_bytes_anywhere(void) {
    /* "Très" and "你好" are multi-byte: every byte split is tried. */
    const char *text = "Dr. Smith is here. Tr\xc3\xa8s bien! \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82Ok.";
    const char *want = "Dr. Smith is here. |Tr\xc3\xa8s bien! |\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82|Ok.|";
    size_t len = strlen(text);
    for (size_t cut = 0; cut <= len; cut++) {
        keel_segmenter *seg = NULL;
        CHECK_RC(keel_segmenter_new(0, 0, &seg), KEEL_OK);
        char out[256] = "";
        keel_sentences *list = NULL;
        CHECK_RC(keel_segmenter_push(seg, text, cut, &list), KEEL_OK);
        drain(list, out, sizeof out);
        CHECK_RC(keel_segmenter_push(seg, text + cut, len - cut, &list), KEEL_OK);
        drain(list, out, sizeof out);
        CHECK_RC(keel_segmenter_flush(seg, &list), KEEL_OK);
        drain(list, out, sizeof out);
        if (strcmp(out, want) != 0) {
            fprintf(stderr, "cut %zu: got \"%s\"\n", cut, out);
        }
        CHECK(strcmp(out, want) == 0);
        keel_segmenter_free(seg);
    }
}

static void test_segmenter_errors(void) {
    keel_segmenter *seg = (keel_segmenter *)0x1;
    CHECK_RC(keel_segmenter_new(0, 3, &seg), KEEL_ERR_STREAM_INVALID_OPTIONS);
    CHECK(strstr(keel_last_error_message(), "max_chars = 3") != NULL);
    CHECK(seg == (keel_segmenter *)0x1); /* not written on failure */
    CHECK_RC(keel_segmenter_new(50, 20, &seg), KEEL_ERR_STREAM_INVALID_OPTIONS);
    CHECK_RC(keel_segmenter_new(0, 0, NULL), KEEL_ERR_NULL_ARG);

    CHECK_RC(keel_segmenter_new(0, 0, &seg), KEEL_OK);
    keel_sentences *list = NULL;
    CHECK_RC(keel_segmenter_push(seg, S("Hi. \xff"), &list), KEEL_ERR_STREAM_INVALID_UTF8);
    CHECK(strstr(keel_last_error_message(), "offset 4") != NULL);
    CHECK(list == NULL);
    CHECK_RC(keel_segmenter_push(NULL, S("x"), &list), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_segmenter_push(seg, NULL, 3, &list), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_segmenter_push(seg, S("x"), NULL), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_segmenter_push(seg, NULL, 0, &list), KEEL_OK);
    CHECK(keel_sentences_count(list) == 0);
    const char *text = NULL;
    size_t len = 0;
    CHECK_RC(keel_sentences_get(list, 0, &text, &len), KEEL_ERR_INVALID_ARGUMENT);
    keel_sentences_free(list);
    /* A stream that ends inside a character. */
    CHECK_RC(keel_segmenter_push(seg, S("ok \xe4\xbd"), &list), KEEL_OK);
    keel_sentences_free(list);
    CHECK_RC(keel_segmenter_flush(seg, &list), KEEL_ERR_STREAM_INVALID_UTF8);
    CHECK_RC(keel_segmenter_flush(seg, &list), KEEL_OK);
    CHECK(keel_sentences_count(list) == 1);
    CHECK_RC(keel_sentences_get(list, 0, &text, &len), KEEL_OK);
    CHECK(str_equal(text, len, "ok "));
    keel_sentences_free(list);
    keel_segmenter_free(seg);
    keel_segmenter_free(NULL);
    keel_sentences_free(NULL);
    CHECK(keel_sentences_count(NULL) == 0);
}

static void check_bytes(keel_bytes *b, const char *expected) {
    CHECK(str_equal((const char *)keel_bytes_data(b), keel_bytes_len(b), expected));
    keel_bytes_free(b);
}

static void test_sse_encoder(void) {
    keel_bytes *b = NULL;
    CHECK_RC(keel_sse_encode(S("a\nb"), S("token"), S("7"), 1500, &b), KEEL_OK);
    check_bytes(b, "event: token\nid: 7\nretry: 1500\ndata: a\ndata: b\n\n");
    CHECK_RC(keel_sse_encode(S("hi"), NULL, 0, NULL, 0, -1, &b), KEEL_OK);
    check_bytes(b, "data: hi\n\n");
    CHECK_RC(keel_sse_encode(NULL, 0, "", 0, "", 0, -1, &b), KEEL_OK);
    check_bytes(b, "event: \nid: \ndata: \n\n");
    CHECK_RC(keel_sse_comment(S("ping"), &b), KEEL_OK);
    check_bytes(b, ": ping\n\n");
    CHECK_RC(keel_sse_comment(NULL, 0, &b), KEEL_OK);
    check_bytes(b, ":\n\n");

    b = NULL;
    CHECK_RC(keel_sse_encode(S("x"), S("a\nb"), NULL, 0, -1, &b), KEEL_ERR_STREAM_SSE_FIELD);
    CHECK(strstr(keel_last_error_message(), "`event`") != NULL);
    CHECK_RC(keel_sse_encode(S("x"), NULL, 0, "a\0b", 3, -1, &b), KEEL_ERR_STREAM_SSE_FIELD);
    CHECK_RC(keel_sse_encode(S("\xff"), NULL, 0, NULL, 0, -1, &b), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_sse_encode(S("x"), NULL, 0, NULL, 0, -1, NULL), KEEL_ERR_NULL_ARG);
    CHECK(b == NULL);
}

static void test_sse_parser(void) {
    const char *body = "\xef\xbb\xbf" "data: He\xc3\xa9\r\n\r\n"
                       ": keep-alive\r\n\r\n"
                       "id: 2\r\nevent: delta\r\nretry: 30\r\ndata: a\r\ndata: b\r\n\r\n"
                       "data: [DONE]\r\n\r\n";
    size_t len = strlen(body);
    for (size_t cut = 0; cut <= len; cut++) {
        keel_sse_parser *p = NULL;
        CHECK_RC(keel_sse_parser_new(0, &p), KEEL_OK);
        keel_sse_events *first = NULL, *second = NULL;
        CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)body, cut, &first), KEEL_OK);
        CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)body + cut, len - cut, &second), KEEL_OK);
        size_t n1 = keel_sse_events_count(first);
        CHECK(n1 + keel_sse_events_count(second) == 3);
        keel_sse_event ev;
        for (size_t i = 0; i < 3; i++) {
            keel_sse_events *list = i < n1 ? first : second;
            CHECK_RC(keel_sse_events_get(list, i < n1 ? i : i - n1, &ev), KEEL_OK);
            if (i == 0) {
                CHECK(str_equal(ev.data, ev.data_len, "He\xc3\xa9"));
                CHECK(ev.event == NULL && ev.id == NULL && !ev.has_retry);
            } else if (i == 1) {
                CHECK(str_equal(ev.data, ev.data_len, "a\nb"));
                CHECK(str_equal(ev.event, ev.event_len, "delta"));
                CHECK(str_equal(ev.id, ev.id_len, "2"));
                CHECK(ev.has_retry && ev.retry_ms == 30);
            } else {
                CHECK(str_equal(ev.data, ev.data_len, "[DONE]"));
                CHECK(str_equal(ev.id, ev.id_len, "2")); /* the id persists */
            }
        }
        CHECK_RC(keel_sse_events_get(second, 5, &ev), KEEL_ERR_INVALID_ARGUMENT);
        keel_sse_events_free(first);
        keel_sse_events_free(second);
        keel_sse_parser_free(p);
    }
}

static void test_sse_parser_bounds_memory(void) {
    keel_sse_parser *p = NULL;
    CHECK_RC(keel_sse_parser_new(64, &p), KEEL_OK);
    keel_sse_events *events = NULL;
    char chunk[100];
    memset(chunk, 'x', sizeof chunk);
    CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)"data: ", 6, &events), KEEL_OK);
    keel_sse_events_free(events);
    events = NULL;
    CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)chunk, sizeof chunk, &events),
             KEEL_ERR_STREAM_SSE_TOO_LARGE);
    CHECK(strstr(keel_last_error_message(), "64 bytes") != NULL);
    CHECK(events == NULL);
    for (int i = 0; i < 10; i++) {
        CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)chunk, sizeof chunk, &events), KEEL_OK);
        CHECK(keel_sse_events_count(events) == 0);
        keel_sse_events_free(events);
    }
    const char *tail = "\n\ndata: ok\n\n";
    CHECK_RC(keel_sse_parser_feed(p, (const uint8_t *)tail, strlen(tail), &events), KEEL_OK);
    CHECK(keel_sse_events_count(events) == 1);
    keel_sse_events_free(events);
    CHECK_RC(keel_sse_parser_feed(NULL, NULL, 0, &events), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_sse_parser_feed(p, NULL, 5, &events), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_sse_parser_new(0, NULL), KEEL_ERR_NULL_ARG);
    keel_sse_parser_free(p);
    keel_sse_parser_free(NULL);
    keel_sse_events_free(NULL);
}

int main(void) {
    test_segmenter_splits_bytes_anywhere();
    test_segmenter_errors();
    test_sse_encoder();
    test_sse_parser();
    test_sse_parser_bounds_memory();
    CHECK_DONE();
}
