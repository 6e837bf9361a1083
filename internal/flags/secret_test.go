package flags

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newSecretFlags(env map[string]string, dsn *string) *Flags {
	f := New("x", "", func(k string) string { return env[k] })
	f.Secret(dsn, "pg-dsn", "database URL")
	return f
}

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecretFromFile(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"one trailing newline dropped", "postgres://u:pw@h/db\n", "postgres://u:pw@h/db"},
		{"crlf dropped", "pw\r\n", "pw"},
		{"only one newline dropped", "pw\n\n", "pw\n"},
		{"no newline", "pw ", "pw "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeSecret(t, tc.content)
			for _, via := range []string{"flag", "env"} {
				var dsn string
				env := map[string]string{}
				var args []string
				if via == "flag" {
					args = []string{"--pg-dsn-file", path}
				} else {
					env["IOTPIPE_PG_DSN_FILE"] = path
				}
				f := newSecretFlags(env, &dsn)
				if err := f.Parse(args, &bytes.Buffer{}); err != nil {
					t.Fatalf("via %s: %v", via, err)
				}
				if dsn != tc.want || f.Source("pg-dsn") != "file" {
					t.Fatalf("via %s: got %q from %s, want %q from file", via, dsn, f.Source("pg-dsn"), tc.want)
				}
			}
		})
	}
}

func TestSecretValueAndFileBothSet(t *testing.T) {
	path := writeSecret(t, "from-file\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag and flag", nil, []string{"--pg-dsn", "v", "--pg-dsn-file", path}},
		{"env and env", map[string]string{"IOTPIPE_PG_DSN": "v", "IOTPIPE_PG_DSN_FILE": path}, nil},
		{"flag and env file", map[string]string{"IOTPIPE_PG_DSN_FILE": path}, []string{"--pg-dsn", "v"}},
		{"env and flag file", map[string]string{"IOTPIPE_PG_DSN": "v"}, []string{"--pg-dsn-file", path}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dsn string
			err := newSecretFlags(tc.env, &dsn).Parse(tc.args, &bytes.Buffer{})
			if !errors.Is(err, ErrSecretTwice) {
				t.Fatalf("want ErrSecretTwice, got %v", err)
			}
			for _, want := range []string{"--pg-dsn (IOTPIPE_PG_DSN)", "--pg-dsn-file (IOTPIPE_PG_DSN_FILE)"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %s", err, want)
				}
			}
			if strings.Contains(err.Error(), "from-file") {
				t.Errorf("error shows the secret: %q", err)
			}
		})
	}
}

func TestSecretFileUnreadable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	var dsn string
	err := newSecretFlags(map[string]string{"IOTPIPE_PG_DSN_FILE": missing}, &dsn).Parse(nil, &bytes.Buffer{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("want fs.ErrNotExist, got %v", err)
	}
	for _, want := range []string{"--pg-dsn-file (IOTPIPE_PG_DSN_FILE)", "--pg-dsn (IOTPIPE_PG_DSN)", missing} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	empty := writeSecret(t, "\n")
	err = newSecretFlags(nil, &dsn).Parse([]string{"--pg-dsn-file", empty}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--pg-dsn-file (IOTPIPE_PG_DSN_FILE)") {
		t.Fatalf("empty file: got %v", err)
	}
}

func TestSecretHelpRedacted(t *testing.T) {
	dsn := "postgres://iotpipe:hunter2@db:5432/iotpipe?sslmode=verify-full"
	f := newSecretFlags(nil, &dsn)
	var help bytes.Buffer
	f.Usage(&help)
	out := help.String()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("help shows the password:\n%s", out)
	}
	for _, want := range []string{"postgres://iotpipe:xxxxx@db:5432/iotpipe?sslmode=verify-full", "--pg-dsn-file", "IOTPIPE_PG_DSN_FILE"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if !f.IsSecret("pg-dsn") || f.IsSecret("pg-dsn-file") {
		t.Errorf("IsSecret wrong")
	}
}
