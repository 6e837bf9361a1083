//go:build integration

package api

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/internal/registrytest"
	"github.com/iotpipe/iotpipe/internal/service"
	"github.com/iotpipe/iotpipe/internal/testenv"
)

// harness serves the API over TLS (a server certificate of a project CA)
// on a migrated schema, with one token per role, and checks every request
// and response against openapi.json.
type harness struct {
	t      *testing.T
	a      *API
	url    string
	client *http.Client
	v      validator.Validator
	tok    map[Role]string
	mu     sync.Mutex
	seen   map[string]bool
	dsn    string
	schema string
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	env := testenv.Load(t)
	schema, dsn := registrytest.Schema(t, env)
	caDir := t.TempDir()
	ca, err := certs.Init(caDir, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Insecure, cfg.DSN, cfg.Schema, cfg.CADir = true, dsn, schema, caDir
	cfg.Relay.Disabled = true
	cfg.Limits.MaxBytes = 1024
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, service.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, time.Minute)
	if err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	srv := httptest.NewUnstartedServer(a.Handler())
	iss, key, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{iss.Cert.Raw}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	doc, err := libopenapi.NewDocument(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	h := &harness{t: t, a: a, url: srv.URL, v: v, seen: map[string]bool{}, tok: map[Role]string{}, dsn: dsn, schema: schema,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}}
	for _, r := range []Role{RoleAdmin, RoleOperator, RoleViewer} {
		secret, _, err := a.tokens.Create(ctx, "test "+string(r), r, 0)
		if err != nil {
			t.Fatal(err)
		}
		h.tok[r] = secret
	}
	return h
}

type call struct {
	route   string // "PATCH /v1/devices/{id}/shadow": recorded as exercised
	path    string
	role    Role   // token to send; "" none
	token   string // a literal token instead
	ifMatch string
	ctype   string
	body    string
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
}

func (a answer) problem(t *testing.T) Problem {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with Content-Type %q, want application/problem+json: %s", a.status, ct, a.body)
	}
	var p Problem
	a.json(t, &p)
	if p.Status != a.status || p.Type != "urn:iotpipe:problem:"+p.Code || p.Title == "" {
		t.Fatalf("problem %+v does not match status %d", p, a.status)
	}
	return p
}

func (h *harness) do(c call) answer {
	h.t.Helper()
	method, _, _ := strings.Cut(c.route, " ")
	req := func() *http.Request {
		r, err := http.NewRequest(method, h.url+c.path, strings.NewReader(c.body))
		if err != nil {
			h.t.Fatal(err)
		}
		if c.role != "" {
			r.Header.Set("Authorization", "Bearer "+h.tok[c.role])
		}
		if c.token != "" {
			r.Header.Set("Authorization", "Bearer "+c.token)
		}
		if c.ifMatch != "" {
			r.Header.Set("If-Match", c.ifMatch)
		}
		if c.body != "" {
			ct := c.ctype
			if ct == "" {
				ct = "application/json"
			}
			r.Header.Set("Content-Type", ct)
		}
		return r
	}
	resp, err := h.client.Do(req())
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ans := answer{status: resp.StatusCode, header: resp.Header, body: b}
	// Check the exchange against openapi.json: the response always, the
	// request when the server accepted it.
	vr := req()
	vr.URL.Scheme, vr.URL.Host = "", ""
	vr.RequestURI = ""
	if resp.StatusCode < 300 {
		if ok, errs := h.v.ValidateHttpRequest(req()); !ok {
			for _, e := range errs {
				h.t.Errorf("%s %s: request does not match openapi.json: %s (%s)", method, c.path, e.Message, e.Reason)
			}
		}
	}
	vresp := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(b)), Request: req()}
	if ok, errs := h.v.ValidateHttpResponse(req(), vresp); !ok {
		for _, e := range errs {
			h.t.Errorf("%s %s → %d: response does not match openapi.json: %s (%s) %s", method, c.path, resp.StatusCode, e.Message, e.Reason, b)
		}
	}
	h.mu.Lock()
	h.seen[c.route] = true
	h.mu.Unlock()
	return ans
}

func want(t *testing.T, a answer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
}

// Every route, each answered as openapi.json says: registry, shadow and
// configuration, authentication and roles, If-Match, limits, paging.
func TestAPIRoutes(t *testing.T) {
	h := newHarness(t, nil)
	// The document itself, without a token.
	a := h.do(call{route: "GET /v1/openapi.json", path: "/v1/openapi.json"})
	want(t, a, 200)
	if !bytes.Equal(a.body, OpenAPI) {
		t.Fatal("served document differs from openapi.json")
	}

	// Authentication and roles.
	want(t, h.do(call{route: "GET /v1/devices", path: "/v1/devices"}), 401)
	if p := h.do(call{route: "GET /v1/devices", path: "/v1/devices", token: "iotp_abcdefgh_nope"}).problem(t); p.Code != CodeUnauthorized {
		t.Fatalf("bad token: %+v", p)
	}
	if p := h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleOperator, body: `{"device_id":"x1"}`}).problem(t); p.Status != 403 || p.Code != CodeForbidden {
		t.Fatalf("operator creating a device: %+v", p)
	}

	// Groups (nested) and devices.
	want(t, h.do(call{route: "POST /v1/groups", path: "/v1/groups", role: RoleAdmin, body: `{"group_id":"site-a","display_name":"Site A"}`}), 201)
	want(t, h.do(call{route: "POST /v1/groups", path: "/v1/groups", role: RoleAdmin, body: `{"group_id":"hall-1","parent_id":"site-a"}`}), 201)
	if p := h.do(call{route: "POST /v1/groups", path: "/v1/groups", role: RoleAdmin, body: `{"group_id":"site-a"}`}).problem(t); p.Status != 409 {
		t.Fatalf("duplicate group: %+v", p)
	}
	var created Created
	a = h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleAdmin,
		body: `{"device_id":"dev-1","device_type":"thermo","attributes":{"site":"lyon","fw":"1"},"groups":["hall-1"]}`})
	want(t, a, 201)
	a.json(t, &created)
	if created.PrivateKey == "" || !strings.Contains(created.Certificate, "BEGIN CERTIFICATE") || created.Device.ID != "dev-1" {
		t.Fatalf("created %+v", created)
	}
	// With a CSR: no key in the answer, the certificate holds the CSR's key.
	key, _ := certs.NewKey()
	csrDER, _ := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	csr := strings.ReplaceAll(string(pemBlock("CERTIFICATE REQUEST", csrDER)), "\n", `\n`)
	a = h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleAdmin, body: `{"device_id":"dev-2","attributes":{"site":"paris"},"csr":"` + csr + `"}`})
	want(t, a, 201)
	created = Created{}
	a.json(t, &created)
	if created.PrivateKey != "" {
		t.Fatal("a key was made although a CSR was sent")
	}
	if p := h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleAdmin, body: `{"device_id":"dev-1"}`}).problem(t); p.Status != 409 {
		t.Fatalf("duplicate device: %+v", p)
	}
	for i := 3; i <= 5; i++ {
		want(t, h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleAdmin, body: fmt.Sprintf(`{"device_id":"dev-%d"}`, i)}), 201)
	}
	want(t, h.do(call{route: "POST /v1/groups/{id}/members", path: "/v1/groups/site-a/members", role: RoleAdmin, body: `{"device_ids":["dev-3"]}`}), 204)

	// Paging: stable order by id, no gap, no repeat.
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		var p struct {
			Items []struct {
				ID string `json:"device_id"`
			}
			Next *string
		}
		a := h.do(call{route: "GET /v1/devices", path: "/v1/devices?limit=2&after=" + after, role: RoleViewer})
		want(t, a, 200)
		a.json(t, &p)
		for _, d := range p.Items {
			ids = append(ids, d.ID)
		}
		if p.Next == nil || pages > 5 {
			break
		}
		after = *p.Next
	}
	if strings.Join(ids, ",") != "dev-1,dev-2,dev-3,dev-4,dev-5" {
		t.Fatalf("paged ids %v", ids)
	}
	// Filters: attribute, nested group, silent.
	list := func(q string) string {
		t.Helper()
		var p struct {
			Items []struct {
				ID string `json:"device_id"`
			}
		}
		a := h.do(call{route: "GET /v1/devices", path: "/v1/devices?" + q, role: RoleViewer})
		want(t, a, 200)
		a.json(t, &p)
		var out []string
		for _, d := range p.Items {
			out = append(out, d.ID)
		}
		return strings.Join(out, ",")
	}
	if got := list("attribute=site:lyon"); got != "dev-1" {
		t.Fatalf("attribute filter: %s", got)
	}
	if got := list("group=site-a"); got != "dev-1,dev-3" {
		t.Fatalf("nested group filter: %s", got)
	}
	if got := list("silent_minutes=10&limit=3"); got != "dev-1,dev-2,dev-3" {
		t.Fatalf("silent filter (never seen devices are silent): %s", got)
	}
	want(t, h.do(call{route: "GET /v1/devices", path: "/v1/devices?limit=0", role: RoleViewer}), 400)

	a = h.do(call{route: "GET /v1/groups", path: "/v1/groups", role: RoleViewer})
	want(t, a, 200)

	// A device: read, update attributes with If-Match.
	a = h.do(call{route: "GET /v1/devices/{id}", path: "/v1/devices/dev-1", role: RoleViewer})
	want(t, a, 200)
	tag := a.header.Get("ETag")
	want(t, h.do(call{route: "GET /v1/devices/{id}", path: "/v1/devices/nope", role: RoleViewer}), 404)
	want(t, h.do(call{route: "PATCH /v1/devices/{id}", path: "/v1/devices/dev-1", role: RoleOperator, body: `{"display_name":"Boiler"}`}), 428)
	a = h.do(call{route: "PATCH /v1/devices/{id}", path: "/v1/devices/dev-1", role: RoleOperator, ifMatch: tag, body: `{"display_name":"Boiler","attributes":{"site":"lyon","fw":"2"}}`})
	want(t, a, 200)
	if a.header.Get("ETag") == tag {
		t.Fatal("the ETag did not change")
	}
	if p := h.do(call{route: "PATCH /v1/devices/{id}", path: "/v1/devices/dev-1", role: RoleOperator, ifMatch: tag, body: `{"display_name":"x"}`}).problem(t); p.Status != 412 || p.Code != CodeVersionConflict {
		t.Fatalf("stale If-Match: %+v", p)
	}
	want(t, h.do(call{route: "PATCH /v1/devices/{id}", path: "/v1/devices/dev-1", role: RoleViewer, ifMatch: tag, body: `{}`}), 403)

	// Shadow: GET, PATCH (If-Match, media type, limits), config PUT.
	a = h.do(call{route: "GET /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleViewer})
	want(t, a, 200)
	if a.header.Get("ETag") != `"0"` {
		t.Fatalf("new shadow ETag %q", a.header.Get("ETag"))
	}
	mp := "application/merge-patch+json"
	want(t, h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ctype: mp, body: `{"led":"on"}`}), 428)
	want(t, h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, body: `{"led":"on"}`}), 415)
	want(t, h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleViewer, ifMatch: `"0"`, ctype: mp, body: `{"led":"on"}`}), 403)
	if p := h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `[1,2]`}).problem(t); p.Code != CodeMalformed {
		t.Fatalf("malformed: %+v", p)
	}
	if p := h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `{"a":"` + strings.Repeat("x", 2000) + `"}`}).problem(t); p.Status != 413 || p.Limit != "size" {
		t.Fatalf("too large: %+v", p)
	}
	if p := h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}`}).problem(t); p.Status != 413 || p.Limit != "depth" {
		t.Fatalf("too deep: %+v", p)
	}
	a = h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `{"led":"on","mode":{"eco":true}}`})
	want(t, a, 200)
	var sh struct {
		Version int64
		State   struct{ Desired, Delta map[string]any }
	}
	a.json(t, &sh)
	if sh.Version != 1 || a.header.Get("ETag") != `"1"` || sh.State.Delta["led"] != "on" {
		t.Fatalf("after PATCH: %s", a.body)
	}
	if p := h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/dev-1/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `{"led":"off"}`}).problem(t); p.Status != 412 || p.CurrentVersion == nil || *p.CurrentVersion != 1 {
		t.Fatalf("stale shadow PATCH: %+v", p)
	}
	want(t, h.do(call{route: "PUT /v1/devices/{id}/config", path: "/v1/devices/dev-1/config", role: RoleOperator, body: `{"rate":5}`}), 428)
	a = h.do(call{route: "PUT /v1/devices/{id}/config", path: "/v1/devices/dev-1/config", role: RoleOperator, ifMatch: `"1"`, body: `{"rate":5}`})
	want(t, a, 200)
	sh.State.Desired = nil
	a.json(t, &sh)
	if sh.Version != 2 || fmt.Sprint(sh.State.Desired["config"]) != "map[rate:5]" {
		t.Fatalf("after PUT config: %s", a.body)
	}
	want(t, h.do(call{route: "GET /v1/devices/{id}/shadow", path: "/v1/devices/nope/shadow", role: RoleViewer}), 404)
	want(t, h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/nope/shadow", role: RoleOperator, ifMatch: `"0"`, ctype: mp, body: `{"a":1}`}), 404)

	// Status: operators may not, admins may; revoked is final.
	want(t, h.do(call{route: "PUT /v1/devices/{id}/status", path: "/v1/devices/dev-5/status", role: RoleOperator, body: `{"status":"disabled"}`}), 403)
	want(t, h.do(call{route: "PUT /v1/devices/{id}/status", path: "/v1/devices/dev-5/status", role: RoleAdmin, body: `{"status":"revoked"}`}), 200)
	want(t, h.do(call{route: "PUT /v1/devices/{id}/status", path: "/v1/devices/dev-5/status", role: RoleAdmin, body: `{"status":"active"}`}), 409)
	want(t, h.do(call{route: "PUT /v1/devices/{id}/status", path: "/v1/devices/dev-5/status", role: RoleAdmin, body: `{"status":"gone"}`}), 400)

	// Alert rules (alert_rules_integration_test.go).
	exerciseAlertRules(t, h)

	// A revoked token is refused from the next request.
	tokID := strings.SplitN(h.tok[RoleViewer], "_", 3)[1]
	if err := h.a.tokens.Revoke(testenv.Context(t, 10*time.Second), tokID); err != nil {
		t.Fatal(err)
	}
	want(t, h.do(call{route: "GET /v1/groups", path: "/v1/groups", role: RoleViewer}), 401)

	for _, r := range h.a.Routes() {
		if !h.seen[r] {
			t.Errorf("route %s was not exercised", r)
		}
	}
}

// Concurrent PATCHes with the same If-Match: exactly one succeeds, the
// others get 412 and nothing of theirs is applied.
func TestAPIConcurrentPatch(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RatePerToken = 0 })
	want(t, h.do(call{route: "POST /v1/devices", path: "/v1/devices", role: RoleAdmin, body: `{"device_id":"race"}`}), 201)
	const n = 10
	status := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status[i] = h.do(call{route: "PATCH /v1/devices/{id}/shadow", path: "/v1/devices/race/shadow", role: RoleOperator, ifMatch: `"0"`,
				ctype: "application/merge-patch+json", body: fmt.Sprintf(`{"writer":%d}`, i)}).status
		})
	}
	wg.Wait()
	ok, conflict := 0, 0
	winner := -1
	for i, s := range status {
		switch s {
		case 200:
			ok++
			winner = i
		case 412:
			conflict++
		default:
			t.Fatalf("status %d", s)
		}
	}
	a := h.do(call{route: "GET /v1/devices/{id}/shadow", path: "/v1/devices/race/shadow", role: RoleViewer})
	var sh struct {
		Version int64
		State   struct{ Desired map[string]any }
	}
	a.json(t, &sh)
	if ok != 1 || conflict != n-1 || sh.Version != 1 || sh.State.Desired["writer"] != float64(winner) {
		t.Fatalf("%d ok, %d conflicts, shadow %s; want exactly one winner (%d)", ok, conflict, a.body, winner)
	}
}

// The rate limit per token answers 429 with Retry-After.
func TestAPIRateLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RatePerToken, c.RateBurst = 1, 3 })
	var last answer
	for range 5 {
		last = h.do(call{route: "GET /v1/groups", path: "/v1/groups", role: RoleViewer})
	}
	if p := last.problem(t); p.Status != 429 || last.header.Get("Retry-After") == "" {
		t.Fatalf("after a burst: %+v", p)
	}
	// Another token is not affected.
	want(t, h.do(call{route: "GET /v1/groups", path: "/v1/groups", role: RoleAdmin}), 200)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
