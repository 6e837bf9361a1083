package service

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	s := New(Config{Addr: "127.0.0.1:0"}, nil)
	var kafkaDown bool
	s.AddCheck("kafka", func(context.Context) error {
		if kafkaDown {
			return errors.New("no broker answers")
		}
		return nil
	})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	base := "http://" + s.Addr()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("readyz %d %q", code, body)
	}
	kafkaDown = true
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "no broker answers") {
		t.Fatalf("readyz when down %d %q", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func TestListenNamesAddress(t *testing.T) {
	a := New(Config{Addr: "127.0.0.1:0"}, nil)
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	defer a.ln.Close()
	b := New(Config{Addr: a.Addr()}, nil)
	if err := b.Listen(); err == nil || !strings.Contains(err.Error(), a.Addr()) {
		t.Fatalf("second listen on %s: %v", a.Addr(), err)
	}
}
