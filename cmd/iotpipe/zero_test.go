package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/iotpipe/iotpipe/internal/flags"
)

// TestZeroIsHonouredOrRefused sets every numeric and duration flag of
// every command to 0, on the command line and through its variable: the
// command either accepts it and the bound field is 0 after parsing and
// validation (never replaced by a default), or refuses it with one line
// naming the flag and its variable.
func TestZeroIsHonouredOrRefused(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"ready":true}`)) }))
	defer ready.Close()
	base := map[string]string{ // what the commands need besides the defaults
		"IOTPIPE_S3_ACCESS_KEY": "a", "IOTPIPE_S3_SECRET_KEY": "b",
	}
	for k, v := range demoTLSEnv { // the demo's mutual TLS
		base[k] = v
	}
	commands := []struct {
		args []string
		tail []string // after the flag under test
	}{
		{[]string{"init"}, []string{"--check-config"}},
		{[]string{"bridge"}, []string{"--check-config"}},
		{[]string{"processor"}, []string{"--check-config"}},
		{[]string{"sink", "lake"}, []string{"--check-config"}},
		{[]string{"sink", "timescale"}, []string{"--check-config"}},
		{[]string{"simulate"}, []string{"--check-config"}},
		{[]string{"demo"}, []string{"--check-config"}},
		{[]string{"healthcheck"}, []string{"--url", ready.URL}},
		{[]string{"version"}, nil},
	}
	defer func() { onParsed = nil }()
	var honoured, refused []string
	for _, c := range commands {
		// Learn the command's flags.
		var f *Flags
		onParsed = func(p *Flags) { f = p }
		if code, _, errOut := run(t, base, append(append([]string{}, c.args...), c.tail...)...); code != ExitOK {
			t.Fatalf("iotpipe %s with defaults: exit %d: %s", strings.Join(c.args, " "), code, errOut)
		}
		if f == nil {
			t.Fatalf("iotpipe %s: flags not seen", strings.Join(c.args, " "))
		}
		for _, name := range f.Names() {
			switch f.Kind(name) {
			case flags.KindInt, flags.KindFloat, flags.KindDuration:
			default:
				continue
			}
			for _, via := range []string{"flag", "env"} {
				cmd := strings.Join(c.args, " ") + " " + name + " via " + via
				env := map[string]string{}
				for k, v := range base {
					env[k] = v
				}
				args := append([]string{}, c.args...)
				if via == "flag" {
					args = append(args, "--"+name, "0")
				} else {
					env[flags.EnvName(name)] = "0"
				}
				var got *Flags
				onParsed = func(p *Flags) { got = p }
				code, _, errOut := run(t, env, append(args, c.tail...)...)
				switch code {
				case ExitOK:
					v := reflect.ValueOf(got.Field(name)).Elem()
					if !v.IsZero() {
						t.Errorf("%s: accepted, but the field holds %v", cmd, v.Interface())
					}
					if via == "flag" {
						honoured = append(honoured, strings.Join(c.args, " ")+" --"+name)
					}
				case ExitUsage:
					line := strings.TrimSpace(errOut)
					if strings.Contains(line, "\n") || !strings.Contains(line, flags.Setting(name)) {
						t.Errorf("%s: refused, but not in one line naming %s: %q", cmd, flags.Setting(name), errOut)
					}
					if via == "flag" {
						refused = append(refused, line)
					}
				default:
					t.Errorf("%s: exit %d: %s", cmd, code, errOut)
				}
			}
		}
	}
	if len(honoured)+len(refused) < 60 {
		t.Fatalf("only %d numeric flags checked", len(honoured)+len(refused))
	}
	t.Logf("0 honoured by %d flags: %s", len(honoured), strings.Join(honoured, ", "))
	var b bytes.Buffer
	for _, r := range refused {
		b.WriteString("\n  " + r)
	}
	t.Logf("0 refused by %d flags:%s", len(refused), b.String())
}
