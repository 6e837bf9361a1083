package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	principalsBegin = "<!-- principals: generated from internal/kafkaacl by `go test ./cmd/iotpipe -run TestSecurityDocPrincipals -update` -->"
	principalsEnd   = "<!-- end of principals -->"
)

// principalsTable renders the stage principals `iotpipe init
// --kafka-acls` creates with its default names, grant by grant, as in
// internal/kafkaacl.StagePrincipals.
func principalsTable(t *testing.T) string {
	t.Helper()
	var o initFlags
	f := newCmdFlags(Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }}, "iotpipe init", initSummary)
	o.bind(f)
	if err := f.Parse([]string{"--kafka-acls"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("| Stage | Principal (init's default) | May (ACLs on init's default names; nothing else) |\n|---|---|---|\n")
	for _, p := range o.principals() {
		gs := make([]string, len(p.Grants))
		for i, g := range p.Grants {
			gs[i] = "`" + g.String() + "`"
		}
		fmt.Fprintf(&b, "| %s | `User:%s` | %s |\n", p.Stage, p.User, strings.Join(gs, "; "))
	}
	return b.String()
}

// TestSecurityDocPrincipals: the table of stage principals in
// docs/SECURITY.md is what init grants (internal/kafkaacl), so that it
// cannot drift; -update rewrites it.
func TestSecurityDocPrincipals(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "SECURITY.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, principalsBegin), strings.Index(doc, principalsEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q … %q around the principals table", path, principalsBegin, principalsEnd)
	}
	want := principalsTable(t)
	have := doc[i+len(principalsBegin)+1 : j]
	if have == want {
		return
	}
	if *update {
		doc = doc[:i+len(principalsBegin)+1] + want + doc[j:]
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the principals table in %s is not what init grants; run go test ./cmd/iotpipe -run TestSecurityDocPrincipals -update\nhave:\n%s\nwant:\n%s", path, have, want)
}
