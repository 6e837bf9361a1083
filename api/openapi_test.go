package api

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/iotpipe/iotpipe/internal/service"
)

func testAPI(t *testing.T) *API {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Insecure, cfg.DSN, cfg.Relay.Disabled = true, "postgres://x@localhost/x", true
	a, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The document is valid OpenAPI 3.1, and it and the route table list the
// same routes with the same roles.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := libopenapi.NewDocument(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.json: %s", e.Error())
		}
	}
	var raw struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &raw); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw.OpenAPI, "3.1") {
		t.Errorf("openapi %q, want 3.1.x", raw.OpenAPI)
	}
	a := testAPI(t)
	table := map[string]Role{}
	for _, r := range a.table() {
		table[r.method+" "+r.pattern] = r.role
	}
	var inDoc []string
	for path, ops := range raw.Paths {
		for method, body := range ops {
			if method == "parameters" {
				continue
			}
			key := strings.ToUpper(method) + " " + path
			inDoc = append(inDoc, key)
			role, ok := table[key]
			if !ok {
				t.Errorf("openapi.json has %s, the server has no such route", key)
				continue
			}
			var op struct {
				Role     string           `json:"x-iotpipe-role"`
				Security []map[string]any `json:"security"`
			}
			_ = json.Unmarshal(body, &op)
			want := string(role)
			if want == "" {
				want = "none"
			}
			if op.Role != want {
				t.Errorf("%s: openapi.json says role %q, the server wants %q", key, op.Role, want)
			}
			if (role == "") != (len(op.Security) == 0) {
				t.Errorf("%s: security %v does not match role %q", key, op.Security, role)
			}
		}
	}
	for key := range table {
		if !slices.Contains(inDoc, key) {
			t.Errorf("route %s is not in openapi.json", key)
		}
	}
	// Path parameters are named alike in both.
	re := regexp.MustCompile(`\{[a-z_]+\}`)
	for key := range table {
		if len(re.FindAllString(key, -1)) > 1 {
			t.Errorf("%s: more than one path parameter; the test assumes {id}", key)
		}
	}
}
