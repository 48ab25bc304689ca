/*
 * The knowledge base and LLM history through the C API: a folder indexed in one call with a
 * progress callback, search with exact citations, incremental re-index, persistence, a callback
 * that stops indexing, and clear errors (missing folder, non-UTF-8 file, k = 0); then
 * keel_memory_llm_messages with a system prompt and cited passages within a token budget.
 * Runs under AddressSanitizer (tests/c/run.sh), so every handle must be freed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)
#define NONE NULL, 0
#define CHECK_MESSAGE(needle) CHECK(strstr(keel_last_error_message(), (needle)) != NULL)

static char dir[] = "/tmp/keel-c-kb-XXXXXX";
static char docs[300];
static char store[300];

static void write_file(const char *name, const char *text) {
    char path[400];
    snprintf(path, sizeof path, "%s/%s", docs, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    fclose(f);
}

static const char *WINGS = "# Wings\n\nThe lift of a wing grows with its angle of attack.\n";

struct progress {
    uint64_t calls, last_done, total;
    uint64_t stop_after; /* 0: never stop */
};

static int32_t on_progress(uint64_t done, uint64_t total, void *user_data) {
    struct progress *p = user_data;
    p->calls++;
    p->last_done = done;
    p->total = total;
    return p->stop_after != 0 && p->calls >= p->stop_after;
}

static void test_index_search_reindex(void) {
    write_file("wings.md", WINGS);
    write_file("shells.txt", "Thin cylindrical shells buckle under axial compression.");
    write_file("heat.html", "<html><head><title>Heat</title></head><body><p>Laminar heat "
                            "transfer.</p></body></html>");

    keel_kb *kb = NULL;
    CHECK_RC(keel_kb_open(S(store), NULL, NULL, 0, 0, 0, &kb), KEEL_OK);
    struct progress p = {0, 0, 0, 0};
    keel_index_report report;
    CHECK_RC(keel_kb_index_folder(kb, S(docs), on_progress, &p, &report), KEEL_OK);
    CHECK(report.added == 3 && report.updated == 0 && report.unchanged == 0 && report.chunks == 3);
    CHECK(p.calls >= 2 && p.last_done == 3 && p.total == 3);
    uint64_t n = 0;
    CHECK_RC(keel_kb_documents(kb, &n), KEEL_OK);
    CHECK(n == 3);

    keel_hits *hits = NULL;
    CHECK_RC(keel_kb_search(kb, S("lift of a wing"), 2, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) >= 1);
    const char *id = NULL;
    size_t id_len = 0;
    uint32_t chunk = 9;
    double score = 0;
    keel_span span;
    CHECK_RC(keel_hits_get(hits, 0, &id, &id_len, &chunk, &score, &span), KEEL_OK);
    CHECK(id_len == strlen("wings.md") && memcmp(id, "wings.md", id_len) == 0);
    const char *text = NULL;
    size_t text_len = 0;
    CHECK_RC(keel_hits_text(hits, 0, KEEL_HIT_TEXT, &text, &text_len), KEEL_OK);
    /* The citation's offsets index the file's own bytes. */
    CHECK(span.byte_end - span.byte_start == text_len);
    CHECK(memcmp(WINGS + span.byte_start, text, text_len) == 0);
    keel_hits_free(hits);

    /* One file changed: only it is re-indexed. NULL report and callback are fine. */
    write_file("shells.txt", "Conical shells vibrate.");
    CHECK_RC(keel_kb_index_folder(kb, S(docs), NULL, NULL, NULL), KEEL_OK);
    CHECK_RC(keel_kb_index_folder(kb, S(docs), NULL, NULL, &report), KEEL_OK);
    CHECK(report.unchanged == 3 && report.chunks == 0);
    keel_kb_free(kb);

    /* Reopened from its directory without re-indexing. */
    CHECK_RC(keel_kb_open(S(store), NULL, NULL, 0, 0, 0, &kb), KEEL_OK);
    CHECK_RC(keel_kb_search(kb, S("conical"), 1, &hits), KEEL_OK);
    CHECK(keel_hits_count(hits) == 1);
    keel_hits_free(hits);
    write_file("wings.md", "# Wings\n\nChanged.");
    write_file("new.txt", "Rotor blades flap.");
    CHECK_RC(keel_kb_index_folder(kb, S(docs), NULL, NULL, &report), KEEL_OK);
    CHECK(report.added == 1 && report.updated == 1 && report.unchanged == 2 && report.chunks == 2);
    keel_kb_free(kb);
    keel_kb_free(NULL);
}

static void test_errors(void) {
    keel_kb *kb = NULL;
    CHECK_RC(keel_kb_open(NONE, NULL, NULL, 0, 0, 0, &kb), KEEL_OK); /* in memory */

    /* A callback that returns nonzero stops indexing. */
    struct progress p = {0, 0, 0, 1};
    keel_index_report report = {7, 7, 7, 7, 7};
    CHECK_RC(keel_kb_index_folder(kb, S(docs), on_progress, &p, &report),
             KEEL_ERR_RAG_CANCELLED);
    CHECK(report.added == 7); /* untouched on error */
    CHECK_MESSAGE("stopped by the progress callback after 0 of 4 files");

    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    CHECK_RC(keel_kb_index_folder(kb, S(missing), NULL, NULL, NULL), KEEL_ERR_RAG_SOURCE);
    CHECK_MESSAGE(missing);
    CHECK_MESSAGE("no such folder");
    write_file("bad.txt", "caf\xe9");
    CHECK_RC(keel_kb_index_folder(kb, S(docs), NULL, NULL, NULL), KEEL_ERR_RAG_SOURCE);
    CHECK_MESSAGE("bad.txt");
    CHECK_MESSAGE("not UTF-8");
    char bad[400];
    snprintf(bad, sizeof bad, "%s/bad.txt", docs);
    unlink(bad);

    keel_hits *hits = NULL;
    CHECK_RC(keel_kb_search(kb, S("x"), 0, &hits), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK_MESSAGE("k must be at least 1 (got 0)");
    CHECK(hits == NULL);
    CHECK_RC(keel_kb_search(kb, "\xff", 1, 1, &hits), KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_kb_search(NULL, S("x"), 1, &hits), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_kb_search(kb, S("x"), 1, NULL), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_kb_open(S(store), NULL, NULL, 200, 0, 0, &kb), KEEL_ERR_RAG_INVALID_CONFIG);
    CHECK_MESSAGE("chunk_size = 1000, not 200");
    keel_kb_free(kb);
}

static keel_keyring *generated_keyring(void) {
    char key[KEEL_GENERATED_KEY_LEN + 1];
    size_t len = 0;
    CHECK_RC(keel_keyring_generate_key(key, sizeof key, &len), KEEL_OK);
    char text[128];
    snprintf(text, sizeof text, "1:%s", key);
    keel_keyring *ring = NULL;
    CHECK_RC(keel_keyring_parse(S(text), &ring), KEEL_OK);
    return ring;
}

static int bytes_equal(keel_bytes *b, const char *expected) {
    return keel_bytes_len(b) == strlen(expected) &&
           memcmp(keel_bytes_data(b), expected, strlen(expected)) == 0;
}

static void test_llm_messages(void) {
    char db[400];
    snprintf(db, sizeof db, "%s/memory.db", dir);
    keel_keyring *ring = generated_keyring();
    keel_memory *mem = NULL;
    CHECK_RC(keel_memory_open(S(db), ring, NULL, &mem), KEEL_OK);
    keel_keyring_free(ring);
    keel_session_ref at = {"acme", 4, "alice", 5, "s1", 2};
    int64_t id = 0;
    CHECK_RC(keel_memory_append(mem, &at, S("user"), S("q1"), NONE, 10, &id), KEEL_OK);
    CHECK_RC(keel_memory_append(mem, &at, S("assistant"), S("a1"), NONE, 10, &id), KEEL_OK);

    const char *passages = "[{\"doc_id\": \"wings.md\", \"title\": \"Wings\", \"text\": \"Lift.\"}]";
    /* "Be brief.\n\nSources:\n[1] Wings (wings.md)\nLift." is 46 chars: 12 tokens (chars / 4,
     * rounded up). 12 + 10 holds the system message and the newest turn. */
    keel_bytes *json = NULL;
    CHECK_RC(keel_memory_llm_messages(mem, &at, 22, S("Be brief."), S(passages), &json), KEEL_OK);
    CHECK(bytes_equal(json, "[{\"content\":\"Be brief.\\n\\nSources:\\n[1] Wings (wings.md)\\nLift.\","
                            "\"role\":\"system\"},{\"content\":\"a1\",\"role\":\"assistant\"}]"));
    keel_bytes_free(json);
    CHECK_RC(keel_memory_llm_messages(mem, &at, 100, NONE, NONE, &json), KEEL_OK);
    CHECK(bytes_equal(json, "[{\"content\":\"q1\",\"role\":\"user\"},"
                            "{\"content\":\"a1\",\"role\":\"assistant\"}]"));
    keel_bytes_free(json);

    json = NULL;
    CHECK_RC(keel_memory_llm_messages(mem, &at, 11, S("Be brief."), S(passages), &json),
             KEEL_ERR_MEMORY_BUDGET_TOO_SMALL);
    CHECK_MESSAGE("token budget 11 is too small");
    CHECK_MESSAGE("take 12 tokens");
    CHECK(json == NULL);
    CHECK_RC(keel_memory_llm_messages(mem, &at, 100, NONE, S("[{\"title\": \"x\"}]"), &json),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("element 0 has no \"text\"");
    CHECK_RC(keel_memory_llm_messages(mem, NULL, 100, NONE, NONE, &json), KEEL_ERR_NULL_ARG);
    keel_memory_free(mem);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char path[420];
        snprintf(path, sizeof path, "%s%s", db, suffixes[i]);
        unlink(path);
    }
}

static void remove_tree(const char *path) {
    char cmd[420];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    CHECK(system(cmd) == 0);
}

int main(void) {
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(docs, sizeof docs, "%s/docs", dir);
    snprintf(store, sizeof store, "%s/kb", dir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", docs);
    CHECK(system(cmd) == 0);
    test_index_search_reindex();
    test_errors();
    test_llm_messages();
    remove_tree(dir);
    CHECK_DONE();
}
