package grafana

import (
	"strings"
	"testing"
	"time"
)

func TestDashboardsLoadAndExpand(t *testing.T) {
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) < 2 {
		t.Fatalf("found %d dashboards", len(ds))
	}
	from := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	vars := map[string]string{"schema": "iotpipe", "silent": "10 minutes", "metric": "temperature", "device": "dev-1"}
	for _, d := range ds {
		if d.UID == "" || d.Title == "" {
			t.Errorf("dashboard without uid or title: %+v", d)
		}
		for _, p := range d.Panels {
			if len(p.Targets) == 0 {
				t.Errorf("%s / %s: no query", d.Title, p.Title)
			}
			for _, tg := range p.Targets {
				if !tg.IsSQL() {
					continue
				}
				q, err := Expand(tg.RawSQL, from, from.Add(time.Hour), time.Minute, vars)
				if err != nil {
					t.Errorf("%s / %s: %v", d.Title, p.Title, err)
					continue
				}
				if strings.Contains(q, "$") {
					t.Errorf("%s / %s: unexpanded: %s", d.Title, p.Title, q)
				}
				if !strings.Contains(q, "iotpipe.") {
					t.Errorf("%s / %s: does not name the schema: %s", d.Title, p.Title, q)
				}
			}
		}
		for _, a := range d.Annotations.List {
			if !a.Target.IsSQL() || a.Datasource.UID != a.Target.Datasource.UID || a.Name == "" || !a.Enable {
				t.Errorf("%s / annotation %q: want an enabled query on the TimescaleDB datasource", d.Title, a.Name)
				continue
			}
			q, err := Expand(a.Target.RawSQL, from, from.Add(time.Hour), time.Minute, vars)
			if err != nil || strings.Contains(q, "$") || !strings.Contains(q, "iotpipe.") {
				t.Errorf("%s / annotation %s: %v %s", d.Title, a.Name, err, q)
			}
		}
	}
}

func TestExpandRejectsUnknown(t *testing.T) {
	if _, err := Expand("SELECT $__unixEpochFilter(time)", time.Now(), time.Now(), time.Second, nil); err == nil {
		t.Fatal("unknown macro accepted")
	}
}
