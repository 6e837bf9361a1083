package rules

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
)

// NewStore is a Store on a pool the caller owns (an API server's): the
// caller checks the schema (Open does it for a pool of its own) and closes
// the pool; do not call Close on the returned Store.
func NewStore(pool *pgxpool.Pool, schema string) *Store {
	return &Store{pool: pool, schema: schema}
}

// Filter selects and pages rules for ListPage. Empty fields do not filter.
type Filter struct {
	Kind     Kind
	Metric   string
	Severity string
	Scope    Scope
	ScopeID  string
	// Enabled, when set, keeps only enabled (true) or disabled (false)
	// rules.
	Enabled *bool
	// After is the last rule id of the previous page: the page starts
	// after it.
	After string
	// Limit is the page size; 0 means no limit.
	Limit int
}

// ListPage returns the rules that match f, ordered by rule id, starting
// after f.After: a walk page by page never skips or repeats a rule that
// existed throughout it.
func (s *Store) ListPage(ctx context.Context, f Filter) ([]*Rule, error) {
	q := `SELECT ` + ruleColumns + ` FROM ` + s.rel("alert_rules") + ` WHERE rule_id > $1`
	args := []any{f.After}
	add := func(cond string, v any) {
		args = append(args, v)
		q += ` AND ` + cond + ` = $` + strconv.Itoa(len(args))
	}
	if f.Kind != "" {
		add("kind", string(f.Kind))
	}
	if f.Metric != "" {
		add("metric", f.Metric)
	}
	if f.Severity != "" {
		add("severity", f.Severity)
	}
	if f.Scope != "" {
		add("scope", string(f.Scope))
	}
	if f.ScopeID != "" {
		add("scope_id", f.ScopeID)
	}
	if f.Enabled != nil {
		add("enabled", *f.Enabled)
	}
	q += ` ORDER BY rule_id`
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	defer rows.Close()
	out := []*Rule{}
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("list alert rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	return out, nil
}
