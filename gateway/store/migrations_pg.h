/* The PostgreSQL schema as ordered migrations: entry i brings the schema to version i + 1. Never edit a released entry; append. */
#ifndef TG_MIGRATIONS_PG_H
#define TG_MIGRATIONS_PG_H

/*
 * The twin of migrations_sqlite.h, table for table and CHECK for CHECK:
 *  - amounts (uint256) are 32-byte big-endian BYTEA: PostgreSQL compares bytea
 *    byte-wise (then by length), so equal-length big-endian strings compare as
 *    the numbers they encode and CHECK (charged <= charge_cap) is exact; an
 *    octet_length CHECK keeps every amount at 32 bytes;
 *  - addresses are 20-byte BYTEA, hashes and ids 32-byte BYTEA, voucher
 *    signatures 1..1024 bytes;
 *  - every integer is BIGINT (the backend reads results in binary and checks
 *    each column's type and size), times are Unix milliseconds except on-chain
 *    fields in seconds.
 */
static const char *const pg_migrations[] = {
    /* 1: channels, charges, running totals, exact payments, payment ids, pass usage */
    "CREATE TABLE channels ("
    " id bytea PRIMARY KEY CHECK (octet_length(id) = 32),"
    " chain_id bigint NOT NULL CHECK (chain_id >= 0),"
    " contract bytea NOT NULL CHECK (octet_length(contract) = 20),"
    " payer bytea NOT NULL CHECK (octet_length(payer) = 20),"
    " payer_authorizer bytea NOT NULL CHECK (octet_length(payer_authorizer) = 20),"
    " receiver bytea NOT NULL CHECK (octet_length(receiver) = 20),"
    " receiver_authorizer bytea NOT NULL CHECK (octet_length(receiver_authorizer) = 20),"
    " token bytea NOT NULL CHECK (octet_length(token) = 20),"
    " withdraw_delay bigint NOT NULL CHECK (withdraw_delay >= 0),"
    " salt bytea NOT NULL CHECK (octet_length(salt) = 32),"
    " balance bytea NOT NULL CHECK (octet_length(balance) = 32),"
    " total_claimed bytea NOT NULL CHECK (octet_length(total_claimed) = 32),"
    " withdraw_requested_at bigint NOT NULL CHECK (withdraw_requested_at >= 0),"
    " refund_nonce bigint NOT NULL CHECK (refund_nonce >= 0),"
    " synced_block bigint NOT NULL CHECK (synced_block >= 0),"
    " status bigint NOT NULL CHECK (status IN (0, 1, 2)),"
    " charged bytea NOT NULL CHECK (octet_length(charged) = 32),"
    " ceiling bytea NOT NULL CHECK (octet_length(ceiling) = 32),"
    " ceiling_sig bytea CHECK (ceiling_sig IS NULL OR octet_length(ceiling_sig) BETWEEN 1 AND 1024),"
    " credit_limit bytea NOT NULL CHECK (octet_length(credit_limit) = 32),"
    " charge_cap bytea NOT NULL CHECK (octet_length(charge_cap) = 32),"
    " charge_count bigint NOT NULL CHECK (charge_count >= 0),"
    " first_unclaimed_at bigint NOT NULL,"
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL,"
    " CONSTRAINT channels_money CHECK (charged <= charge_cap));\n"
    "CREATE INDEX channels_payer ON channels (payer);\n"
    "CREATE INDEX channels_unsettled ON channels (first_unclaimed_at)"
    " WHERE charged > total_claimed;\n"
    "CREATE TABLE charges ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " request_id text NOT NULL UNIQUE CHECK (octet_length(request_id) BETWEEN 1 AND 128),"
    " payer bytea NOT NULL CHECK (octet_length(payer) = 20),"
    " scheme bigint NOT NULL CHECK (scheme IN (0, 1, 2)),"
    " route text NOT NULL CHECK (octet_length(route) <= 128),"
    " model text NOT NULL CHECK (octet_length(model) <= 128),"
    " input_tokens bigint NOT NULL CHECK (input_tokens >= 0),"
    " output_tokens bigint NOT NULL CHECK (output_tokens >= 0),"
    " amount bytea NOT NULL CHECK (octet_length(amount) = 32),"
    " channel_id bytea REFERENCES channels (id),"
    " cumulative_after bytea CHECK (cumulative_after IS NULL OR octet_length(cumulative_after) = 32),"
    " created_at bigint NOT NULL,"
    " settled bigint NOT NULL DEFAULT 0 CHECK (settled IN (0, 1)),"
    " CHECK (scheme <> 1 OR channel_id IS NOT NULL),"
    " CHECK ((channel_id IS NULL) = (cumulative_after IS NULL)));\n"
    "CREATE INDEX charges_channel ON charges (channel_id, id);\n"
    "CREATE INDEX charges_payer ON charges (payer, id);\n"
    "CREATE TABLE payer_totals ("
    " payer bytea NOT NULL CHECK (octet_length(payer) = 20),"
    " scheme bigint NOT NULL CHECK (scheme IN (0, 1, 2)),"
    " charged bytea NOT NULL CHECK (octet_length(charged) = 32),"
    " count bigint NOT NULL CHECK (count >= 0),"
    " PRIMARY KEY (payer, scheme));\n"
    "CREATE TABLE exact_payments ("
    " token bytea NOT NULL CHECK (octet_length(token) = 20),"
    " nonce bytea NOT NULL CHECK (octet_length(nonce) = 32),"
    " payer bytea NOT NULL CHECK (octet_length(payer) = 20),"
    " to_addr bytea NOT NULL CHECK (octet_length(to_addr) = 20),"
    " amount bytea NOT NULL CHECK (octet_length(amount) = 32),"
    " valid_after bigint NOT NULL CHECK (valid_after >= 0),"
    " valid_before bigint NOT NULL CHECK (valid_before >= 0),"
    " tx_hash bytea CHECK (tx_hash IS NULL OR octet_length(tx_hash) = 32),"
    " status bigint NOT NULL CHECK (status BETWEEN 0 AND 4),"
    " request_id text NOT NULL CHECK (octet_length(request_id) <= 128),"
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL,"
    " PRIMARY KEY (token, nonce));\n"
    "CREATE INDEX exact_status ON exact_payments (status);\n"
    "CREATE TABLE payment_ids ("
    " id text PRIMARY KEY CHECK (octet_length(id) BETWEEN 16 AND 128),"
    " payer bytea NOT NULL CHECK (octet_length(payer) = 20),"
    " request_hash bytea NOT NULL CHECK (octet_length(request_hash) = 32),"
    " status bigint NOT NULL,"
    " response_header text NOT NULL CHECK (octet_length(response_header) <= 2048),"
    " request_id text NOT NULL CHECK (octet_length(request_id) <= 128),"
    " created_at bigint NOT NULL);\n"
    "CREATE TABLE pass_usage ("
    " pass_id bytea NOT NULL CHECK (octet_length(pass_id) = 32),"
    " holder bytea NOT NULL CHECK (octet_length(holder) = 20),"
    " period_start bigint NOT NULL,"
    " calls bigint NOT NULL CHECK (calls >= 0),"
    " tokens bigint NOT NULL CHECK (tokens >= 0),"
    " updated_at bigint NOT NULL,"
    " PRIMARY KEY (pass_id, holder, period_start));\n",

    /* 2: the settlement journal and leases */
    "CREATE TABLE settle_runs ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " started_at bigint NOT NULL,"
    " finished_at bigint NOT NULL,"
    " status bigint NOT NULL CHECK (status IN (0, 1, 2)));\n"
    "CREATE INDEX settle_runs_status ON settle_runs (status, id);\n"
    "CREATE TABLE settle_items ("
    " run_id bigint NOT NULL REFERENCES settle_runs (id),"
    " channel_id bytea NOT NULL REFERENCES channels (id),"
    " amount bytea NOT NULL CHECK (octet_length(amount) = 32),"
    " through_charge bigint NOT NULL,"
    " step bigint NOT NULL CHECK (step BETWEEN 0 AND 6),"
    " tx_hash bytea CHECK (tx_hash IS NULL OR octet_length(tx_hash) = 32),"
    " error text NOT NULL CHECK (octet_length(error) <= 256),"
    " updated_at bigint NOT NULL,"
    " PRIMARY KEY (run_id, channel_id));\n"
    "CREATE TABLE leases ("
    " name text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 64),"
    " holder text NOT NULL CHECK (octet_length(holder) BETWEEN 1 AND 64),"
    " expires_at bigint NOT NULL);\n",

    /* 3: sign-in nonces and sessions (access passes) */
    "CREATE TABLE auth_nonces ("
    " nonce text PRIMARY KEY CHECK (octet_length(nonce) BETWEEN 8 AND 64),"
    " expires_at bigint NOT NULL,"
    " used_at bigint NOT NULL DEFAULT 0);\n"
    "CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);\n"
    "CREATE TABLE sessions ("
    " token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),"
    " address bytea NOT NULL CHECK (octet_length(address) = 20),"
    " created_at bigint NOT NULL,"
    " expires_at bigint NOT NULL);\n"
    "CREATE INDEX sessions_expiry ON sessions (expires_at);\n",
    /* 4: shared admission across instances: a hold per call in flight, and their running
     * total on the channel (the store's twin of the ledger's in-memory reservations) */
    "ALTER TABLE channels ADD COLUMN reserved bytea NOT NULL"
    " DEFAULT decode(repeat('00', 32), 'hex') CHECK (octet_length(reserved) = 32);\n"
    "CREATE TABLE reservations ("
    " request_id text PRIMARY KEY CHECK (octet_length(request_id) BETWEEN 1 AND 128),"
    " channel_id bytea NOT NULL REFERENCES channels (id),"
    " instance text NOT NULL CHECK (octet_length(instance) BETWEEN 1 AND 48),"
    " amount bytea NOT NULL CHECK (octet_length(amount) = 32),"
    " expires_at bigint NOT NULL,"
    " created_at bigint NOT NULL);\n"
    "CREATE INDEX reservations_channel ON reservations (channel_id, expires_at);\n",

    /* 5: exact payments keyed by (token, payer, nonce): EIP-3009's authorizationState is per
     * authorizer, so two payers may use the same nonce. */
    "ALTER TABLE exact_payments DROP CONSTRAINT exact_payments_pkey,"
    " ADD PRIMARY KEY (token, payer, nonce);\n",
};

#define PG_SCHEMA_LATEST ((int)(sizeof(pg_migrations) / sizeof(pg_migrations[0])))

#endif
