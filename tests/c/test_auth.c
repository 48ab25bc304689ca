/*
 * API keys and the audit log from C: create, verify (identity accessors), typed refusals,
 * rotation with a grace period, revocation, audit verification, bad input.
 */
#define _POSIX_C_SOURCE 200809L

#include <string.h>
#include <unistd.h>

#include "check.h"

#define S(str) (str), strlen(str)

static keel_keyring *make_keyring(void) {
    uint8_t key[64];
    for (size_t i = 0; i < sizeof key; i++) key[i] = (uint8_t)(i * 7 + 1);
    keel_keyring *ring = NULL;
    CHECK_RC(keel_keyring_from_key(1, key, sizeof key, &ring), KEEL_OK);
    return ring;
}

int main(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/keel-c-auth-%d.db", (int)getpid());
    unlink(path);
    keel_keyring *ring = make_keyring();

    keel_apikeys *keys = NULL;
    CHECK_RC(keel_apikeys_open(S(path), ring, 1000, true, &keys), KEEL_OK);
    keel_keyring_free(ring); /* the registry keeps what it needs */

    char key[KEEL_API_KEY_BUFFER_SIZE];
    size_t key_len = 0;
    int64_t key_id = 0;
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("mobile app"), S("live"),
                                 S("chat:write memory:read"), 0, key, sizeof key, &key_len,
                                 &key_id),
             KEEL_OK);
    CHECK(key_len == strlen(key) && strncmp(key, "keel_live_", 10) == 0 && key_id > 0);

    keel_identity *id = NULL;
    CHECK_RC(keel_apikeys_verify(keys, key, key_len, &id), KEEL_OK);
    CHECK(keel_identity_key_id(id) == key_id);
    size_t tenant_len = 0;
    const char *tenant = keel_identity_tenant(id, &tenant_len);
    CHECK(tenant_len == 4 && memcmp(tenant, "acme", 4) == 0);
    CHECK(keel_identity_has_scope(id, S("chat:write")));
    CHECK(!keel_identity_has_scope(id, S("admin")));
    keel_identity_free(id);
    keel_identity_free(NULL);
    CHECK(keel_identity_key_id(NULL) == 0);

    /* Refusals are typed, and messages never contain the key. */
    keel_identity *untouched = (keel_identity *)&id;
    keel_identity *out = untouched;
    CHECK_RC(keel_apikeys_verify(keys, S("not-a-key"), &out), KEEL_ERR_AUTH_MALFORMED);
    char typo[KEEL_API_KEY_BUFFER_SIZE];
    memcpy(typo, key, key_len + 1);
    typo[12] = typo[12] == 'a' ? 'b' : 'a';
    CHECK_RC(keel_apikeys_verify(keys, typo, key_len, &out), KEEL_ERR_AUTH_BAD_CHECKSUM);
    CHECK(strstr(keel_last_error_message(), typo + 10) == NULL);
    CHECK_RC(keel_apikeys_verify(keys, "\xff\xfe", 2, &out), KEEL_ERR_INVALID_UTF8);
    CHECK(out == untouched);

    /* Rotation: both keys work during the grace period. */
    char next[KEEL_API_KEY_BUFFER_SIZE];
    size_t next_len = 0;
    int64_t next_id = 0;
    CHECK_RC(keel_apikeys_rotate(keys, S("alice"), S("acme"), key_id, 60000, next, sizeof next,
                                 &next_len, &next_id),
             KEEL_OK);
    CHECK(next_id != key_id && strcmp(next, key) != 0);
    CHECK_RC(keel_apikeys_verify(keys, key, key_len, &id), KEEL_OK);
    keel_identity_free(id);
    CHECK_RC(keel_apikeys_verify(keys, next, next_len, &id), KEEL_OK);
    keel_identity_free(id);

    /* Revocation is immediate in this process. */
    CHECK_RC(keel_apikeys_revoke(keys, S("bob"), S("acme"), next_id), KEEL_OK);
    CHECK_RC(keel_apikeys_verify(keys, next, next_len, &out), KEEL_ERR_AUTH_REVOKED);
    CHECK_RC(keel_apikeys_revoke(keys, S("bob"), S("other"), key_id), KEEL_ERR_AUTH_UNKNOWN_KEY);

    /* Bad input. */
    char small[8];
    size_t small_len = 0;
    int64_t small_id = 0;
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("k"), S("PROD"), S(""), 0, key,
                                 sizeof key, &key_len, &key_id),
             KEEL_ERR_AUTH_INVALID_ENV);
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("k"), S("live"), S(""), 0, small,
                                 sizeof small, &small_len, &small_id),
             KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S(""), S("k"), S("live"), S(""), 0, key,
                                 sizeof key, &key_len, &key_id),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK_RC(keel_apikeys_create(NULL, S("alice"), S("acme"), S("k"), S("live"), S(""), 0, key,
                                 sizeof key, &key_len, &key_id),
             KEEL_ERR_NULL_ARG);

    /* The audit log: create, rotate, revoke, one refused revoke, one refused verify. */
    uint64_t entries = 0;
    CHECK_RC(keel_apikeys_audit_verify(keys, &entries), KEEL_OK);
    CHECK(entries == 5);

    int64_t seq = 0;
    CHECK_RC(keel_apikeys_audit_append(keys, S("deploy-bot"), S("config.change"), S("limits"),
                                       S("success"), S("req-42"), &seq),
             KEEL_OK);
    CHECK(seq == 6);
    CHECK_RC(keel_apikeys_audit_append(keys, S("bad\nactor"), S("x"), S(""), S("success"), NULL, 0,
                                       &seq),
             KEEL_ERR_INVALID_ARGUMENT);
    keel_audit_entries *found = NULL;
    CHECK_RC(keel_apikeys_audit_query(keys, S("bob"), 0, 0, 0, &found), KEEL_OK);
    CHECK(keel_audit_entries_count(found) == 2); /* one revoke, one refused revoke */
    size_t len = 0;
    const char *action = keel_audit_entry_field(found, 0, KEEL_AUDIT_ACTION, &len);
    CHECK(len == 14 && memcmp(action, "api_key.revoke", 14) == 0);
    CHECK(keel_audit_entry_field(found, 0, KEEL_AUDIT_REQUEST_ID, &len) == NULL && len == 0);
    CHECK(keel_audit_entry_field(found, 9, KEEL_AUDIT_ACTOR, &len) == NULL);
    int64_t entry_seq = 0, at_ms = 0;
    CHECK_RC(keel_audit_entry_meta(found, 1, &entry_seq, &at_ms), KEEL_OK);
    CHECK(entry_seq == 5 && at_ms > 1600000000000LL); /* the refused revoke */
    CHECK_RC(keel_audit_entry_meta(found, 2, &entry_seq, &at_ms), KEEL_ERR_NOT_FOUND);
    /* The list getters of the common shape: plural name, NULL skips a field, out of range is an
     * invalid argument; the older names above keep their behaviour. */
    int64_t seq_again = 0;
    CHECK_RC(keel_audit_entries_get(found, 1, &seq_again, NULL), KEEL_OK);
    CHECK(seq_again == entry_seq);
    CHECK_RC(keel_audit_entries_get(found, 2, &seq_again, &at_ms), KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "index 2") != NULL);
    action = keel_audit_entries_text(found, 0, KEEL_AUDIT_ACTION, &len);
    CHECK(len == 14 && memcmp(action, "api_key.revoke", 14) == 0);
    keel_audit_entries_free(found);
    CHECK_RC(keel_apikeys_audit_query(keys, NULL, 0, 0, 0, 0, &found), KEEL_OK);
    CHECK(keel_audit_entries_count(found) == 6);
    const char *req = keel_audit_entry_field(found, 5, KEEL_AUDIT_REQUEST_ID, &len);
    CHECK(len == 6 && memcmp(req, "req-42", 6) == 0);
    keel_audit_entries_free(found);
    keel_audit_entries_free(NULL);
    CHECK_RC(keel_apikeys_audit_verify(keys, &entries), KEEL_OK);
    CHECK(entries == 6);

    /* Environments: a default registry is a live one; a test key is refused with a reason that
     * names both environments, never the key. */
    char test_key[KEEL_API_KEY_BUFFER_SIZE];
    size_t test_len = 0;
    int64_t test_id = 0;
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("ci"), S("test"), S("chat:write"),
                                 0, test_key, sizeof test_key, &test_len, &test_id),
             KEEL_OK);
    CHECK(strncmp(test_key, "keel_test_", 10) == 0);
    CHECK_RC(keel_apikeys_verify(keys, test_key, test_len, &out), KEEL_ERR_AUTH_WRONG_ENVIRONMENT);
    CHECK(strstr(keel_last_error_message(), "\"test\"") != NULL);
    CHECK(strstr(keel_last_error_message(), "live") != NULL);
    CHECK(strstr(keel_last_error_message(), test_key + 10) == NULL);
    CHECK(out == untouched);
    keel_keyring *ring2 = make_keyring();
    keel_apikeys *staging = NULL;
    CHECK_RC(keel_apikeys_open_env(S(path), ring2, 1000, false, S("test staging"), &staging),
             KEEL_OK);
    CHECK_RC(keel_apikeys_verify(staging, test_key, test_len, &id), KEEL_OK);
    CHECK(keel_identity_key_id(id) == test_id);
    keel_identity_free(id);
    CHECK_RC(keel_apikeys_verify(staging, key, key_len, &out), KEEL_ERR_AUTH_WRONG_ENVIRONMENT);
    keel_apikeys_free(staging);

    /* Mistakes and their messages. */
    keel_apikeys *never = NULL;
    CHECK_RC(keel_apikeys_open_env(S(path), ring2, 1000, false, S("Live"), &never),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "accepted_envs") != NULL && never == NULL);
    CHECK_RC(keel_apikeys_open_env(S(path), ring2, 1000, false, NULL, 3, &never),
             KEEL_ERR_NULL_ARG);
    CHECK(strstr(keel_last_error_message(), "accepted_envs") != NULL && never == NULL);
    CHECK_RC(keel_apikeys_open_env(S(path), NULL, 1000, false, S("live"), &never),
             KEEL_ERR_NULL_ARG);
    CHECK(strstr(keel_last_error_message(), "keyring") != NULL && never == NULL);
    keel_keyring_free(ring2);
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("k"), S("live"), S("chat:\x01"),
                                 0, key, sizeof key, &key_len, &key_id),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "scope") != NULL);
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("line\nbreak"), S("live"), S(""),
                                 0, key, sizeof key, &key_len, &key_id),
             KEEL_ERR_INVALID_ARGUMENT);
    CHECK(strstr(keel_last_error_message(), "name") != NULL);
    CHECK_RC(keel_apikeys_create(keys, S("alice"), S("acme"), S("k"), S("live"), S(""), 0, key, 8,
                                 &key_len, &key_id),
             KEEL_ERR_BUFFER_TOO_SMALL);
    CHECK(strstr(keel_last_error_message(), "out_key_cap") != NULL);
    CHECK_RC(keel_apikeys_rotate(keys, S("alice"), S("acme"), 999999, 0, key, sizeof key,
                                 &key_len, &key_id),
             KEEL_ERR_AUTH_UNKNOWN_KEY);
    CHECK_RC(keel_apikeys_verify(keys, S("keel_live_short"), &out), KEEL_ERR_AUTH_MALFORMED);
    CHECK(strstr(keel_last_error_message(), "malformed") != NULL);

    keel_apikeys_free(keys);
    keel_apikeys_free(NULL);
    unlink(path);
    char side[160];
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    CHECK_DONE();
}
