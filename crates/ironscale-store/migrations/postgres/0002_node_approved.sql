-- Device approval: nodes registered before it existed stay authorized.
ALTER TABLE nodes ADD COLUMN approved BIGINT NOT NULL DEFAULT 1;
