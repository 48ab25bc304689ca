/*
 * The engine from C: opened from a TOML file plus KEEL_* variables, accessors that share the
 * engine's objects (one memory, one registry, one limiter budget, one cache), handles that
 * outlive the engine, and configuration errors with codes and messages naming field and value.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static int message_has(const char *needle) {
    return strstr(keel_last_error_message(), needle) != NULL;
}

int main(void) {
    char dir[64], db[128], wal[140], shm[140], conf[128], bad[128];
    snprintf(dir, sizeof dir, "/tmp/keel-c-engine-%d", (int)getpid());
    snprintf(db, sizeof db, "%s.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", db);
    snprintf(shm, sizeof shm, "%s-shm", db);
    snprintf(conf, sizeof conf, "%s.toml", dir);
    snprintf(bad, sizeof bad, "%s-bad.toml", dir);
    unlink(db);

    /* The keyring comes from KEEL_KEYRING, as in production. */
    char key[KEEL_GENERATED_KEY_LEN + 1];
    size_t key_len = 0;
    CHECK_RC(keel_keyring_generate_key(key, sizeof key, &key_len), KEEL_OK);
    char ring[KEEL_GENERATED_KEY_LEN + 8];
    snprintf(ring, sizeof ring, "1:%s", key);
    CHECK(setenv("KEEL_KEYRING", ring, 1) == 0);

    char text[512];
    snprintf(text, sizeof text,
             "[database]\nurl = \"sqlite://%s\"\n\n"
             "[ratelimit.per_ip]\nlimit = 2\nwindow = 60\n\n"
             "[cache.answers]\nmax_entries = 16\n",
             db);
    write_file(conf, text);
    /* The environment overrides the file field by field. */
    CHECK(setenv("KEEL_RATELIMIT__PER_IP__LIMIT", "3", 1) == 0);

    keel_engine *engine = NULL;
    CHECK_RC(keel_engine_open(S(conf), &engine), KEEL_OK);

    /* Memory: two handles, one memory. */
    keel_memory *m1 = NULL, *m2 = NULL;
    CHECK_RC(keel_engine_memory(engine, &m1), KEEL_OK);
    CHECK_RC(keel_engine_memory(engine, &m2), KEEL_OK);
    keel_session_ref at = {S("acme"), S("alice"), S("s1")};
    int64_t msg_id = 0;
    CHECK_RC(keel_memory_append(m1, &at, S("user"), S("hello"), NULL, 0, -1, &msg_id), KEEL_OK);
    keel_messages *hist = NULL;
    CHECK_RC(keel_memory_history(m2, &at, 10, 0, &hist), KEEL_OK);
    CHECK(keel_messages_count(hist) == 1);
    keel_messages_free(hist);

    /* API keys with the audit log, on the same database. */
    keel_apikeys *keys = NULL;
    CHECK_RC(keel_engine_apikeys(engine, &keys), KEEL_OK);
    char api_key[KEEL_API_KEY_BUFFER_SIZE];
    size_t api_key_len = 0;
    int64_t api_key_id = 0;
    CHECK_RC(keel_apikeys_create(keys, S("admin"), S("acme"), S("app"), S("live"), S(""), 0,
                                 api_key, sizeof api_key, &api_key_len, &api_key_id),
             KEEL_OK);
    keel_identity *id = NULL;
    CHECK_RC(keel_apikeys_verify(keys, api_key, api_key_len, &id), KEEL_OK);
    keel_identity_free(id);
    uint64_t entries = 0;
    CHECK_RC(keel_apikeys_audit_verify(keys, &entries), KEEL_OK);
    CHECK(entries == 1);

    /* Rate limiter: two handles count against one budget (limit 3 from the environment). */
    keel_ratelimiter *l1 = NULL, *l2 = NULL;
    CHECK_RC(keel_engine_ratelimiter(engine, S("per_ip"), &l1), KEEL_OK);
    CHECK_RC(keel_engine_ratelimiter(engine, S("per_ip"), &l2), KEEL_OK);
    keel_decision d;
    CHECK_RC(keel_ratelimiter_check(l1, S("203.0.113.7"), 3, &d), KEEL_OK);
    CHECK(d.allowed && d.limit == 3);
    CHECK_RC(keel_ratelimiter_check(l2, S("203.0.113.7"), 1, &d), KEEL_OK);
    CHECK(!d.allowed);
    keel_ratelimiter *none = (keel_ratelimiter *)&d;
    CHECK_RC(keel_engine_ratelimiter(engine, S("per_user"), &none),
             KEEL_ERR_CONFIG_UNKNOWN_NAME);
    CHECK(none == (keel_ratelimiter *)&d); /* untouched on failure */
    CHECK(message_has("per_user") && message_has("per_ip"));

    /* Cache: shared between handles. */
    keel_cache *c1 = NULL, *c2 = NULL;
    CHECK_RC(keel_engine_cache(engine, S("answers"), &c1), KEEL_OK);
    CHECK_RC(keel_engine_cache(engine, S("answers"), &c2), KEEL_OK);
    CHECK_RC(keel_cache_set(c1, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0), KEEL_OK);
    keel_bytes *v = NULL;
    CHECK_RC(keel_cache_get(c2, (const uint8_t *)"k", 1, &v), KEEL_OK);
    CHECK(keel_bytes_len(v) == 1 && keel_bytes_data(v)[0] == 'v');
    keel_bytes_free(v);
    keel_cache *no_cache = NULL;
    CHECK_RC(keel_engine_cache(engine, S("nope"), &no_cache), KEEL_ERR_CONFIG_UNKNOWN_NAME);

    /* Retrieval: an in-memory BM25 index; no embedder configured is a typed error. */
    keel_bm25 *bm25 = NULL;
    CHECK_RC(keel_engine_bm25(engine, &bm25), KEEL_OK);
    keel_bm25_free(bm25);
    keel_embedder *emb = NULL;
    CHECK_RC(keel_engine_embedder(engine, &emb), KEEL_ERR_CONFIG_MISSING);
    CHECK(message_has("retrieval.embedder"));

    /* Handles outlive the engine. */
    keel_engine_free(engine);
    keel_engine_free(NULL);
    CHECK_RC(keel_memory_history(m1, &at, 10, 0, &hist), KEEL_OK);
    CHECK(keel_messages_count(hist) == 1);
    keel_messages_free(hist);
    CHECK_RC(keel_ratelimiter_check(l1, S("203.0.113.7"), 1, &d), KEEL_OK);
    CHECK(!d.allowed);
    keel_memory_free(m1);
    keel_memory_free(m2);
    keel_apikeys_free(keys);
    keel_ratelimiter_free(l1);
    keel_ratelimiter_free(l2);
    keel_cache_free(c1);
    keel_cache_free(c2);
    unsetenv("KEEL_RATELIMIT__PER_IP__LIMIT");

    /* Configuration errors: code + message naming field and value. */
    keel_engine *e = NULL;
    write_file(bad, "[database]\nurl = \"sqlite:///tmp/x.db\"\n[ratelimit.per_ip]\nlimit = 0\n"
                    "window = 60\n");
    CHECK_RC(keel_engine_open(S(bad), &e), KEEL_ERR_CONFIG_INVALID);
    CHECK(message_has("ratelimit.per_ip.limit = 0"));
    write_file(bad, "[database]\nulr = \"sqlite:///tmp/x.db\"\n");
    CHECK_RC(keel_engine_open(S(bad), &e), KEEL_ERR_CONFIG_PARSE);
    CHECK(message_has("ulr"));
    write_file(bad, "[database]\nurl = \"redis://:hunter2@db/0\"\n");
    CHECK_RC(keel_engine_open(S(bad), &e), KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE);
    CHECK(message_has("redis") && !message_has("hunter2"));
    CHECK(e == NULL);
    /* PostgreSQL: a server that cannot be reached (port 1 on loopback: nothing listens) is a
     * store error naming the URL without its password. */
    write_file(bad, "[database]\nurl = \"postgres://app:hunter2@127.0.0.1:1/keel\"\n"
                    "connect_timeout = 0.3\n");
    CHECK_RC(keel_engine_open(S(bad), &e), KEEL_ERR_STORE_UNAVAILABLE);
    CHECK(message_has("postgres://app:***@127.0.0.1:1/keel") && !message_has("hunter2"));
    CHECK(e == NULL);
    write_file(bad, "[database]\nurl = \"postgres://app:hunter2@127.0.0.1:1/keel\"\n"
                    "synchronous = \"full\"\n");
    CHECK_RC(keel_engine_open(S(bad), &e), KEEL_ERR_CONFIG_INVALID);
    CHECK(message_has("database.synchronous") && !message_has("hunter2"));
    CHECK(strcmp(keel_result_name(KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE),
                 "KEEL_ERR_CONFIG_BACKEND_UNAVAILABLE") == 0);

    /* No file: the environment alone; without a database URL that is a typed error. */
    unsetenv("KEEL_DATABASE_URL");
    CHECK_RC(keel_engine_open(NULL, 0, &e), KEEL_ERR_CONFIG_MISSING);
    CHECK(message_has("database.url"));
    char url[160];
    snprintf(url, sizeof url, "sqlite://%s", db);
    CHECK(setenv("KEEL_DATABASE_URL", url, 1) == 0);
    CHECK_RC(keel_engine_open(NULL, 0, &e), KEEL_OK);
    keel_engine_free(e);
    CHECK_RC(keel_engine_open(NULL, 0, NULL), KEEL_ERR_NULL_ARG);
    unsetenv("KEEL_KEYRING");
    CHECK_RC(keel_engine_open(NULL, 0, &e), KEEL_ERR_CRYPTO_KEYRING_SOURCE);
    CHECK(message_has("KEEL_KEYRING"));

    unlink(db);
    unlink(wal);
    unlink(shm);
    unlink(conf);
    unlink(bad);
    CHECK_DONE();
}
