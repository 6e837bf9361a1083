package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const healthcheckSummary = `Ask a running stage whether it is ready: GET the URL and exit 0 on HTTP 200,
1 otherwise, printing the answer. Meant for container healthchecks (the
iotpipe image has no curl), e.g.
  iotpipe healthcheck --url http://127.0.0.1:9101/readyz`

func runHealthcheck(ctx context.Context, env Env, args []string) error {
	var url string
	var timeout time.Duration
	f := newCmdFlags(env, "iotpipe healthcheck", healthcheckSummary)
	f.String(&url, "url", "http://127.0.0.1:9101/readyz", "readiness URL of the stage")
	f.Duration(&timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	if err := f.Parse(args, env.Stdout); err != nil {
		return usageErr(err)
	}
	if timeout <= 0 {
		return settingErr("timeout", timeout.String(), errors.New("must be positive"))
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return settingErr("url", url, fmt.Errorf("want an http:// or https:// URL"))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return settingErr("url", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintln(env.Stdout, strings.TrimSpace(string(body)))
	return nil
}
