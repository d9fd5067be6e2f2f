/* The SQLite schema as ordered migrations: entry i brings the schema to version i + 1. Never edit a released entry; append. */
#ifndef TG_MIGRATIONS_SQLITE_H
#define TG_MIGRATIONS_SQLITE_H

/*
 * Conventions (a PostgreSQL twin follows the same shapes, BYTEA for BLOB):
 *  - amounts (uint256) are 32-byte big-endian BLOBs: byte-wise comparison of
 *    equal-length big-endian strings is numeric comparison, in SQLite (memcmp
 *    on BLOBs) and PostgreSQL (bytea) alike, so CHECKs and WHERE clauses
 *    compare amounts exactly; sums are never asked of SQL (running totals);
 *  - addresses are 20-byte BLOBs, hashes and ids 32-byte BLOBs, voucher signatures
 *    1..1024 bytes (65 for an EOA; ERC-1271 wallets may send more);
 *  - times are Unix milliseconds (INTEGER), except on-chain fields in seconds.
 */
static const char *const sqlite_migrations[] = {
    /* 1: channels, charges, running totals, exact payments, payment ids, pass usage */
    "CREATE TABLE channels ("
    " id BLOB PRIMARY KEY CHECK (length(id) = 32),"
    " chain_id INTEGER NOT NULL CHECK (chain_id >= 0),"
    " contract BLOB NOT NULL CHECK (length(contract) = 20),"
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " payer_authorizer BLOB NOT NULL CHECK (length(payer_authorizer) = 20),"
    " receiver BLOB NOT NULL CHECK (length(receiver) = 20),"
    " receiver_authorizer BLOB NOT NULL CHECK (length(receiver_authorizer) = 20),"
    " token BLOB NOT NULL CHECK (length(token) = 20),"
    " withdraw_delay INTEGER NOT NULL CHECK (withdraw_delay >= 0),"
    " salt BLOB NOT NULL CHECK (length(salt) = 32),"
    " balance BLOB NOT NULL CHECK (length(balance) = 32),"
    " total_claimed BLOB NOT NULL CHECK (length(total_claimed) = 32),"
    " withdraw_requested_at INTEGER NOT NULL CHECK (withdraw_requested_at >= 0),"
    " refund_nonce INTEGER NOT NULL CHECK (refund_nonce >= 0),"
    " synced_block INTEGER NOT NULL CHECK (synced_block >= 0),"
    " status INTEGER NOT NULL CHECK (status IN (0, 1, 2)),"
    " charged BLOB NOT NULL CHECK (length(charged) = 32),"
    " ceiling BLOB NOT NULL CHECK (length(ceiling) = 32),"
    " ceiling_sig BLOB CHECK (ceiling_sig IS NULL OR length(ceiling_sig) BETWEEN 1 AND 1024),"
    " credit_limit BLOB NOT NULL CHECK (length(credit_limit) = 32),"
    /* ceiling + credit_limit (saturated at 2^256-1): what charged may reach */
    " charge_cap BLOB NOT NULL CHECK (length(charge_cap) = 32),"
    " charge_count INTEGER NOT NULL CHECK (charge_count >= 0),"
    " first_unclaimed_at INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    /* the money invariant, held by the database as well as by the code */
    " CHECK (charged <= charge_cap));\n"
    "CREATE INDEX channels_payer ON channels (payer);\n"
    "CREATE INDEX channels_unsettled ON channels (first_unclaimed_at)"
    " WHERE charged > total_claimed;\n"
    "CREATE TABLE charges ("
    " id INTEGER PRIMARY KEY,"
    " request_id TEXT NOT NULL UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),"
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " scheme INTEGER NOT NULL CHECK (scheme IN (0, 1, 2)),"
    " route TEXT NOT NULL CHECK (length(route) <= 128),"
    " model TEXT NOT NULL CHECK (length(model) <= 128),"
    " input_tokens INTEGER NOT NULL CHECK (input_tokens >= 0),"
    " output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),"
    " amount BLOB NOT NULL CHECK (length(amount) = 32),"
    " channel_id BLOB REFERENCES channels (id),"
    " cumulative_after BLOB CHECK (cumulative_after IS NULL OR length(cumulative_after) = 32),"
    " created_at INTEGER NOT NULL,"
    " settled INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1)),"
    " CHECK (scheme <> 1 OR channel_id IS NOT NULL),"
    " CHECK ((channel_id IS NULL) = (cumulative_after IS NULL)));\n"
    "CREATE INDEX charges_channel ON charges (channel_id, id);\n"
    "CREATE INDEX charges_payer ON charges (payer, id);\n"
    "CREATE TABLE payer_totals ("
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " scheme INTEGER NOT NULL CHECK (scheme IN (0, 1, 2)),"
    " charged BLOB NOT NULL CHECK (length(charged) = 32),"
    " count INTEGER NOT NULL CHECK (count >= 0),"
    " PRIMARY KEY (payer, scheme));\n"
    "CREATE TABLE exact_payments ("
    " token BLOB NOT NULL CHECK (length(token) = 20),"
    " nonce BLOB NOT NULL CHECK (length(nonce) = 32),"
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " to_addr BLOB NOT NULL CHECK (length(to_addr) = 20),"
    " amount BLOB NOT NULL CHECK (length(amount) = 32),"
    " valid_after INTEGER NOT NULL CHECK (valid_after >= 0),"
    " valid_before INTEGER NOT NULL CHECK (valid_before >= 0),"
    " tx_hash BLOB CHECK (tx_hash IS NULL OR length(tx_hash) = 32),"
    " status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 4),"
    " request_id TEXT NOT NULL CHECK (length(request_id) <= 128),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (token, nonce));\n"
    "CREATE INDEX exact_status ON exact_payments (status);\n"
    "CREATE TABLE payment_ids ("
    " id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 16 AND 128),"
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " request_hash BLOB NOT NULL CHECK (length(request_hash) = 32),"
    " status INTEGER NOT NULL,"
    " response_header TEXT NOT NULL CHECK (length(response_header) <= 2048),"
    " request_id TEXT NOT NULL CHECK (length(request_id) <= 128),"
    " created_at INTEGER NOT NULL);\n"
    "CREATE TABLE pass_usage ("
    " pass_id BLOB NOT NULL CHECK (length(pass_id) = 32),"
    " holder BLOB NOT NULL CHECK (length(holder) = 20),"
    " period_start INTEGER NOT NULL,"
    " calls INTEGER NOT NULL CHECK (calls >= 0),"
    " tokens INTEGER NOT NULL CHECK (tokens >= 0),"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (pass_id, holder, period_start));\n",

    /* 2: the settlement journal and leases */
    "CREATE TABLE settle_runs ("
    " id INTEGER PRIMARY KEY,"
    " started_at INTEGER NOT NULL,"
    " finished_at INTEGER NOT NULL,"
    " status INTEGER NOT NULL CHECK (status IN (0, 1, 2)));\n"
    "CREATE INDEX settle_runs_status ON settle_runs (status, id);\n"
    "CREATE TABLE settle_items ("
    " run_id INTEGER NOT NULL REFERENCES settle_runs (id),"
    " channel_id BLOB NOT NULL REFERENCES channels (id),"
    " amount BLOB NOT NULL CHECK (length(amount) = 32),"
    " through_charge INTEGER NOT NULL,"
    " step INTEGER NOT NULL CHECK (step BETWEEN 0 AND 6),"
    " tx_hash BLOB CHECK (tx_hash IS NULL OR length(tx_hash) = 32),"
    " error TEXT NOT NULL CHECK (length(error) <= 256),"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (run_id, channel_id));\n"
    "CREATE TABLE leases ("
    " name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),"
    " holder TEXT NOT NULL CHECK (length(holder) BETWEEN 1 AND 64),"
    " expires_at INTEGER NOT NULL);\n",

    /* 3: sign-in nonces and sessions (access passes) */
    "CREATE TABLE auth_nonces ("
    " nonce TEXT PRIMARY KEY CHECK (length(nonce) BETWEEN 8 AND 64),"
    " expires_at INTEGER NOT NULL,"
    " used_at INTEGER NOT NULL DEFAULT 0);\n"
    "CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);\n"
    "CREATE TABLE sessions ("
    " token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),"
    " address BLOB NOT NULL CHECK (length(address) = 20),"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL);\n"
    "CREATE INDEX sessions_expiry ON sessions (expires_at);\n",
    /* 4: shared admission across instances (used by the PostgreSQL backend only; kept here
     * so that both schemas stay twins with the same version numbers) */
    "ALTER TABLE channels ADD COLUMN reserved BLOB NOT NULL"
    " DEFAULT x'0000000000000000000000000000000000000000000000000000000000000000'"
    " CHECK (length(reserved) = 32);\n"
    "CREATE TABLE reservations ("
    " request_id TEXT PRIMARY KEY CHECK (length(request_id) BETWEEN 1 AND 128),"
    " channel_id BLOB NOT NULL REFERENCES channels (id),"
    " instance TEXT NOT NULL CHECK (length(instance) BETWEEN 1 AND 48),"
    " amount BLOB NOT NULL CHECK (length(amount) = 32),"
    " expires_at INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);\n"
    "CREATE INDEX reservations_channel ON reservations (channel_id, expires_at);\n",

    /* 5: exact payments keyed by (token, payer, nonce): EIP-3009's authorizationState is per
     * authorizer, so two payers may use the same nonce. SQLite cannot change a primary key in
     * place: the table is rebuilt, rows copied as they are. */
    "CREATE TABLE exact_payments_v5 ("
    " token BLOB NOT NULL CHECK (length(token) = 20),"
    " nonce BLOB NOT NULL CHECK (length(nonce) = 32),"
    " payer BLOB NOT NULL CHECK (length(payer) = 20),"
    " to_addr BLOB NOT NULL CHECK (length(to_addr) = 20),"
    " amount BLOB NOT NULL CHECK (length(amount) = 32),"
    " valid_after INTEGER NOT NULL CHECK (valid_after >= 0),"
    " valid_before INTEGER NOT NULL CHECK (valid_before >= 0),"
    " tx_hash BLOB CHECK (tx_hash IS NULL OR length(tx_hash) = 32),"
    " status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 4),"
    " request_id TEXT NOT NULL CHECK (length(request_id) <= 128),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (token, payer, nonce));\n"
    "INSERT INTO exact_payments_v5 (token, nonce, payer, to_addr, amount, valid_after,"
    " valid_before, tx_hash, status, request_id, created_at, updated_at)"
    " SELECT token, nonce, payer, to_addr, amount, valid_after, valid_before, tx_hash, status,"
    " request_id, created_at, updated_at FROM exact_payments;\n"
    "DROP TABLE exact_payments;\n"
    "ALTER TABLE exact_payments_v5 RENAME TO exact_payments;\n"
    "CREATE INDEX exact_status ON exact_payments (status);\n",
};

#define SQLITE_SCHEMA_LATEST ((int)(sizeof(sqlite_migrations) / sizeof(sqlite_migrations[0])))

#endif
