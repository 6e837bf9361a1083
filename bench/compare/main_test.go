package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRun(t *testing.T) {
	old, new := "../result/testdata/old.json", "../result/testdata/new.json"
	dir := t.TempDir()
	for _, n := range []string{"20261127T170000Z.json", "20261127T180000Z.json"} {
		b, err := os.ReadFile(old)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{old, new}, 0},
		{[]string{"--filter", `^end_to_end\.`, old, new}, 0},
		{[]string{"--dir", dir}, 0},                         // the two newest
		{[]string{"--dir", t.TempDir()}, 1},                 // none there
		{[]string{old}, 2},                                  // one file
		{[]string{"--filter", "(", old, new}, 2},            // bad regexp
		{[]string{old, filepath.Join(dir, "none.json")}, 1}, // missing file
		{[]string{"--markdown", filepath.Join(dir, "20261127T180000Z.json")}, 0},
		{[]string{"--markdown", "--dir", dir}, 0},
	} {
		if got := run(tt.args); got != tt.code {
			t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.code)
		}
	}
}
