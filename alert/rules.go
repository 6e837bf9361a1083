package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iotpipe/iotpipe/alerting/rules"
)

// ruleSet is one load of the rules: the enabled rules that can be
// evaluated, and the groups of every device in a group (ancestors
// included) when a rule is group-scoped.
type ruleSet struct {
	rules   []*rules.Rule
	invalid int
	groups  map[string][]string
	// noData: some rule is a no_data rule (the raw tasks then check for
	// silent devices).
	noData bool
}

// groupsOf returns the groups device is in (nil-safe).
func (rs *ruleSet) groupsOf(device string) []string {
	if rs == nil {
		return nil
	}
	return rs.groups[device]
}

// registryChannel is the registry's change notice channel
// (registry.NotifyChannel; not imported: the registry's store is not
// needed, only its tables' group membership).
const registryChannel = "iotpipe_registry"

// loader reads rule sets from PostgreSQL.
type loader struct {
	store  *rules.Store
	dsn    string
	schema string
	log    *slog.Logger
	// logged remembers the invalid rule versions already logged.
	logged map[string]int64
}

// load reads the enabled rules, leaving out (and logging once per
// version) those that cannot be evaluated, and the group membership when
// a rule needs it, over conn.
func (l *loader) load(ctx context.Context, conn *pgx.Conn) (*ruleSet, error) {
	all, err := l.store.List(ctx, true)
	if err != nil {
		return nil, err
	}
	rs := &ruleSet{}
	needGroups := false
	for _, r := range all {
		if err := r.Validate(); err != nil {
			rs.invalid++
			if l.logged[r.ID] != r.Version {
				l.logged[r.ID] = r.Version
				l.log.Error("alert rule cannot be evaluated; it is left out until it is fixed", "rule", r.ID, "version", r.Version, "err", err)
			}
			continue
		}
		rs.rules = append(rs.rules, r)
		needGroups = needGroups || r.Scope == rules.ScopeGroup
		rs.noData = rs.noData || r.Kind == rules.KindNoData
	}
	if needGroups {
		if rs.groups, err = l.groups(ctx, conn); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

// groups returns, for every device in a group, its groups and their
// ancestors.
func (l *loader) groups(ctx context.Context, conn *pgx.Conn) (map[string][]string, error) {
	m := pgx.Identifier{l.schema, "device_group_members"}.Sanitize()
	g := pgx.Identifier{l.schema, "device_groups"}.Sanitize()
	rows, err := conn.Query(ctx, `WITH RECURSIVE dg(device_id, group_id) AS (
	SELECT device_id, group_id FROM `+m+`
	UNION
	SELECT dg.device_id, p.parent_id FROM dg JOIN `+g+` p ON p.group_id = dg.group_id WHERE p.parent_id IS NOT NULL
) SELECT device_id, group_id FROM dg ORDER BY device_id, group_id`)
	if err != nil {
		return nil, fmt.Errorf("read device groups: %w", err)
	}
	out := map[string][]string{}
	var dev, grp string
	_, err = pgx.ForEachRow(rows, []any{&dev, &grp}, func() error {
		out[dev] = append(out[dev], grp)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read device groups: %w", err)
	}
	return out, nil
}

// watch keeps the rule set current until ctx ends: it LISTENs for rule
// and registry change notices of the schema over a connection of its own
// and loads the rules on every notice, every refresh and after
// reconnecting; each load is given to set. Errors are logged and counted;
// the last set stays in use meanwhile.
func (l *loader) watch(ctx context.Context, refresh time.Duration, set func(*ruleSet), failed func(error)) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := l.listen(ctx, refresh, set)
		if ctx.Err() != nil {
			return
		}
		failed(err)
		l.log.Warn("alert rule watch failed; the last rule set stays in use", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (l *loader) listen(ctx context.Context, refresh time.Duration, set func(*ruleSet)) error {
	conn, err := pgx.Connect(ctx, l.dsn)
	if err != nil {
		return fmt.Errorf("alert rule watch: connect: %w", err)
	}
	defer conn.Close(context.Background())
	for _, ch := range []string{rules.NotifyChannel, registryChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("alert rule watch: listen %s: %w", ch, err)
		}
	}
	for {
		// Changes made before LISTEN took effect are picked up here.
		rs, err := l.load(ctx, conn)
		if err != nil {
			return err
		}
		set(rs)
		for {
			wctx, cancel := context.WithTimeout(ctx, refresh)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err == nil && n.Payload != l.schema {
				continue // another schema's change
			}
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("alert rule watch: %w", err)
			}
			break // a notice, or the periodic refresh
		}
	}
}
