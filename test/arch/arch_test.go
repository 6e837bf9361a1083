// Package arch checks the import direction of the module with `go list`
// (DESIGN.md, "Layout"): stages import internal/*, schemas and the shared
// domain packages (registry), never each other, and nothing shared
// imports a stage.
//
// A stage is any package of the module outside the shared and tooling
// trees (internal, schemas, cmd, bench, test, deploy, scripts) that is not
// only a grouping directory of other packages: today bridge, processor,
// sink/lake and sink/timescale, and any stage added later (alert/,
// notify/, ...) without editing this test. A grouping package such as
// sink (shared consumer plumbing of sink/*) is shared, not a stage.
package arch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath   string
	Module       *struct{ Path string }
	Deps         []string // transitive imports of the non-test code
	TestImports  []string
	XTestImports []string
}

// sharedRoots are the top-level trees that hold no stage.
var sharedRoots = []string{"internal", "schemas", "registry", "alerting", "shadow", "cmd", "bench", "test", "deploy", "scripts"}

// domainRoots are the shared trees stages may import: plumbing (internal),
// wire formats (schemas) and shared domain code (registry: devices,
// groups, certificates; alerting: alert rules and the pure evaluation core
// shared by the alert stage, notify and the API; shadow: device shadows and
// their outbox; DESIGN.md "Layout direction").
var domainRoots = []string{"internal", "schemas", "registry", "alerting", "shadow"}

// rel is the path of p inside module mod ("" when p is not in it).
func rel(mod, p string) (string, bool) {
	if p == mod {
		return "", true
	}
	r, ok := strings.CutPrefix(p, mod+"/")
	return r, ok
}

// stages returns the stage packages among pkgs (paths relative to mod).
func stages(mod string, pkgs []pkg) map[string]bool {
	var all []string
	for _, p := range pkgs {
		if r, ok := rel(mod, p.ImportPath); ok && r != "" {
			all = append(all, r)
		}
	}
	out := map[string]bool{}
	for _, r := range all {
		if slices.Contains(sharedRoots, strings.SplitN(r, "/", 2)[0]) {
			continue
		}
		grouping := slices.ContainsFunc(all, func(o string) bool { return strings.HasPrefix(o, r+"/") })
		if !grouping {
			out[r] = true
		}
	}
	return out
}

// violations lists every import against the direction, one line each.
func violations(mod string, pkgs []pkg) []string {
	st := stages(mod, pkgs)
	var out []string
	for _, p := range pkgs {
		self, ok := rel(mod, p.ImportPath)
		if !ok {
			continue
		}
		root := strings.SplitN(self, "/", 2)[0]
		shared := slices.Contains(domainRoots, root)
		if !st[self] && !shared {
			continue // commands, tools, tests, grouping packages
		}
		check := func(kind string, imports []string) {
			for _, imp := range imports {
				r, ok := rel(mod, imp)
				if !ok || r == self || !st[r] {
					continue
				}
				if st[self] {
					out = append(out, fmt.Sprintf("stage %s imports stage %s (%s)", self, r, kind))
				} else {
					out = append(out, fmt.Sprintf("shared package %s imports stage %s (%s)", self, r, kind))
				}
			}
		}
		check("code, directly or indirectly", p.Deps)
		check("tests", p.TestImports)
		check("external tests", p.XTestImports)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func TestImportDirection(t *testing.T) {
	// With the integration tag too: the integration tests' imports count.
	cmd := exec.Command("go", "list", "-e", "-tags", "integration", "-json", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 || pkgs[0].Module == nil {
		t.Fatalf("go list listed no package of a module")
	}
	mod := pkgs[0].Module.Path
	st := stages(mod, pkgs)
	// The four stages of today must be recognised, or the check is empty.
	for _, want := range []string{"bridge", "processor", "sink/lake", "sink/timescale"} {
		if !st[want] {
			t.Errorf("%s is not recognised as a stage; stages found: %v", want, st)
		}
	}
	for _, v := range violations(mod, pkgs) {
		t.Error(v)
	}
}

// The checker itself, on a made-up module: it must catch each kind of
// wrong import and accept the right ones.
func TestViolationsOfAMadeUpModule(t *testing.T) {
	const m = "example.com/x"
	p := func(path string, deps, test []string) pkg {
		q := func(l []string) []string {
			var o []string
			for _, s := range l {
				if strings.Contains(s, ".") && !strings.HasPrefix(s, "example.com") {
					o = append(o, s)
				} else {
					o = append(o, m+"/"+s)
				}
			}
			return o
		}
		return pkg{ImportPath: m + "/" + path, Deps: append(q(deps), "fmt"), TestImports: q(test)}
	}
	pkgs := []pkg{
		p("bridge", []string{"internal/kafkax", "schemas"}, []string{"internal/testenv"}),
		p("processor", []string{"schemas", "bridge"}, nil),              // wrong: stage → stage
		p("sink", []string{"schemas"}, nil),                             // grouping package: shared
		p("sink/lake", []string{"sink", "internal/objstore"}, nil),      // right: its grouping package
		p("sink/timescale", []string{"schemas"}, []string{"sink/lake"}), // wrong in tests
		// A new stage, wrong through internal/cli: go list names the
		// stages internal/cli imports among alert's Deps as well.
		p("alert", []string{"internal/cli", "bridge", "processor"}, nil),
		p("internal/cli", []string{"bridge", "processor"}, nil),         // wrong: shared → stage
		p("internal/kafkax", []string{"github.com/twmb/franz-go"}, nil), // right
		p("schemas", nil, nil), // right
		p("cmd/iotpipe", []string{"bridge", "processor", "alert"}, nil), // right: commands may
		p("test/e2e", nil, []string{"bridge"}),                          // right: tests may
	}
	want := []string{
		"shared package internal/cli imports stage bridge (code, directly or indirectly)",
		"shared package internal/cli imports stage processor (code, directly or indirectly)",
		"stage alert imports stage bridge (code, directly or indirectly)",
		"stage alert imports stage processor (code, directly or indirectly)",
		"stage processor imports stage bridge (code, directly or indirectly)",
		"stage sink/timescale imports stage sink/lake (tests)",
	}
	got := violations(m, pkgs)
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := stages(m, pkgs); len(st) != 5 || st["sink"] || !st["alert"] {
		t.Errorf("stages = %v, want bridge, processor, sink/lake, sink/timescale, alert", st)
	}
}
