package secret

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"":        "",
		"hunter2": "(set)",
		"postgres://u:pw@h:5432/db?sslmode=verify-full&sslrootcert=/ca.crt": "postgres://u:xxxxx@h:5432/db?sslmode=verify-full&sslrootcert=/ca.crt",
		"postgres://u@h/db":                  "postgres://u@h/db",
		"postgres://h/db?password=pw&user=u": "postgres://h/db?password=xxxxx&user=u",
		"host=h user=u password=pw dbname=d": "host=h user=u password=xxxxx dbname=d",
		"host=h password='p w' dbname=d":     "host=h password=xxxxx dbname=d",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s")
	if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFile(p); err != nil || got != "x" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := os.WriteFile(p, []byte(""), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}
