package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/iotpipe/iotpipe/registry"
	"github.com/iotpipe/iotpipe/shadow"
)

// Problem is an RFC 9457 problem details object, the one shape of every
// error the API returns (Content-Type application/problem+json).
type Problem struct {
	// Type is urn:iotpipe:problem:<code>.
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Instance is the request path.
	Instance string `json:"instance,omitempty"`
	// Code is the machine-readable reason (the end of Type).
	Code string `json:"code"`
	// CurrentVersion: on version_conflict, the resource's version now.
	CurrentVersion *int64 `json:"current_version,omitempty"`
	// Limit: on too_large, which limit ("size", "depth", "keys").
	Limit string `json:"limit,omitempty"`
	// Errors: on invalid_rule, every field at fault.
	Errors []FieldProblem `json:"errors,omitempty"`
}

// FieldProblem is one field of a request that cannot be used, and why.
type FieldProblem struct {
	Field  string `json:"field"`
	Value  string `json:"value,omitempty"`
	Reason string `json:"reason"`
}

// Problem codes.
const (
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMalformed        = "malformed"
	CodeTooLarge         = "too_large"
	CodeVersionConflict  = "version_conflict"
	CodePreconditionReq  = "precondition_required"
	CodeBadRequest       = "bad_request"
	CodeConflict         = "conflict"
	CodeRateLimited      = "rate_limited"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	// CodeInvalidRule: an alert rule the alert stage could not evaluate
	// (422, with Problem.Errors).
	CodeInvalidRule = "invalid_rule"
)

var titles = map[string]string{
	CodeUnauthorized:     "Authentication required",
	CodeForbidden:        "Not allowed for this role",
	CodeNotFound:         "Not found",
	CodeMalformed:        "Malformed document",
	CodeTooLarge:         "Document too large",
	CodeVersionConflict:  "Version conflict",
	CodePreconditionReq:  "If-Match required",
	CodeBadRequest:       "Bad request",
	CodeConflict:         "Conflict",
	CodeRateLimited:      "Too many requests",
	CodeUnsupportedMedia: "Unsupported media type",
	CodeUnavailable:      "Unavailable",
	CodeInternal:         "Internal error",
	CodeInvalidRule:      "Alert rule cannot be evaluated",
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	writeProblemValue(w, r, Problem{Status: status, Code: code, Detail: detail})
}

func writeProblemValue(w http.ResponseWriter, r *http.Request, p Problem) {
	p.Type = "urn:iotpipe:problem:" + p.Code
	p.Title = titles[p.Code]
	p.Instance = r.URL.Path
	b, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(p.Status)
	_, _ = w.Write(b)
}

// writeError maps a domain error to its problem; anything unknown is a
// 500 whose detail is logged, not shown.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var le *shadow.LimitError
	var ce *shadow.ConflictError
	switch {
	case errors.As(err, &ce):
		cur := ce.Current
		writeProblemValue(w, r, Problem{Status: http.StatusPreconditionFailed, Code: CodeVersionConflict, Detail: ce.Error(), CurrentVersion: &cur})
	case errors.Is(err, registry.ErrConflict):
		writeProblem(w, r, http.StatusPreconditionFailed, CodeVersionConflict, err.Error())
	case errors.As(err, &le):
		writeProblemValue(w, r, Problem{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Detail: le.Error(), Limit: le.Limit})
	case errors.Is(err, shadow.ErrMalformed):
		writeProblem(w, r, http.StatusBadRequest, CodeMalformed, err.Error())
	case errors.Is(err, shadow.ErrNoDevice), errors.Is(err, registry.ErrNotFound):
		writeProblem(w, r, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrGroupExists), errors.Is(err, registry.ErrRevoked):
		writeProblem(w, r, http.StatusConflict, CodeConflict, err.Error())
	default:
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeProblem(w, r, http.StatusInternalServerError, CodeInternal, "the request failed; the server log has the cause")
	}
}
