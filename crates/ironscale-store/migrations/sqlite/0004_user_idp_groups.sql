-- OIDC: the identity provider's groups claim of a user's last login (JSON list of strings),
-- for policy groups whose members name provider groups (`oidc-group:<name>`).
ALTER TABLE users ADD COLUMN idp_groups TEXT NOT NULL DEFAULT '[]';
