package grafana

import (
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/iotpipe/iotpipe/bridge"
	"github.com/iotpipe/iotpipe/internal/devicesim"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/notify"
	"github.com/iotpipe/iotpipe/processor"
	"github.com/iotpipe/iotpipe/sink/lake"
	"github.com/iotpipe/iotpipe/sink/timescale"
)

// metricNames records the names of every metric registered with it (from
// the collectors' descriptions: vectors without series count too).
type metricNames struct {
	mu sync.Mutex
	m  map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (n *metricNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			n.mu.Lock()
			n.m[m[1]] = true
			n.mu.Unlock()
		}
	}
	return nil
}

func (n *metricNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = n.Register(c)
	}
}

func (n *metricNames) Unregister(prometheus.Collector) bool { return true }

// stageMetrics builds every stage with its default settings (nothing is
// contacted) and returns the names of the metrics they export.
func stageMetrics(t *testing.T) map[string]bool {
	t.Helper()
	n := &metricNames{m: map[string]bool{}}
	deps := service.Deps{Registry: n}
	if _, err := bridge.New(bridge.DefaultConfig(), deps); err != nil {
		t.Fatal(err)
	}
	if _, err := processor.New(processor.DefaultConfig(), deps); err != nil {
		t.Fatal(err)
	}
	lc := lake.DefaultConfig()
	lc.S3.AccessKey, lc.S3.SecretKey = "test", "test-secret" // nothing is contacted
	if _, err := lake.New(lc, deps); err != nil {
		t.Fatal(err)
	}
	if _, err := timescale.New(timescale.DefaultConfig(), deps); err != nil {
		t.Fatal(err)
	}
	if _, err := devicesim.New(devicesim.DefaultConfig(), deps); err != nil {
		t.Fatal(err)
	}
	if _, err := notify.New(notify.DefaultConfig(), deps); err != nil {
		t.Fatal(err)
	}
	return n.m
}

var metricRef = regexp.MustCompile(`\biotpipe_[a-z0-9_]+`)

// checkExpr fails for every iotpipe_ metric an expression names that no
// stage exports (histograms are named with their _bucket/_sum/_count).
func checkExpr(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	for _, ref := range metricRef.FindAllString(expr, -1) {
		base := ref
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(ref, suf); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("%s: %s is exported by no stage (expr %s)", where, ref, expr)
		}
	}
}

// TestDashboardMetricsExist checks that every Prometheus query of the
// dashboards names metrics the stages export.
func TestDashboardMetricsExist(t *testing.T) {
	known := stageMetrics(t)
	ds, err := Dashboards()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range ds {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					n++
					checkExpr(t, d.Title+" / "+p.Title, tg.Expr, known)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no Prometheus query found in the dashboards")
	}
}

// alerting is the part of Grafana's alert-rule provisioning file the test
// reads.
type alerting struct {
	APIVersion int `yaml:"apiVersion"`
	Groups     []struct {
		OrgID    int    `yaml:"orgId"`
		Name     string `yaml:"name"`
		Folder   string `yaml:"folder"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			UID       string `yaml:"uid"`
			Title     string `yaml:"title"`
			Condition string `yaml:"condition"`
			For       string `yaml:"for"`
			Data      []struct {
				RefID         string `yaml:"refId"`
				DatasourceUID string `yaml:"datasourceUid"`
				Model         struct {
					RefID      string `yaml:"refId"`
					Expr       string `yaml:"expr"`
					Type       string `yaml:"type"`
					Expression string `yaml:"expression"`
				} `yaml:"model"`
			} `yaml:"data"`
			Annotations map[string]string `yaml:"annotations"`
			Labels      map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRulesProvisioned reads the provisioned alert rules as Grafana
// would: well formed, on the provisioned Prometheus datasource, naming
// exported metrics, and covering the pipeline's health (broker drops,
// bridge disconnected, stalled stage, consumer lag, dead letters).
func TestAlertRulesProvisioned(t *testing.T) {
	known := stageMetrics(t)
	b, err := os.ReadFile("provisioning/alerting/iotpipe.yml")
	if err != nil {
		t.Fatal(err)
	}
	var a alerting
	if err := yaml.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	var dsFile struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
		} `yaml:"datasources"`
	}
	db, err := os.ReadFile("provisioning/datasources/iotpipe.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(db, &dsFile); err != nil {
		t.Fatal(err)
	}
	prom := ""
	for _, d := range dsFile.Datasources {
		if d.Type == "prometheus" {
			prom = d.UID
		}
	}
	if a.APIVersion != 1 || len(a.Groups) == 0 || prom == "" {
		t.Fatalf("apiVersion %d, %d groups, prometheus datasource %q", a.APIVersion, len(a.Groups), prom)
	}
	uids := map[string]bool{}
	covered := map[string]bool{}
	for _, g := range a.Groups {
		if g.OrgID != 1 || g.Name == "" || g.Folder == "" || g.Interval == "" {
			t.Errorf("group %q: orgId, name, folder and interval are required", g.Name)
		}
		for _, r := range g.Rules {
			if r.UID == "" || uids[r.UID] || r.Title == "" || r.For == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: uid (unique), title, for, summary and severity are required", r.UID)
			}
			uids[r.UID] = true
			refs := map[string]bool{}
			for _, d := range r.Data {
				refs[d.RefID] = true
				switch d.DatasourceUID {
				case prom:
					checkExpr(t, r.Title, d.Model.Expr, known)
					for _, m := range metricRef.FindAllString(d.Model.Expr, -1) {
						covered[m] = true
					}
				case "__expr__":
					if d.Model.Type == "" || !refs[d.Model.Expression] {
						t.Errorf("rule %q: expression %s refers to %q, not an earlier query", r.UID, d.RefID, d.Model.Expression)
					}
				default:
					t.Errorf("rule %q: query %s on unknown datasource %q", r.UID, d.RefID, d.DatasourceUID)
				}
			}
			if !refs[r.Condition] {
				t.Errorf("rule %q: condition %q is none of its queries", r.UID, r.Condition)
			}
		}
	}
	for _, m := range []string{"iotpipe_bridge_broker_dropped_messages", "iotpipe_bridge_mqtt_connected",
		"iotpipe_processor_stalled", "iotpipe_sink_timescale_stalled", "iotpipe_lake_stalled",
		"iotpipe_processor_consumer_lag_seconds", "iotpipe_processor_dlq_total", "iotpipe_notify_undeliverable_total"} {
		if !covered[m] {
			t.Errorf("no alert rule watches %s", m)
		}
	}
}
