-- 0001: initial schema. Append-only: never edit a migration once it has landed;
-- add a new numbered file (to both sqlite/ and postgres/) instead.
-- Timestamps are unix microseconds (BIGINT); booleans are 0/1 (BIGINT);
-- lists and Hostinfo are JSON text. Keys are stored in their text form (nodekey:...).

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    display_name    TEXT    NOT NULL DEFAULT '',
    email           TEXT    NOT NULL DEFAULT '',
    provider        TEXT    NOT NULL DEFAULT '',
    provider_id     TEXT    NOT NULL DEFAULT '',
    profile_pic_url TEXT    NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);
CREATE UNIQUE INDEX users_provider_identity ON users (provider, provider_id) WHERE provider_id <> '';

CREATE TABLE pre_auth_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix      TEXT    NOT NULL UNIQUE,
    hash        TEXT    NOT NULL,
    user_id     BIGINT  REFERENCES users (id) ON DELETE CASCADE,
    reusable    BIGINT  NOT NULL DEFAULT 0,
    ephemeral   BIGINT  NOT NULL DEFAULT 0,
    used        BIGINT  NOT NULL DEFAULT 0,
    tags        TEXT    NOT NULL DEFAULT '[]',
    expiration  BIGINT,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX pre_auth_keys_user ON pre_auth_keys (user_id);

CREATE TABLE nodes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_key      TEXT    NOT NULL,
    node_key         TEXT    NOT NULL UNIQUE,
    disco_key        TEXT    NOT NULL DEFAULT '',
    ipv4             TEXT    UNIQUE,
    ipv6             TEXT    UNIQUE,
    hostname         TEXT    NOT NULL DEFAULT '',
    given_name       TEXT    NOT NULL UNIQUE,
    user_id          BIGINT  REFERENCES users (id) ON DELETE RESTRICT,
    tags             TEXT    NOT NULL DEFAULT '[]',
    hostinfo         TEXT,
    home_derp        BIGINT  NOT NULL DEFAULT 0,
    announced_routes TEXT    NOT NULL DEFAULT '[]',
    approved_routes  TEXT    NOT NULL DEFAULT '[]',
    endpoints        TEXT    NOT NULL DEFAULT '[]',
    expiry           BIGINT,
    created_at       BIGINT  NOT NULL,
    last_seen        BIGINT,
    register_method  TEXT    NOT NULL DEFAULT 'unspecified',
    auth_key_id      BIGINT  REFERENCES pre_auth_keys (id) ON DELETE SET NULL,
    ephemeral        BIGINT  NOT NULL DEFAULT 0,
    capver           BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX nodes_machine_key ON nodes (machine_key);
CREATE INDEX nodes_user ON nodes (user_id);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    prefix      TEXT    NOT NULL UNIQUE,
    hash        TEXT    NOT NULL,
    expiration  BIGINT,
    created_at  BIGINT  NOT NULL,
    last_seen   BIGINT
);

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
