package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Role is what a token may do; each role may do everything the ones
// below it may.
type Role string

// Roles, from most to least.
const (
	// RoleAdmin registers, disables and revokes devices and manages groups.
	RoleAdmin Role = "admin"
	// RoleOperator changes shadows, configurations and device attributes.
	RoleOperator Role = "operator"
	// RoleViewer reads.
	RoleViewer Role = "viewer"
)

func (r Role) rank() int {
	switch r {
	case RoleAdmin:
		return 3
	case RoleOperator:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r.rank() == 0 {
		return "", fmt.Errorf("role %q: want admin, operator or viewer", s)
	}
	return r, nil
}

// Token errors callers test with errors.Is.
var (
	// ErrBadToken: the bearer token is malformed, unknown, revoked or
	// expired (one error: the caller learns nothing about which).
	ErrBadToken = errors.New("invalid, revoked or expired token")
	// ErrNoToken: revoking a token id that does not exist.
	ErrNoToken = errors.New("no such token")
)

// tokenPrefix starts every token: iotp_<id>_<secret>.
const tokenPrefix = "iotp_"

// Token describes a token; the secret is shown once, at creation.
type Token struct {
	ID         string     `json:"token_id"`
	Name       string     `json:"name"`
	Role       Role       `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// Tokens manages the API's bearer tokens in the api_tokens table: only
// the SHA-256 of each secret is stored (the secret is 256 random bits,
// so a fast hash is enough), compared in constant time.
type Tokens struct {
	pool   *pgxpool.Pool
	schema string
}

// NewTokens returns the tokens of schema on pool (a member of the
// registry role).
func NewTokens(pool *pgxpool.Pool, schema string) *Tokens {
	return &Tokens{pool: pool, schema: schema}
}

func (t *Tokens) rel() string { return pgx.Identifier{t.schema, "api_tokens"}.Sanitize() }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Create makes a token for role and returns the whole token (to show
// once) and its description. ttl 0: no expiry.
func (t *Tokens) Create(ctx context.Context, name string, role Role, ttl time.Duration) (string, Token, error) {
	if role.rank() == 0 {
		return "", Token{}, fmt.Errorf("create token: role %q: want admin, operator or viewer", role)
	}
	idb, secret := make([]byte, 10), make([]byte, 32)
	_, _ = rand.Read(idb)
	_, _ = rand.Read(secret)
	id := idEncoding.EncodeToString(idb)
	sec := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(sec))
	var exp *time.Time
	if ttl > 0 {
		e := time.Now().Add(ttl)
		exp = &e
	}
	tok := Token{ID: id, Name: name, Role: role, ExpiresAt: exp}
	err := t.pool.QueryRow(ctx, "INSERT INTO "+t.rel()+" (token_id, name, role, secret_hash, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
		id, name, string(role), sum[:], exp).Scan(&tok.CreatedAt)
	if err != nil {
		return "", Token{}, fmt.Errorf("create token: %w", err)
	}
	return tokenPrefix + id + "_" + sec, tok, nil
}

// Revoke refuses the token from now on.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	tag, err := t.pool.Exec(ctx, "UPDATE "+t.rel()+" SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = $1", id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoke token %s: %w", id, ErrNoToken)
	}
	return nil
}

// List returns every token, by creation time.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	rows, err := t.pool.Query(ctx, "SELECT token_id, name, role, created_at, expires_at, revoked_at, last_used_at FROM "+t.rel()+" ORDER BY created_at, token_id")
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) {
		var k Token
		err := r.Scan(&k.ID, &k.Name, &k.Role, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// Authenticate returns the token that the bearer string is, or
// ErrBadToken.
func (t *Tokens) Authenticate(ctx context.Context, bearer string) (Token, error) {
	rest, ok := strings.CutPrefix(bearer, tokenPrefix)
	if !ok {
		return Token{}, ErrBadToken
	}
	id, sec, ok := strings.Cut(rest, "_")
	if !ok || len(id) < 8 || len(id) > 32 {
		return Token{}, ErrBadToken
	}
	var k Token
	var hash []byte
	err := t.pool.QueryRow(ctx, "SELECT token_id, name, role, created_at, expires_at, revoked_at, last_used_at, secret_hash FROM "+t.rel()+" WHERE token_id = $1", id).
		Scan(&k.ID, &k.Name, &k.Role, &k.CreatedAt, &k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, ErrBadToken
	}
	if err != nil {
		return Token{}, fmt.Errorf("authenticate: %w", err)
	}
	sum := sha256.Sum256([]byte(sec))
	if subtle.ConstantTimeCompare(sum[:], hash) != 1 || k.RevokedAt != nil || (k.ExpiresAt != nil && time.Now().After(*k.ExpiresAt)) {
		return Token{}, ErrBadToken
	}
	if k.LastUsedAt == nil || time.Since(*k.LastUsedAt) > time.Minute {
		_, _ = t.pool.Exec(ctx, "UPDATE "+t.rel()+" SET last_used_at = now() WHERE token_id = $1", id) // best effort
	}
	return k, nil
}
