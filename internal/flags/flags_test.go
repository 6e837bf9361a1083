package flags

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotpipe/iotpipe/internal/config"
)

type inner struct{ Lateness time.Duration }

type cfg struct {
	Name   string
	Wait   time.Duration
	Window inner
	Hosts  []string
	Rate   float64
}

func newTest(env map[string]string, c *cfg) *Flags {
	f := New("x", "", func(k string) string { return env[k] })
	f.String(&c.Name, "name", "")
	f.Duration(&c.Wait, "wait", "")
	f.Duration(&c.Window.Lateness, "lateness", "")
	f.List(&c.Hosts, "hosts", "")
	f.Float(&c.Rate, "rate", "")
	f.Alias("old-lateness", "lateness")
	return f
}

func TestEnvPrecedenceAndDefaults(t *testing.T) {
	c := cfg{Name: "def", Wait: time.Second, Window: inner{30 * time.Second}, Hosts: []string{"a:1"}, Rate: 1}
	f := newTest(map[string]string{"IOTPIPE_NAME": "from-env", "IOTPIPE_WAIT": "3s"}, &c)
	if err := f.Parse([]string{"--name", "from-flag", "--lateness", "0"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if c.Name != "from-flag" || c.Wait != 3*time.Second || c.Window.Lateness != 0 || c.Hosts[0] != "a:1" || c.Rate != 1 {
		t.Fatalf("%+v", c)
	}
	if f.Source("name") != "flag" || f.Source("wait") != "env" || f.Source("hosts") != "default" {
		t.Fatalf("sources %q %q %q", f.Source("name"), f.Source("wait"), f.Source("hosts"))
	}
	var help bytes.Buffer
	f.Usage(&help)
	for _, want := range []string{"--lateness  IOTPIPE_LATENESS", "(default 30s)", "--old-lateness", "use --lateness"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, help.String())
		}
	}
}

func TestAliasFromFlagAndEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want time.Duration
		warn string
	}{
		{nil, []string{"--old-lateness", "2s"}, 2 * time.Second, "--old-lateness is deprecated, use --lateness"},
		{map[string]string{"IOTPIPE_OLD_LATENESS": "4s"}, nil, 4 * time.Second, "IOTPIPE_OLD_LATENESS is deprecated, use IOTPIPE_LATENESS"},
		{map[string]string{"IOTPIPE_OLD_LATENESS": "4s", "IOTPIPE_LATENESS": "5s"}, nil, 5 * time.Second, ""},
	} {
		c := cfg{Window: inner{30 * time.Second}}
		f := newTest(tc.env, &c)
		if err := f.Parse(tc.args, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
		dep := strings.Join(f.Deprecated(), "; ")
		if c.Window.Lateness != tc.want || (tc.warn != "" && dep != tc.warn) || (tc.warn == "" && dep != "") {
			t.Errorf("%v %v: lateness %s, deprecated %q", tc.env, tc.args, c.Window.Lateness, dep)
		}
	}
}

func TestExplainNamesFlagAndVariable(t *testing.T) {
	var c cfg
	f := newTest(nil, &c)
	var p config.Problems
	p.Check(true, "Window.Lateness", "must not be negative")
	p.Check(true, "Hosts", "no host")
	p.Check(true, "Unbound", "bad")
	err := f.Explain(p.Err(), &c)
	want := "--lateness (IOTPIPE_LATENESS): must not be negative\n--hosts (IOTPIPE_HOSTS): no host\nUnbound: bad"
	if err == nil || err.Error() != want {
		t.Fatalf("got %q\nwant %q", err, want)
	}
	var se *SettingError
	if !errors.As(err, &se) || se.Flag != "lateness" || se.Field != "Window.Lateness" {
		t.Fatalf("errors.As: %+v", se)
	}
	if name, ok := f.FlagOf(&c, "Window"); ok {
		t.Errorf("the struct Window resolved to flag %s", name)
	}
}

func TestBadEnvNamesVariable(t *testing.T) {
	var c cfg
	f := newTest(map[string]string{"IOTPIPE_RATE": "fast"}, &c)
	err := f.Parse(nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `IOTPIPE_RATE (--rate): invalid value "fast": not a number`) {
		t.Fatalf("%v", err)
	}
}

func TestBadFlagNamesVariable(t *testing.T) {
	var c cfg
	f := newTest(nil, &c)
	err := f.Parse([]string{"--wait", "soon"}, &bytes.Buffer{})
	if err == nil || err.Error() != `--wait (IOTPIPE_WAIT): invalid value "soon": not a duration (e.g. 500ms, 30s, 5m, 24h)` {
		t.Fatalf("%v", err)
	}
}
