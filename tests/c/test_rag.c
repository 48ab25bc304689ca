/*
 * Retrieval through the C API: chunking with exact offsets, a BM25 index (add, update, delete,
 * metadata filters, save and reopen), search results and their accessors, and every error path
 * (NULL arguments, bad UTF-8, bad settings, duplicates, bad JSON, damaged files). Runs under
 * AddressSanitizer (tests/c/run.sh), so every handle must be freed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* A C string as a (pointer, length) buffer argument. */
#define S(str) (str), strlen(str)
#define NONE NULL, 0

static int str_equal(const char *data, size_t len, const char *expected) {
    return len == strlen(expected) && memcmp(data, expected, len) == 0;
}

static void test_chunking_keeps_exact_offsets(void) {
    const char *text = "First sentence here. Second one.\n\nA new paragraph that is long enough.";
    keel_chunks *chunks = NULL;
    CHECK_RC(keel_chunk_text(S(text), 40, 0, &chunks), KEEL_OK);
    CHECK(keel_chunks_count(chunks) == 2);
    keel_span span;
    CHECK_RC(keel_chunks_get(chunks, 0, &span), KEEL_OK);
    CHECK(str_equal(text + span.byte_start, span.byte_end - span.byte_start,
                    "First sentence here. Second one."));
    CHECK_RC(keel_chunks_get(chunks, 1, &span), KEEL_OK);
    CHECK(str_equal(text + span.byte_start, span.byte_end - span.byte_start,
                    "A new paragraph that is long enough."));
    CHECK(span.char_start == span.byte_start); /* ASCII: chars and bytes agree */
    keel_span untouched = {9, 9, 9, 9};
    CHECK_RC(keel_chunks_get(chunks, 2, &untouched), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(untouched.byte_start == 9);
    keel_chunks_free(chunks);

    /* Multi-byte text: char offsets differ from byte offsets. */
    const char *utf = "d\xc3\xa9j\xc3\xa0 vu. caf\xc3\xa9 cr\xc3\xa8me.";
    CHECK_RC(keel_chunk_text(S(utf), 12, 0, &chunks), KEEL_OK);
    CHECK(keel_chunks_count(chunks) == 2);
    CHECK_RC(keel_chunks_get(chunks, 1, &span), KEEL_OK);
    CHECK(span.char_start == 9 && span.byte_start == 11);
    keel_chunks_free(chunks);

    keel_chunks *none = NULL;
    CHECK_RC(keel_chunk_text(S("abc"), 0, 0, &none), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "max_len must be at least 1") != NULL);
    CHECK_RC(keel_chunk_text(S("abc"), 5, 5, &none), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "overlap (5) must be smaller than max_len (5)") != NULL);
    CHECK_RC(keel_chunk_text("\xff", 1, 5, 0, &none), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_chunk_text(S("abc"), 5, 0, NULL), KEEL_ERR_NULL_ARG);
    CHECK(none == NULL);
    CHECK(keel_chunks_count(NULL) == 0);
    keel_chunks_free(NULL);
}

static keel_bm25 *sample_index(void) {
    keel_bm25 *index = NULL;
    CHECK_RC(keel_bm25_new(1.2f, 0.75f, S("en"), true, true, &index), KEEL_OK);
    CHECK_RC(keel_bm25_add(index, S("a"), S("Wings"), S("the lift of a wing in a slipstream"),
                           S("{\"lang\": \"en\", \"year\": 1950}")),
             KEEL_OK);
    CHECK_RC(keel_bm25_add(index, S("b"), S("Heat"), S("heat transfer in a slab"),
                           S("{\"lang\": \"en\"}")),
             KEEL_OK);
    CHECK_RC(keel_bm25_add(index, S("c"), NONE, S("supersonic flow over a wing"),
                           S("{\"lang\": \"de\"}")),
             KEEL_OK);
    CHECK_RC(keel_bm25_add(index, S("e"), NONE, S("supersonic flow over a wing"), NONE), KEEL_OK);
    return index;
}

static void test_search_returns_hits_with_citations(void) {
    keel_bm25 *index = sample_index();
    uint64_t len = 0;
    CHECK_RC(keel_bm25_len(index, &len), KEEL_OK);
    CHECK(len == 4);

    keel_hits *hits = NULL;
    CHECK_RC(keel_bm25_search(index, S("wing slipstream"), 10, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 3);
    const char *id = NULL;
    size_t id_len = 0;
    uint32_t chunk = 99;
    double score = 0, prev = 1e300;
    keel_span span;
    for (size_t i = 0; i < keel_hits_count(hits); i++) {
        CHECK_RC(keel_hits_get(hits, i, &id, &id_len, &chunk, &score, &span), KEEL_OK);
        CHECK(score <= prev && score > 0);
        prev = score;
    }
    CHECK_RC(keel_hits_get(hits, 0, &id, &id_len, &chunk, &score, &span), KEEL_OK);
    CHECK(str_equal(id, id_len, "a"));
    CHECK(chunk == 0 && span.byte_start == 0 && span.byte_end == 34 && span.char_end == 34);
    const char *text = NULL;
    size_t text_len = 0;
    CHECK_RC(keel_hits_text(hits, 0, KEEL_HIT_TITLE, &text, &text_len), KEEL_OK);
    CHECK(str_equal(text, text_len, "Wings"));
    CHECK_RC(keel_hits_text(hits, 0, KEEL_HIT_TEXT, &text, &text_len), KEEL_OK);
    CHECK(str_equal(text, text_len, "the lift of a wing in a slipstream"));
    CHECK_RC(keel_hits_text(hits, 0, KEEL_HIT_METADATA, &text, &text_len), KEEL_OK);
    CHECK(str_equal(text, text_len, "{\"lang\":\"en\",\"year\":1950}"));
    for (size_t i = 0; i < keel_hits_count(hits); i++) {
        CHECK_RC(keel_hits_text(hits, i, KEEL_HIT_METADATA, &text, &text_len), KEEL_OK);
        CHECK(text_len >= 2 && text[0] == '{');
    }
    CHECK_RC(keel_hits_text(hits, 0, 7, &text, &text_len), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_hits_get(hits, 3, &id, &id_len, &chunk, &score, &span), KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_hits_get(hits, 0, NULL, &id_len, &chunk, &score, &span), KEEL_ERR_NULL_ARG);

    /* Hits own their data: they outlive the index. */
    keel_bm25_free(index);
    CHECK_RC(keel_hits_text(hits, 0, KEEL_HIT_TEXT, &text, &text_len), KEEL_OK);
    CHECK(str_equal(text, text_len, "the lift of a wing in a slipstream"));
    keel_hits_free(hits);
    keel_hits_free(NULL);
    CHECK(keel_hits_count(NULL) == 0);
}

static void test_ties_filters_updates_and_deletes(void) {
    keel_bm25 *index = sample_index();
    keel_hits *hits = NULL;
    const char *id = NULL;
    size_t id_len = 0;
    uint32_t chunk = 0;
    double s0 = 0, s1 = 0;
    keel_span span;

    /* Equal scores: ascending document id. */
    CHECK_RC(keel_bm25_search(index, S("supersonic"), 10, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 2);
    CHECK_RC(keel_hits_get(hits, 0, &id, &id_len, &chunk, &s0, &span), KEEL_OK);
    CHECK(str_equal(id, id_len, "c"));
    CHECK_RC(keel_hits_get(hits, 1, &id, &id_len, &chunk, &s1, &span), KEEL_OK);
    CHECK(str_equal(id, id_len, "e") && s0 == s1);
    keel_hits_free(hits);

    CHECK_RC(keel_bm25_search(index, S("wing"), 10, S("{\"lang\": \"de\"}"), &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 1);
    CHECK_RC(keel_hits_get(hits, 0, &id, &id_len, &chunk, &s0, &span), KEEL_OK);
    CHECK(str_equal(id, id_len, "c"));
    keel_hits_free(hits);

    CHECK_RC(keel_bm25_update(index, S("c"), NONE, S("now about heat"), NONE), KEEL_OK);
    CHECK_RC(keel_bm25_search(index, S("supersonic"), 10, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 1);
    keel_hits_free(hits);
    CHECK_RC(keel_bm25_delete(index, S("e")), KEEL_OK);
    CHECK_RC(keel_bm25_delete(index, S("e")), KEEL_ERR_NOT_FOUND);
    CHECK_RC(keel_bm25_search(index, S("supersonic"), 10, NONE, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 0);
    keel_hits_free(hits);

    /* Errors. */
    keel_hits *untouched = NULL;
    CHECK_RC(keel_bm25_add(index, S("a"), NONE, S("again"), NONE), KEEL_ERR_RAG_DUPLICATE_DOCUMENT);
    CHECK_RC(keel_bm25_add(index, S("m"), NONE, S("x"), S("[1, 2]")), KEEL_ERR_RAG_INVALID_METADATA);
    CHECK_RC(keel_bm25_add(index, S("m"), NONE, S("x"), S("{bad")), KEEL_ERR_RAG_INVALID_METADATA);
    CHECK_RC(keel_bm25_add(index, "\xc3", 1, NONE, S("x"), NONE), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_bm25_add(NULL, S("m"), NONE, S("x"), NONE), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_bm25_add(index, NULL, 3, NONE, S("x"), NONE), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_bm25_search(index, S("wing"), 10, S("{\"$xor\": 1}"), &untouched),
             KEEL_ERR_RAG_INVALID_METADATA);
    CHECK(untouched == NULL);
    CHECK_RC(keel_bm25_search(index, S("wing"), 10, NONE, NULL), KEEL_ERR_NULL_ARG);
    keel_bm25 *bad = NULL;
    CHECK_RC(keel_bm25_new(-1.0f, 0.75f, NONE, true, true, &bad), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "k1 must be finite and >= 0 (got -1)") != NULL);
    CHECK_RC(keel_bm25_new(1.2f, 2.0f, NONE, true, true, &bad), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "b must be in [0, 1] (got 2)") != NULL);
    CHECK_RC(keel_bm25_new(1.2f, 0.75f, S("xx"), true, true, &bad), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK(strstr(keel_last_error_message(), "language \"xx\"") != NULL);
    CHECK(bad == NULL);
    CHECK(strcmp(keel_result_name(KEEL_ERR_RAG_CORRUPT_INDEX), "KEEL_ERR_RAG_CORRUPT_INDEX") == 0);
    keel_bm25_free(index);
    keel_bm25_free(NULL);
}

static void test_save_and_reopen(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/keel-test-rag-%ld.bm25", (long)getpid());
    keel_bm25 *index = sample_index();
    CHECK_RC(keel_bm25_save(index, S(path)), KEEL_OK);
    keel_bm25 *again = NULL;
    CHECK_RC(keel_bm25_open(S(path), &again), KEEL_OK);
    keel_hits *a = NULL, *b = NULL;
    CHECK_RC(keel_bm25_search(index, S("wing heat"), 10, NONE, &a), KEEL_OK);
    CHECK_RC(keel_bm25_search(again, S("wing heat"), 10, NONE, &b), KEEL_OK);
    CHECK(keel_hits_count(a) == keel_hits_count(b) && keel_hits_count(a) == 4);
    for (size_t i = 0; i < keel_hits_count(a); i++) {
        const char *ia, *ib;
        size_t la, lb;
        uint32_t ca, cb;
        double sa, sb;
        keel_span pa, pb;
        CHECK_RC(keel_hits_get(a, i, &ia, &la, &ca, &sa, &pa), KEEL_OK);
        CHECK_RC(keel_hits_get(b, i, &ib, &lb, &cb, &sb, &pb), KEEL_OK);
        CHECK(la == lb && memcmp(ia, ib, la) == 0 && sa == sb);
    }
    keel_hits_free(a);
    keel_hits_free(b);
    keel_bm25_free(again);

    /* One damaged byte anywhere (here: the middle of the file) is refused, naming the file. */
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long size = ftell(f);
    CHECK(size > 100);
    CHECK(fseek(f, size / 2, SEEK_SET) == 0);
    int byte = fgetc(f);
    CHECK(byte != EOF);
    CHECK(fseek(f, size / 2, SEEK_SET) == 0);
    CHECK(fputc(byte ^ 0x01, f) != EOF);
    fclose(f);
    keel_bm25 *damaged = NULL;
    CHECK_RC(keel_bm25_open(S(path), &damaged), KEEL_ERR_RAG_CORRUPT_INDEX);
    CHECK(damaged == NULL);
    CHECK(strstr(keel_last_error_message(), path) != NULL);

    f = fopen(path, "wb");
    CHECK(f != NULL);
    fputs("KEELBM25 but then garbage", f);
    fclose(f);
    keel_bm25 *untouched = NULL;
    CHECK_RC(keel_bm25_open(S(path), &untouched), KEEL_ERR_RAG_CORRUPT_INDEX);
    CHECK(untouched == NULL);
    remove(path);
    CHECK_RC(keel_bm25_open(S(path), &untouched), KEEL_ERR_RAG_IO);
    CHECK(strstr(keel_last_error_message(), path) != NULL);
    CHECK_RC(keel_bm25_open(NULL, 0, &untouched), KEEL_ERR_NULL_ARG);
    keel_bm25_free(index);
}

int main(void) {
    test_chunking_keeps_exact_offsets();
    test_search_returns_hits_with_citations();
    test_ties_filters_updates_and_deletes();
    test_save_and_reopen();
    CHECK_DONE();
}
