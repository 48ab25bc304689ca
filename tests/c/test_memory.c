/*
 * Conversation memory and the keyring through the C API: append, history, window, sessions,
 * export, deletes, retention, tenant isolation, rotation, and clear error codes and messages for
 * bad input (invalid UTF-8, oversized content, unknown session, wrong keyring, a key file others
 * can read, a constant key, retiring an unknown key, a database edited without the keyring).
 * Runs under AddressSanitizer.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* A C string as a (pointer, length) text argument. */
#define T(str) (str), strlen(str)

static char db_dir[] = "/tmp/keel-c-memory-XXXXXX";
static char db_path[256];

static keel_session_ref ref(const char *tenant, const char *user, const char *session) {
    keel_session_ref r = {tenant, strlen(tenant), user, strlen(user), session, strlen(session)};
    return r;
}

static int text_equal(const char *ptr, size_t len, const char *expected) {
    return len == strlen(expected) && memcmp(ptr, expected, len) == 0;
}

static int contains(const char *data, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(data + i, needle, n) == 0) return 1;
    }
    return 0;
}

static keel_keyring *generated_keyring(uint32_t id) {
    char key[KEEL_GENERATED_KEY_LEN + 1];
    size_t len = 0;
    CHECK_RC(keel_keyring_generate_key(key, sizeof key, &len), KEEL_OK);
    CHECK(len == KEEL_GENERATED_KEY_LEN && key[len] == '\0');
    char text[128];
    snprintf(text, sizeof text, "%u:%s", id, key);
    keel_keyring *ring = NULL;
    CHECK_RC(keel_keyring_parse(T(text), &ring), KEEL_OK);
    memset(key, 0, sizeof key);
    memset(text, 0, sizeof text);
    return ring;
}

/* SQLite is compiled into libkeel; the tamper check edits the file with it, as an attacker
 * without the keyring would. */
extern int sqlite3_open(const char *filename, void **db);
extern int sqlite3_exec(void *db, const char *sql, void *callback, void *arg, char **errmsg);
extern int sqlite3_close(void *db);

static void edit_database(const char *path, const char *sql) {
    void *db = NULL;
    CHECK(sqlite3_open(path, &db) == 0);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == 0);
    CHECK(sqlite3_close(db) == 0);
}

static void remove_db(const char *path) {
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char file[320];
        snprintf(file, sizeof file, "%s%s", path, suffixes[i]);
        unlink(file);
    }
}

/* Checks that the last error message contains `needle`. */
#define CHECK_MESSAGE(needle) CHECK(strstr(keel_last_error_message(), (needle)) != NULL)

static keel_memory *open_memory(const keel_keyring *ring, const keel_memory_options *opts) {
    keel_memory *mem = NULL;
    CHECK_RC(keel_memory_open(T(db_path), ring, opts, &mem), KEEL_OK);
    CHECK(mem != NULL);
    return mem;
}

static void test_keyring(void) {
    char small[16];
    size_t len = 7;
    CHECK_RC(keel_keyring_generate_key(small, sizeof small, &len), KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 7);

    keel_keyring *ring = generated_keyring(4);
    uint32_t id = 0;
    CHECK_RC(keel_keyring_primary_id(ring, &id), KEEL_OK);
    CHECK(id == 4);
    keel_keyring_free(ring);
    keel_keyring_free(NULL);

    keel_keyring *out = (keel_keyring *)&len; /* recognisable non-NULL value */
    keel_keyring *untouched = out;
    CHECK_RC(keel_keyring_parse(T("1:not base64!"), &out), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK(out == untouched);
    uint8_t raw[32] = {0};
    CHECK_RC(keel_keyring_from_key(1, raw, sizeof raw, &out), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_RC(keel_keyring_from_env(T("KEEL_C_TEST_UNSET_VARIABLE"), &out),
             KEEL_ERR_CRYPTO_KEYRING_SOURCE);
    CHECK_RC(keel_keyring_from_file(T("/nonexistent/keel/keys"), &out),
             KEEL_ERR_CRYPTO_KEYRING_SOURCE);
    CHECK(out == untouched);
    CHECK_RC(keel_keyring_parse(T("1:x"), NULL), KEEL_ERR_NULL_ARG);

    uint8_t key64[64];
    for (int i = 0; i < 64; i++) key64[i] = (uint8_t)i;
    CHECK_RC(keel_keyring_from_key(9, key64, sizeof key64, &out), KEEL_OK);
    CHECK_RC(keel_keyring_primary_id(out, &id), KEEL_OK);
    CHECK(id == 9);
    keel_keyring_free(out);
}

static void test_append_history_window(keel_memory *mem) {
    keel_session_ref at = ref("acme", "alice", "s1");
    int64_t id1 = 0, id2 = 0, id3 = 0;
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T("hello"), T("{\"lang\":\"en\"}"), 5, &id1),
             KEEL_OK);
    CHECK_RC(keel_memory_append(mem, &at, T("assistant"), T("hi there"), NULL, 0, -1, &id2),
             KEEL_OK);
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T(""), NULL, 0, 1, &id3), KEEL_OK);
    CHECK(id1 > 0 && id2 == id1 + 1 && id3 == id2 + 1);

    keel_messages *msgs = NULL;
    CHECK_RC(keel_memory_history(mem, &at, 10, 0, &msgs), KEEL_OK);
    CHECK(keel_messages_count(msgs) == 3);
    int64_t id = 0, created = 0;
    const char *role = NULL, *content = NULL, *meta = NULL;
    size_t role_len = 0, content_len = 0, meta_len = 99;
    uint32_t tokens = 0;
    /* Newest first: index 0 is the empty message, index 2 the first. */
    CHECK_RC(keel_messages_get(msgs, 2, &id, &role, &role_len, &content, &content_len, &meta,
                               &meta_len, &tokens, &created),
             KEEL_OK);
    CHECK(id == id1 && tokens == 5 && created > 1600000000000LL);
    CHECK(text_equal(role, role_len, "user"));
    CHECK(text_equal(content, content_len, "hello"));
    CHECK(text_equal(meta, meta_len, "{\"lang\":\"en\"}"));
    CHECK_RC(keel_messages_get(msgs, 1, NULL, NULL, NULL, &content, &content_len, &meta,
                               &meta_len, &tokens, NULL),
             KEEL_OK);
    CHECK(text_equal(content, content_len, "hi there"));
    CHECK(meta == NULL && meta_len == 0);
    CHECK(tokens == 2); /* estimated: ceil(8 chars / 4) */
    CHECK_RC(keel_messages_get(msgs, 0, NULL, NULL, NULL, &content, &content_len, NULL, NULL,
                               NULL, NULL),
             KEEL_OK);
    CHECK(content_len == 0);
    id = -5;
    CHECK_RC(keel_messages_get(msgs, 3, &id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(id == -5);
    keel_messages_free(msgs);
    keel_messages_free(NULL);
    CHECK(keel_messages_count(NULL) == 0);

    /* Limit and offset. */
    CHECK_RC(keel_memory_history(mem, &at, 1, 1, &msgs), KEEL_OK);
    CHECK(keel_messages_count(msgs) == 1);
    CHECK_RC(keel_messages_get(msgs, 0, &id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             KEEL_OK);
    CHECK(id == id2);
    keel_messages_free(msgs);

    /* Window: budget 3 holds the two newest (1 + 2 tokens), oldest first. */
    CHECK_RC(keel_memory_window(mem, &at, 3, &msgs), KEEL_OK);
    CHECK(keel_messages_count(msgs) == 2);
    CHECK_RC(keel_messages_get(msgs, 0, &id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             KEEL_OK);
    CHECK(id == id2);
    keel_messages_free(msgs);
}

static void test_sessions_export_delete(keel_memory *mem) {
    keel_session_ref b = ref("acme", "alice", "s2");
    int64_t id = 0;
    CHECK_RC(keel_memory_append(mem, &b, T("user"), T("second session"), NULL, 0, -1, &id),
             KEEL_OK);
    keel_sessions *list = NULL;
    CHECK_RC(keel_memory_sessions(mem, T("acme"), T("alice"), 10, 0, &list), KEEL_OK);
    CHECK(keel_sessions_count(list) == 2);
    const char *name = NULL;
    size_t name_len = 0;
    uint64_t count = 0;
    for (size_t i = 0; i < 2; i++) {
        CHECK_RC(keel_sessions_get(list, i, &name, &name_len, &count, NULL, NULL), KEEL_OK);
        CHECK(text_equal(name, name_len, "s1") ? count == 3 : count == 1);
    }
    keel_sessions_free(list);
    keel_sessions_free(NULL);

    keel_bytes *json = NULL;
    CHECK_RC(keel_memory_export(mem, &b, &json), KEEL_OK);
    const char *data = (const char *)keel_bytes_data(json);
    size_t len = keel_bytes_len(json);
    CHECK(len > 0 && data[0] == '{');
    CHECK(contains(data, len, "second session"));
    keel_bytes_free(json);

    CHECK_RC(keel_memory_delete_session(mem, &b), KEEL_OK);
    CHECK_RC(keel_memory_delete_session(mem, &b), KEEL_ERR_MEMORY_SESSION_NOT_FOUND);
    keel_messages *msgs = NULL;
    CHECK_RC(keel_memory_history(mem, &b, 10, 0, &msgs), KEEL_ERR_MEMORY_SESSION_NOT_FOUND);
    CHECK(msgs == NULL);
}

static void test_isolation(keel_memory *mem) {
    keel_session_ref mallory = ref("acme", "mallory", "s1");
    keel_session_ref globex = ref("globex", "alice", "s1");
    keel_messages *msgs = NULL;
    int64_t id = 0;
    CHECK_RC(keel_memory_history(mem, &mallory, 10, 0, &msgs), KEEL_ERR_MEMORY_SESSION_NOT_FOUND);
    CHECK_RC(keel_memory_append(mem, &mallory, T("user"), T("x"), NULL, 0, -1, &id),
             KEEL_ERR_MEMORY_SESSION_NOT_FOUND);
    CHECK_RC(keel_memory_append(mem, &globex, T("user"), T("globex"), NULL, 0, -1, &id), KEEL_OK);
    CHECK_RC(keel_memory_history(mem, &globex, 10, 0, &msgs), KEEL_OK);
    CHECK(keel_messages_count(msgs) == 1);
    keel_messages_free(msgs);
}

static void test_bad_input(keel_memory *mem) {
    keel_session_ref at = ref("acme", "alice", "s1");
    int64_t id = -1;
    const char bad_utf8[] = {'o', 'k', (char)0xC3, (char)0x28, 0};
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T(bad_utf8), NULL, 0, -1, &id),
             KEEL_ERR_INVALID_UTF8);
    CHECK(strstr(keel_last_error_message(), "content") != NULL);
    keel_session_ref bad_tenant = {bad_utf8, 4, "u", 1, "s", 1};
    CHECK_RC(keel_memory_append(mem, &bad_tenant, T("user"), T("x"), NULL, 0, -1, &id),
             KEEL_ERR_INVALID_UTF8);
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T("x"), T("{broken"), -1, &id),
             KEEL_ERR_MEMORY_INVALID_METADATA);
    CHECK_RC(keel_memory_append(mem, &at, T(""), T("x"), NULL, 0, -1, &id),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T("x"), NULL, 0, 1LL << 40, &id),
             KEEL_ERR_INVALID_ARGUMENT);
    keel_session_ref empty = ref("", "u", "s");
    CHECK_RC(keel_memory_append(mem, &empty, T("user"), T("x"), NULL, 0, -1, &id),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_memory_append(mem, NULL, T("user"), T("x"), NULL, 0, -1, &id),
             KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_memory_append(mem, &at, NULL, 4, T("x"), NULL, 0, -1, &id), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_memory_append(mem, &at, T("user"), T("x"), NULL, 0, -1, NULL),
             KEEL_ERR_NULL_ARG);
    CHECK(id == -1);

    /* Oversized content with a small limit: rejected, nothing stored. */
    keel_keyring *ring = generated_keyring(1);
    keel_memory_options opts = {0};
    opts.max_content_bytes = 16;
    opts.synchronous_full = true;
    keel_memory *small = NULL;
    char other[300];
    snprintf(other, sizeof other, "%s-small", db_path);
    CHECK_RC(keel_memory_open(T(other), ring, &opts, &small), KEEL_OK);
    CHECK_RC(keel_memory_append(small, &at, T("user"), T("this is longer than 16"), NULL, 0, -1,
                                &id),
             KEEL_ERR_MEMORY_CONTENT_TOO_LARGE);
    keel_sessions *list = NULL;
    CHECK_RC(keel_memory_sessions(small, T("acme"), T("alice"), 10, 0, &list), KEEL_OK);
    CHECK(keel_sessions_count(list) == 0);
    keel_sessions_free(list);
    keel_memory_free(small);
    keel_keyring_free(ring);

    /* Not a database. */
    char junk[300];
    snprintf(junk, sizeof junk, "%s/junk.db", db_dir);
    FILE *f = fopen(junk, "wb");
    CHECK(f != NULL);
    for (int i = 0; i < 8192; i++) fputc('Z', f);
    fclose(f);
    ring = generated_keyring(1);
    keel_memory *bad = NULL;
    CHECK_RC(keel_memory_open(T(junk), ring, NULL, &bad), KEEL_ERR_STORE_OPEN);
    CHECK(bad == NULL);
    keel_keyring_free(ring);
    unlink(junk);
}

static void test_wrong_key(void) {
    /* A wrong keyring is refused when the memory opens, naming the key id. */
    keel_keyring *other = generated_keyring(1);
    keel_memory *mem = (keel_memory *)&other;
    keel_memory *untouched = mem;
    CHECK_RC(keel_memory_open(T(db_path), other, NULL, &mem), KEEL_ERR_CRYPTO_KEY_MISMATCH);
    CHECK(mem == untouched);
    CHECK_MESSAGE("key 1");
    CHECK_MESSAGE("wrong keyring");
    keel_keyring_free(other);
    /* A keyring without the key the data uses: refused at open too. */
    other = generated_keyring(5);
    CHECK_RC(keel_memory_open(T(db_path), other, NULL, &mem), KEEL_ERR_CRYPTO_UNKNOWN_KEY);
    CHECK_MESSAGE("no key with id 1");
    keel_keyring_free(other);
}

/* The mistakes of the keyring and memory area, and the code and message each one gets. */
static void test_mistakes(void) {
    keel_keyring *out = NULL;

    /* A key file that group or others can read: refused, naming the path and the mode. */
    char keyfile[300];
    snprintf(keyfile, sizeof keyfile, "%s/keys", db_dir);
    char key[KEEL_GENERATED_KEY_LEN + 1];
    size_t len = 0;
    CHECK_RC(keel_keyring_generate_key(key, sizeof key, &len), KEEL_OK);
    FILE *f = fopen(keyfile, "w");
    CHECK(f != NULL);
    fprintf(f, "1:%s\n", key);
    fclose(f);
    memset(key, 0, sizeof key);
    CHECK(chmod(keyfile, 0644) == 0);
    CHECK_RC(keel_keyring_from_file(T(keyfile), &out), KEEL_ERR_CRYPTO_KEYRING_SOURCE);
    CHECK_MESSAGE(keyfile);
    CHECK_MESSAGE("mode 0644");
    CHECK_MESSAGE("chmod 600");
    CHECK(chmod(keyfile, 0600) == 0);
    CHECK_RC(keel_keyring_from_file(T(keyfile), &out), KEEL_OK);
    keel_keyring_free(out);
    unlink(keyfile);
    /* A missing key file is named. */
    CHECK_RC(keel_keyring_from_file(T("/nonexistent/keel/keys"), &out),
             KEEL_ERR_CRYPTO_KEYRING_SOURCE);
    CHECK_MESSAGE("/nonexistent/keel/keys");

    /* Constant or low-entropy keys: refused on every way in. */
    uint8_t zeros[64] = {0};
    CHECK_RC(keel_keyring_from_key(1, zeros, sizeof zeros, &out), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("not random");
    /* base64 of 64 bytes 'A' */
    const char *constant =
        "1:QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==";
    CHECK_RC(keel_keyring_parse(T(constant), &out), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("1 distinct byte values");
    CHECK(strstr(keel_last_error_message(), "QUFB") == NULL);
    /* Short key: its length is named. */
    CHECK_RC(keel_keyring_from_key(1, zeros, 32, &out), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("32 bytes");

    /* Rotation over C, and retiring keys: an unknown id or the primary is a keyring error. */
    char other_path[300];
    snprintf(other_path, sizeof other_path, "%s/rotate.db", db_dir);
    keel_keyring *one = generated_keyring(1);
    keel_memory *mem = NULL;
    CHECK_RC(keel_memory_open(T(other_path), one, NULL, &mem), KEEL_OK);
    keel_session_ref at = ref("acme", "alice", "r1");
    int64_t id = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_RC(keel_memory_append(mem, &at, T("user"), T("rotate me"), NULL, 0, -1, &id), KEEL_OK);
    }
    CHECK_RC(keel_memory_retire_key(mem, 7), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("key 7 is not in the keyring");
    CHECK_RC(keel_memory_retire_key(mem, 1), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("primary");
    CHECK_RC(keel_memory_retire_key(NULL, 1), KEEL_ERR_NULL_ARG);
    keel_memory_free(mem);
    keel_keyring_free(one);
    remove_db(other_path);

    /* A full rotation: key 1, then keys 1 and 2 with 2 primary, rotate, retire 1. */
    char k1text[KEEL_GENERATED_KEY_LEN + 1];
    CHECK_RC(keel_keyring_generate_key(k1text, sizeof k1text, &len), KEEL_OK);
    char ring_text[256];
    snprintf(ring_text, sizeof ring_text, "1:%s", k1text);
    CHECK_RC(keel_keyring_parse(T(ring_text), &one), KEEL_OK);
    CHECK_RC(keel_memory_open(T(other_path), one, NULL, &mem), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_RC(keel_memory_append(mem, &at, T("user"), T("rotate me"), NULL, 0, -1, &id), KEEL_OK);
    }
    char k2[KEEL_GENERATED_KEY_LEN + 1];
    CHECK_RC(keel_keyring_generate_key(k2, sizeof k2, &len), KEEL_OK);
    snprintf(ring_text, sizeof ring_text, "1:%s\n2:%s\n", k1text, k2);
    keel_keyring *both = NULL;
    CHECK_RC(keel_keyring_parse(T(ring_text), &both), KEEL_OK);
    memset(ring_text, 0, sizeof ring_text);
    memset(k1text, 0, sizeof k1text);
    memset(k2, 0, sizeof k2);
    CHECK_RC(keel_memory_set_keyring(mem, both), KEEL_OK);
    CHECK_RC(keel_memory_set_keyring(mem, NULL), KEEL_ERR_NULL_ARG);
    CHECK_RC(keel_memory_retire_key(mem, 1), KEEL_ERR_CRYPTO_KEY_IN_USE);
    CHECK_MESSAGE("still used by");
    uint64_t rotated = 0, total = 0;
    CHECK_RC(keel_memory_rotate(mem, 0, &rotated), KEEL_ERR_INVALID_ARGUMENT);
    do {
        CHECK_RC(keel_memory_rotate(mem, 2, &rotated), KEEL_OK);
        total += rotated;
    } while (rotated > 0);
    CHECK(total == 3);
    CHECK_RC(keel_memory_retire_key(mem, 2), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    CHECK_MESSAGE("primary");
    CHECK_RC(keel_memory_retire_key(mem, 1), KEEL_OK);
    CHECK_RC(keel_memory_retire_key(mem, 1), KEEL_ERR_CRYPTO_INVALID_KEYRING);
    keel_keyring_free(one);
    keel_keyring_free(both);

    /* The database edited without the keyring: a message's role, then the session's owner. */
    keel_messages *msgs = NULL;
    CHECK_RC(keel_memory_history(mem, &at, 10, 0, &msgs), KEEL_OK);
    keel_messages_free(msgs);
    msgs = NULL;
    edit_database(other_path, "UPDATE memory_messages SET role = 'system' WHERE id = 2");
    CHECK_RC(keel_memory_history(mem, &at, 10, 0, &msgs), KEEL_ERR_MEMORY_TAMPERED);
    CHECK(msgs == NULL);
    CHECK_MESSAGE("message 2 failed its integrity check");
    edit_database(other_path,
                  "UPDATE memory_messages SET role = 'user' WHERE id = 2;"
                  "UPDATE memory_sessions SET user_id = 'mallory'");
    keel_session_ref mallory = ref("acme", "mallory", "r1");
    CHECK_RC(keel_memory_window(mem, &mallory, 100, &msgs), KEEL_ERR_MEMORY_TAMPERED);
    CHECK_MESSAGE("session failed its integrity check");
    keel_memory_free(mem);
    remove_db(other_path);
}

static void test_delete_user_and_purge(keel_memory *mem) {
    uint64_t n = 99;
    CHECK_RC(keel_memory_purge_idle(mem, 3600 * 1000, &n), KEEL_OK);
    CHECK(n == 0);
    CHECK_RC(keel_memory_delete_user(mem, T("acme"), T("alice"), &n), KEEL_OK);
    CHECK(n == 1);
    CHECK_RC(keel_memory_delete_user(mem, T("acme"), T("alice"), &n), KEEL_OK);
    CHECK(n == 0);
    struct timespec ts = {0, 5000000L}; /* the store's clock is the wall clock, in ms */
    nanosleep(&ts, NULL);
    CHECK_RC(keel_memory_purge_idle(mem, 0, &n), KEEL_OK);
    CHECK(n == 1); /* globex's session */
    keel_memory_free(NULL);
}

int main(void) {
    if (mkdtemp(db_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db_path, sizeof db_path, "%s/memory.db", db_dir);

    test_keyring();
    keel_keyring *ring = generated_keyring(1);
    keel_memory *mem = open_memory(ring, NULL);
    /* The memory keeps its own reference to the keys. */
    keel_keyring_free(ring);
    test_append_history_window(mem);
    test_sessions_export_delete(mem);
    test_isolation(mem);
    test_bad_input(mem);
    test_wrong_key();
    test_mistakes();
    test_delete_user_and_purge(mem);
    keel_memory_free(mem);

    const char *suffixes[] = {"", "-wal", "-shm", "-small", "-small-wal", "-small-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s%s", db_path, suffixes[i]);
        unlink(path);
    }
    rmdir(db_dir);
    CHECK_DONE();
}
