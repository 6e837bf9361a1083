package main

// `iotpipe devices shadow get|set` and `iotpipe devices config set`: an
// operator's client of iotpipe api (the same REST API as everyone else,
// with a bearer token).

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/iotpipe/iotpipe/api"
	"github.com/iotpipe/iotpipe/internal/certs"
)

// apiFlags reach iotpipe api.
type apiFlags struct {
	url, token, caFile string
	timeout            time.Duration
}

func (a *apiFlags) bind(f *cmdFlags) {
	f.Group("API")
	f.String(&a.url, "api-url", "https://localhost:8443", "base URL of iotpipe api")
	f.Secret(&a.token, "api-token", "", "bearer token (iotpipe tokens create --role operator)")
	f.String(&a.caFile, "api-ca-file", "", "PEM file of the CA the API's certificate must chain to (empty: the system's roots)")
	f.Duration(&a.timeout, "timeout", 30*time.Second, "time the command has to finish")
}

func (a *apiFlags) check() error {
	var errs []error
	if u, err := url.Parse(a.url); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, settingErr("api-url", a.url, errors.New("want https://host:port")))
	}
	if a.token == "" {
		errs = append(errs, settingErr("api-token", "", errors.New("no token given (iotpipe tokens create --role operator)")))
	}
	if a.timeout <= 0 {
		errs = append(errs, settingErr("timeout", a.timeout.String(), errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

func (a *apiFlags) client() (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.caFile != "" {
		pool, err := certs.LoadPool(a.caFile)
		if err != nil {
			return nil, settingErr("api-ca-file", a.caFile, err)
		}
		tc.RootCAs = pool
	}
	return &http.Client{Timeout: a.timeout, Transport: &http.Transport{TLSClientConfig: tc}}, nil
}

// call does one request and returns the body of a 2xx answer with its
// ETag, or the problem the API answered, as an error.
func (a *apiFlags) call(ctx context.Context, method, path, ctype, ifMatch string, body []byte) ([]byte, string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.url, "/")+path, strings.NewReader(string(body)))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s (%s): %w", method, path, settingName("api-url"), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var p api.Problem
		if json.Unmarshal(b, &p) == nil && p.Code != "" {
			return nil, "", &apiError{p}
		}
		return nil, "", fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, resp.Header.Get("ETag"), nil
}

// apiError is a problem the API answered.
type apiError struct{ p api.Problem }

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s): %s", e.p.Title, e.p.Status, e.p.Code, e.p.Detail)
}

const devicesShadowUsage = `Usage: iotpipe devices shadow <get|set> <id> [flags]

  get <id>   print the device's shadow (desired, reported, delta, metadata, version)
  set <id>   change desired with a JSON merge patch (--patch '{"led":"on","old":null}')
`

func runDevicesShadow(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, devicesShadowUsage, "which shadow command? get or set"); help {
		return err
	}
	switch args[0] {
	case "get", "set":
		return runDevicesAPI(ctx, env, "shadow "+args[0], args[1:])
	}
	return &UsageError{fmt.Errorf("unknown shadow command %q: want get or set", args[0])}
}

const devicesConfigUsage = `Usage: iotpipe devices config set <id> --json '{...}' [flags]

  set <id>   replace the device's desired configuration (desired.config), which is
             published retained on devices/<id>/config
`

func runDevicesConfig(ctx context.Context, env Env, args []string) error {
	if help, err := groupHelp(env, args, devicesConfigUsage, "which config command? set"); help {
		return err
	}
	if args[0] != "set" {
		return &UsageError{fmt.Errorf("unknown config command %q: want set", args[0])}
	}
	return runDevicesAPI(ctx, env, "config set", args[1:])
}

func runDevicesAPI(ctx context.Context, env Env, cmd string, args []string) error {
	var a apiFlags
	var doc, ifMatch string
	help := map[string]string{
		"shadow get": "Print a device's shadow from iotpipe api.",
		"shadow set": "Change a device's desired state with a JSON merge patch (RFC 7386: null deletes a key).\nWithout --if-match the current version is read first; a change made meanwhile is refused (412), never overwritten.",
		"config set": "Replace a device's desired configuration (desired.config; null deletes it).\nWithout --if-match the current version is read first; a change made meanwhile is refused (412), never overwritten.",
	}[cmd]
	f := newCmdFlags(env, "iotpipe devices "+cmd, help)
	a.bind(f)
	switch cmd {
	case "shadow set":
		f.String(&doc, "patch", "", "the JSON merge patch of desired; - reads it from standard input")
	case "config set":
		f.String(&doc, "json", "", "the configuration, a JSON value; - reads it from standard input")
	}
	if cmd != "shadow get" {
		f.String(&ifMatch, "if-match", "", "the version the change is based on (the shadow's version); empty: the current one")
	}
	id, rest, perr := positional(args, "the device id")
	if err := parseAfterPositional(env, f, rest, perr); err != nil {
		return err
	}
	errs := []error{a.check()}
	docFlag := map[string]string{"shadow set": "patch", "config set": "json"}[cmd]
	if docFlag != "" && doc == "" {
		errs = append(errs, settingErr(docFlag, "", errors.New("missing")))
	}
	if ifMatch != "" {
		if _, err := strconv.ParseInt(ifMatch, 10, 64); err != nil {
			errs = append(errs, settingErr("if-match", ifMatch, errors.New("want a version number")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &UsageError{err}
	}
	if doc == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		doc = string(b)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	path := "/v1/devices/" + url.PathEscape(id)
	var out []byte
	var err error
	switch cmd {
	case "shadow get":
		out, _, err = a.call(ctx, "GET", path+"/shadow", "", "", nil)
	default:
		tag := ""
		if ifMatch != "" {
			tag = strconv.Quote(ifMatch)
		} else if _, tag, err = a.call(ctx, "GET", path+"/shadow", "", "", nil); err != nil {
			return err
		}
		if cmd == "shadow set" {
			out, _, err = a.call(ctx, "PATCH", path+"/shadow", "application/merge-patch+json", tag, []byte(doc))
		} else {
			out, _, err = a.call(ctx, "PUT", path+"/config", "application/json", tag, []byte(doc))
		}
	}
	if err != nil {
		return err
	}
	var pretty any
	if json.Unmarshal(out, &pretty) == nil {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(pretty)
	}
	_, err = env.Stdout.Write(out)
	return err
}
