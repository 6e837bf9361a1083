// Package grafana holds the provisioned Grafana dashboards of iotpipe and
// the code that expands their SQL the way Grafana does (macros and
// dashboard variables), so tests can run every dashboard query against a
// real database.
package grafana

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed dashboards/*.json
var files embed.FS

// Dashboard is the part of a Grafana dashboard the tests need.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []Annotation `json:"list"`
	} `json:"annotations"`
}

// Annotation is one annotation query of a dashboard (for iotpipe: alert
// events from alert_events, on the TimescaleDB datasource).
type Annotation struct {
	Name       string `json:"name"`
	Enable     bool   `json:"enable"`
	IconColor  string `json:"iconColor"`
	Target     Target `json:"target"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
}

// Queries returns every SQL query of the dashboard on the TimescaleDB
// datasource — the query variables', the panels' and the annotations' —
// keyed by where it is ("panel <title>", "variable <name>", "annotation
// <name>").
func (d *Dashboard) Queries() map[string]string {
	out := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out["variable "+v.Name] = v.Query
		}
	}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			if t.IsSQL() {
				out["panel "+p.Title+" "+t.RefID] = t.RawSQL
			}
		}
	}
	for _, a := range d.Annotations.List {
		if a.Target.IsSQL() {
			out["annotation "+a.Name] = a.Target.RawSQL
		}
	}
	return out
}

// Panel is one dashboard panel.
type Panel struct {
	ID      int      `json:"id"`
	Title   string   `json:"title"`
	Type    string   `json:"type"`
	Targets []Target `json:"targets"`
}

// Target is one panel query.
type Target struct {
	RefID      string `json:"refId"`
	RawSQL     string `json:"rawSql"`
	Expr       string `json:"expr"`
	Format     string `json:"format"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
}

// Variable is a dashboard variable.
type Variable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query string `json:"query"`
}

// Dashboards loads every provisioned dashboard.
func Dashboards() ([]Dashboard, error) {
	names, err := fs.Glob(files, "dashboards/*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Dashboard
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// IsSQL reports whether the target queries the TimescaleDB datasource.
func (t *Target) IsSQL() bool { return t.Datasource.Type == "grafana-postgresql-datasource" }

var (
	timeFilter = regexp.MustCompile(`\$__timeFilter\(\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*\)`)
	variable   = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*)\}|\$([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// Expand rewrites a dashboard SQL query as Grafana would send it for the
// time range [from, to) and the variable values given: $__timeFilter(col),
// $__timeFrom(), $__timeTo(), $__interval_ms, and ${var} / $var. It fails
// on any macro or variable it does not know, so a dashboard cannot use
// something the tests do not check.
func Expand(query string, from, to time.Time, interval time.Duration, vars map[string]string) (string, error) {
	ts := func(t time.Time) string { return "'" + t.UTC().Format(time.RFC3339Nano) + "'" }
	q := timeFilter.ReplaceAllString(query, "$1 BETWEEN "+ts(from)+" AND "+ts(to))
	q = strings.NewReplacer(
		"$__timeFrom()", ts(from),
		"$__timeTo()", ts(to),
		"$__interval_ms", fmt.Sprint(interval.Milliseconds()),
	).Replace(q)
	var missing []string
	q = variable.ReplaceAllStringFunc(q, func(m string) string {
		sub := variable.FindStringSubmatch(m)
		name := sub[1]
		if name == "" {
			name = sub[2]
		}
		v, ok := vars[name]
		if !ok {
			missing = append(missing, m)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("unknown macro or variable %s", strings.Join(missing, ", "))
	}
	return q, nil
}
