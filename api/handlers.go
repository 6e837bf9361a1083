package api

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/internal/certs"
	"github.com/iotpipe/iotpipe/registry"
	"github.com/iotpipe/iotpipe/shadow"
)

// maxBody bounds every request body: the shadow limit plus room for the
// envelope (a larger body is 413 before it is parsed).
func (a *API) maxBody() int64 { return int64(a.cfg.Limits.MaxBytes) + 16<<10 }

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // an alert rule's operator ">" stays ">", not "\u003e"
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ifMatch reads the If-Match version: 428 when missing, 400 when it is
// not one strong ETag of this API.
func ifMatch(w http.ResponseWriter, r *http.Request) (int64, bool) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		writeProblem(w, r, http.StatusPreconditionRequired, CodePreconditionReq, `send If-Match with the ETag of the version you read (GET it first), e.g. If-Match: "3"`)
		return 0, false
	}
	s, ok := strings.CutPrefix(h, `"`)
	if ok {
		s, ok = strings.CutSuffix(s, `"`)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil || v < 0 {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("If-Match %q is not an ETag of this API (a quoted version, e.g. \"3\")", h))
		return 0, false
	}
	return v, true
}

// readBody reads a bounded body of the media type want.
func (a *API) readBody(w http.ResponseWriter, r *http.Request, want ...string) ([]byte, bool) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	ok := false
	for _, m := range want {
		ok = ok || (err == nil && mt == m)
	}
	if !ok {
		writeProblem(w, r, http.StatusUnsupportedMediaType, CodeUnsupportedMedia, fmt.Sprintf("Content-Type must be %s", strings.Join(want, " or ")))
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody()))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeProblemValue(w, r, Problem{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Limit: "size",
			Detail: fmt.Sprintf("the body is larger than %d bytes", mbe.Limit)})
		return nil, false
	}
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, "read the body: "+err.Error())
		return nil, false
	}
	return b, true
}

func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, ok := a.readBody(w, r, "application/json")
	if !ok {
		return false
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		writeProblem(w, r, http.StatusBadRequest, CodeMalformed, "the body: "+err.Error())
		return false
	}
	return true
}

func (a *API) getOpenAPI(w http.ResponseWriter, _ *http.Request, _ Token) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPI)
}

// page reads limit and after.
func (a *API) page(w http.ResponseWriter, r *http.Request) (limit int, after string, ok bool) {
	q := r.URL.Query()
	limit = a.cfg.DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > a.cfg.MaxPageSize {
			writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("limit %q: want 1 to %d", s, a.cfg.MaxPageSize))
			return 0, "", false
		}
		limit = n
	}
	return limit, q.Get("after"), true
}

// Page is a list response: items in a stable order (by id) and, when
// there may be more, the cursor of the next page (pass it as after).
type Page[T any] struct {
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, after, ok := a.page(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := registry.Filter{Group: q.Get("group"), Status: registry.Status(q.Get("status")), After: after, Limit: limit}
	switch f.Status {
	case "", registry.Active, registry.Disabled, registry.Revoked:
	default:
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("status %q: want active, disabled or revoked", f.Status))
		return
	}
	for _, kv := range q["attribute"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || k == "" {
			writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("attribute %q: want key:value", kv))
			return
		}
		if f.Attributes == nil {
			f.Attributes = map[string]string{}
		}
		f.Attributes[k] = v
	}
	if s := q.Get("silent_minutes"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("silent_minutes %q: want a positive whole number", s))
			return
		}
		f.SilentFor = time.Duration(n) * time.Minute
	}
	devs, err := a.reg.List(r.Context(), f)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := Page[registry.Device]{Items: devs}
	if p.Items == nil {
		p.Items = []registry.Device{}
	}
	if len(devs) == limit {
		next := devs[len(devs)-1].ID
		p.Next = &next
	}
	writeJSON(w, http.StatusOK, p)
}

// CreateDevice is the body of POST /v1/devices.
type CreateDevice struct {
	DeviceID    string            `json:"device_id"`
	DisplayName string            `json:"display_name"`
	DeviceType  string            `json:"device_type"`
	Attributes  map[string]string `json:"attributes"`
	Groups      []string          `json:"groups"`
	// CSR, PEM: sign it instead of making a key.
	CSR string `json:"csr"`
}

// Created is the answer of POST /v1/devices.
type Created struct {
	Device      *registry.Device `json:"device"`
	Certificate string           `json:"certificate"`
	// PrivateKey only when no CSR was sent: shown once, never stored.
	PrivateKey    string `json:"private_key,omitempty"`
	CACertificate string `json:"ca_certificate"`
}

func (a *API) createDevice(w http.ResponseWriter, r *http.Request, _ Token) {
	var req CreateDevice
	if !a.decodeBody(w, r, &req) {
		return
	}
	if a.ca == nil {
		writeProblem(w, r, http.StatusServiceUnavailable, CodeUnavailable, "this API has no CA to sign device certificates (--ca-dir)")
		return
	}
	if err := certs.CheckDeviceID(req.DeviceID); err != nil {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	var iss *certs.Issued
	var keyPEM []byte
	var err error
	if req.CSR != "" {
		iss, err = a.ca.IssueClientCSR(req.DeviceID, []byte(req.CSR), a.cfg.CertValidity)
		if err != nil {
			writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, "csr: "+err.Error())
			return
		}
	} else {
		var key any
		iss, key, err = a.ca.IssueClientKey(req.DeviceID, a.cfg.CertValidity)
		if err == nil {
			var der []byte
			der, err = x509.MarshalPKCS8PrivateKey(key)
			keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	err = a.reg.Add(r.Context(), registry.NewDevice{ID: req.DeviceID, DisplayName: req.DisplayName, Type: req.DeviceType,
		Attributes: req.Attributes, Groups: req.Groups, Cert: iss.Cert})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	d, _, err := a.reg.Get(r.Context(), req.DeviceID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/devices/"+url.PathEscape(d.ID))
	w.Header().Set("ETag", etag(d.Version))
	writeJSON(w, http.StatusCreated, Created{Device: d, Certificate: string(certs.EncodeCert(iss.Cert.Raw)),
		PrivateKey: string(keyPEM), CACertificate: string(certs.EncodeCert(a.ca.Cert.Raw))})
}

// DeviceDetail is a device with its certificates.
type DeviceDetail struct {
	*registry.Device
	Certificates []registry.Certificate `json:"certificates"`
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request, _ Token) {
	d, cs, err := a.reg.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if cs == nil {
		cs = []registry.Certificate{}
	}
	w.Header().Set("ETag", etag(d.Version))
	writeJSON(w, http.StatusOK, DeviceDetail{Device: d, Certificates: cs})
}

// UpdateDevice is the body of PATCH /v1/devices/{id}: absent fields stay.
type UpdateDevice struct {
	DisplayName *string           `json:"display_name"`
	DeviceType  *string           `json:"device_type"`
	Attributes  map[string]string `json:"attributes"`
}

func (a *API) updateDevice(w http.ResponseWriter, r *http.Request, _ Token) {
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	var req UpdateDevice
	if !a.decodeBody(w, r, &req) {
		return
	}
	d, err := a.reg.UpdateDevice(r.Context(), r.PathValue("id"), v, registry.Update{DisplayName: req.DisplayName, Type: req.DeviceType, Attributes: req.Attributes})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(d.Version))
	writeJSON(w, http.StatusOK, d)
}

// StatusChange is the body of PUT /v1/devices/{id}/status.
type StatusChange struct {
	Status registry.Status `json:"status"`
}

func (a *API) setStatus(w http.ResponseWriter, r *http.Request, _ Token) {
	var req StatusChange
	if !a.decodeBody(w, r, &req) {
		return
	}
	switch req.Status {
	case registry.Active, registry.Disabled, registry.Revoked:
	default:
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("status %q: want active, disabled or revoked", req.Status))
		return
	}
	id := r.PathValue("id")
	if _, err := a.reg.SetStatus(r.Context(), id, req.Status); err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.cfg.CRLFile != "" || a.cfg.ACLFile != "" || a.cfg.BrokerPIDFile != "" {
		bf := registry.BrokerFiles{ACLFile: a.cfg.ACLFile, PIDFile: a.cfg.BrokerPIDFile}
		if a.cfg.CRLFile != "" && a.ca != nil {
			bf.CA, bf.CRLFile = a.ca, a.cfg.CRLFile
		}
		if _, err := a.reg.ApplyBroker(r.Context(), bf); err != nil {
			a.writeError(w, r, fmt.Errorf("the status is changed but the broker was not told: %w", err))
			return
		}
	}
	d, _, err := a.reg.Get(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(d.Version))
	writeJSON(w, http.StatusOK, d)
}

func writeShadow(w http.ResponseWriter, sh *shadow.Shadow) {
	w.Header().Set("ETag", etag(sh.Version))
	writeJSON(w, http.StatusOK, sh)
}

func (a *API) getShadow(w http.ResponseWriter, r *http.Request, _ Token) {
	sh, err := a.shadows.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeShadow(w, sh)
}

// patchShadow: the body is a JSON merge patch of the shadow document,
// {"state": {"desired": <merge patch>}}; or, as
// application/merge-patch+json, the merge patch of desired itself.
func (a *API) patchShadow(w http.ResponseWriter, r *http.Request, _ Token) {
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	b, ok := a.readBody(w, r, "application/merge-patch+json")
	if !ok {
		return
	}
	sh, err := a.shadows.PatchDesired(r.Context(), r.PathValue("id"), v, b)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeShadow(w, sh)
}

func (a *API) putConfig(w http.ResponseWriter, r *http.Request, _ Token) {
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	b, ok := a.readBody(w, r, "application/json")
	if !ok {
		return
	}
	sh, err := a.shadows.SetConfig(r.Context(), r.PathValue("id"), v, b)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeShadow(w, sh)
}

func (a *API) listGroups(w http.ResponseWriter, r *http.Request, _ Token) {
	limit, after, ok := a.page(w, r)
	if !ok {
		return
	}
	gs, err := a.reg.ListGroups(r.Context(), after, limit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := Page[registry.Group]{Items: gs}
	if p.Items == nil {
		p.Items = []registry.Group{}
	}
	if len(gs) == limit {
		next := gs[len(gs)-1].ID
		p.Next = &next
	}
	writeJSON(w, http.StatusOK, p)
}

// CreateGroup is the body of POST /v1/groups.
type CreateGroup struct {
	GroupID     string            `json:"group_id"`
	ParentID    string            `json:"parent_id"`
	DisplayName string            `json:"display_name"`
	Attributes  map[string]string `json:"attributes"`
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request, _ Token) {
	var req CreateGroup
	if !a.decodeBody(w, r, &req) {
		return
	}
	if err := certs.CheckID(req.GroupID); err != nil {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, "group_id: "+err.Error())
		return
	}
	err := a.reg.CreateGroup(r.Context(), registry.Group{ID: req.GroupID, Parent: req.ParentID, DisplayName: req.DisplayName, Attributes: req.Attributes})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	gs, err := a.reg.ListGroups(r.Context(), "", 0)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, g := range gs {
		if g.ID == req.GroupID {
			w.Header().Set("Location", "/v1/groups/"+url.PathEscape(g.ID))
			writeJSON(w, http.StatusCreated, g)
			return
		}
	}
	a.writeError(w, r, fmt.Errorf("group %s vanished after creation", req.GroupID))
}

// Members is the body of POST /v1/groups/{id}/members.
type Members struct {
	DeviceIDs []string `json:"device_ids"`
}

func (a *API) addMembers(w http.ResponseWriter, r *http.Request, _ Token) {
	var req Members
	if !a.decodeBody(w, r, &req) {
		return
	}
	if len(req.DeviceIDs) == 0 {
		writeProblem(w, r, http.StatusBadRequest, CodeBadRequest, "device_ids is empty")
		return
	}
	if err := a.reg.AddToGroup(r.Context(), r.PathValue("id"), req.DeviceIDs...); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
